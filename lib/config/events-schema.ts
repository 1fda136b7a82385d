/**
 * `audit:` and `webhooks:` — who did what (lib/events): the audit log's sink, and the HTTP
 * endpoints that receive CloudEvents 1.0 for pushes, deletes, signature refusals and upstream facts.
 */
import { z } from 'zod';
import { httpUrl, repositoryPattern } from './auth-schema.js';
import { durationField, sizeField } from './unit-fields.js';

const EVENT_TYPE_NAMES = ['push', 'delete', 'signature.refused', 'tag.moved', 'image.gone', 'download.verification-failed'] as const;

const duration = durationField('500ms, 30s, 5m');

const size = sizeField('100MiB');

export const AUDIT_DEFAULTS = { enabled: false, file: null, maxSize: 100 * 1024 * 1024, maxFiles: 5 };

export const auditSchema = z
  .object({
    /** One JSON line per security-relevant act (lib/events/audit-log.ts). */
    enabled: z.boolean().default(AUDIT_DEFAULTS.enabled),
    /** A file of its own, rotated by size; null: stdout, beside the access log, with `"log":"audit"`. */
    file: z.string().min(1).nullable().default(AUDIT_DEFAULTS.file),
    /** The file is rotated (file → file.1 → file.2 …) before a line would take it past this. */
    maxSize: size.refine((n) => n >= 4096, { message: 'at least 4KiB' }).default(AUDIT_DEFAULTS.maxSize),
    /** Rotated files kept (file.1 … file.N); older ones are deleted. */
    maxFiles: z.number().int().min(1).max(1000).default(AUDIT_DEFAULTS.maxFiles),
  })
  .strict()
  .default(AUDIT_DEFAULTS);

const endpointSchema = z
  .object({
    url: z.string().transform((v, ctx) => httpUrl(v, ctx)?.href ?? z.NEVER),
    /** The HMAC-SHA256 key of the `X-Stevedore-Signature` header (at least 16 characters; `${ENV}` works). */
    secret: z.string().min(16, { message: 'at least 16 characters (a random secret shared with the receiver)' }),
    /** CloudEvents HTTP binding: `structured` (the whole event as JSON) or `binary` (ce-* headers, data as the body). */
    mode: z.enum(['structured', 'binary']).default('structured'),
    /** Event types sent to it; empty: all. */
    types: z.array(z.enum(EVENT_TYPE_NAMES)).default([]),
    /** Repository patterns (as access rules write them); an event for another repository is not sent. */
    repositories: z.array(repositoryPattern).min(1).default(['**']),
  })
  .strict();

export const WEBHOOK_DEFAULTS = { endpoints: [], queueSize: 1000, retries: 5, retryDelay: 1000, maxRetryDelay: 60_000, timeout: 10_000, concurrency: 4 };

export const webhooksSchema = z
  .object({
    endpoints: z.array(endpointSchema).default([]),
    /** Deliveries waiting (or between retries) at most; past it a new one is dropped and counted. */
    queueSize: z.number().int().min(1).max(1_000_000).default(WEBHOOK_DEFAULTS.queueSize),
    /** Attempts after the first one failed (a refused connection, a timeout, a status other than 2xx). */
    retries: z.number().int().min(0).max(100).default(WEBHOOK_DEFAULTS.retries),
    /** Wait before the first retry; doubled for each next one (with jitter), up to maxRetryDelay. */
    retryDelay: duration.refine((ms) => ms >= 10, { message: 'at least 10ms' }).default(WEBHOOK_DEFAULTS.retryDelay),
    maxRetryDelay: duration.default(WEBHOOK_DEFAULTS.maxRetryDelay),
    /** One attempt's limit (connect, answer and body). */
    timeout: duration.refine((ms) => ms >= 100, { message: 'at least 100ms' }).default(WEBHOOK_DEFAULTS.timeout),
    /** Deliveries in flight at once (all endpoints). */
    concurrency: z.number().int().min(1).max(256).default(WEBHOOK_DEFAULTS.concurrency),
  })
  .strict()
  .default(WEBHOOK_DEFAULTS);

export type AuditConfig = z.output<typeof auditSchema>;
export type WebhooksConfig = z.output<typeof webhooksSchema>;
export type WebhookEndpointConfig = WebhooksConfig['endpoints'][number];
