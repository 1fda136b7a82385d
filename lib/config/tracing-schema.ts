/**
 * `tracing:` — OpenTelemetry traces (issue 31, item 4), exported over OTLP/HTTP (JSON), off by
 * default. lib/server/otel-tracer.ts is the only module that reads it with tracing on.
 */
import { z } from 'zod';
import { httpUrl } from './auth-schema.js';
import { durationField } from './unit-fields.js';

export const TRACING_DEFAULTS = {
  enabled: false,
  endpoint: 'http://127.0.0.1:4318/v1/traces',
  serviceName: 'stevedore',
  sampleRatio: 1,
  headers: {},
  exportInterval: 5_000,
};

const duration = durationField('500ms, 5s');

export const tracingSchema = z
  .object({
    /** Traces on: a span per request and its children, exported in batches. */
    enabled: z.boolean().default(TRACING_DEFAULTS.enabled),
    /** The OTLP/HTTP traces URL (a collector's `/v1/traces`), sent JSON. */
    endpoint: z.string().transform((v, ctx) => httpUrl(v, ctx)?.href ?? z.NEVER).default(TRACING_DEFAULTS.endpoint),
    /** The resource's `service.name`. */
    serviceName: z.string().min(1).max(200).default(TRACING_DEFAULTS.serviceName),
    /** Share of new traces recorded (0 to 1); a request with a `traceparent` follows its caller's decision. */
    sampleRatio: z.number().min(0).max(1).default(TRACING_DEFAULTS.sampleRatio),
    /** Headers sent with every export (a collector's API key: `${ENV}` works); never logged. */
    headers: z.record(z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, { message: 'not an HTTP header name' }), z.string()).default(TRACING_DEFAULTS.headers),
    /** Finished spans are exported at least this often (and at shutdown). */
    exportInterval: duration.refine((ms) => ms >= 100 && ms <= 600_000, { message: 'between 100ms and 10m' }).default(TRACING_DEFAULTS.exportInterval),
  })
  .strict()
  .default(TRACING_DEFAULTS);
