/**
 * Webhooks (config `webhooks`): each act of EVENT_TYPES (acts.ts) becomes a CloudEvents 1.0 event,
 * POSTed to every endpoint whose `types` and `repositories` it matches.
 *
 *   structured mode  Content-Type: application/cloudevents+json; the body is the whole event
 *                    {specversion, id, source, type, time, subject, datacontenttype, data}
 *   binary mode      ce-specversion, ce-id, ce-source, ce-type, ce-time, ce-subject headers;
 *                    Content-Type: application/json; the body is `data`
 *   both             X-Stevedore-Signature: sha256=<hex HMAC-SHA256 of the body bytes, keyed
 *                    with the endpoint's secret>. `data` repeats the event's id and type, so the
 *                    signed bytes name them in binary mode too.
 *
 * Delivery never blocks a request: `consume` only enqueues. The queue holds at most
 * `webhooks.queueSize` deliveries (waiting, in flight or between retries); past it a new delivery
 * is dropped and counted (stevedore_webhook_deliveries_total{outcome="dropped"}). An attempt that
 * fails (refused, timed out, a status other than 2xx) is retried `retries` times, after
 * retryDelay, doubled each time (with jitter) up to maxRetryDelay; then given up (`failed`).
 * The queue lives in memory: a restart loses what is in it (README says so).
 *
 * Cluster mode (a shared coordinator): a delivery is claimed with a lease per (endpoint, event
 * id) before its first attempt and held through its retries; once delivered a note marks it done.
 * A replica that finds the note, or the lease held, does not send it. Acts several replicas see
 * alike carry the same id (acts.ts, stableActId), so the cluster sends such an event once. What the
 * coordinator answers is believed only as far as its shape: a note is "done" only if it is exactly
 * DONE. With the coordinator unreachable, the event is sent (at least once rather than never).
 */
import { createHmac } from 'node:crypto';
import { LazyAgent, request } from '../util/lazy-undici.js';
import type { Logger } from 'pino';
import type { WebhookEndpointConfig, WebhooksConfig } from '../config/events-schema.js';
import type { Lease, Leases } from '../cluster/coordinator.js';
import { compilePattern } from '../oci/repository-pattern.js';
import { EVENT_TYPES, type Act, type EventType } from './acts.js';

export const SIGNATURE_HEADER = 'X-Stevedore-Signature';
export const CLOUDEVENT_TYPE_PREFIX = 'dev.stevedore.';
const SOURCE = '/stevedore';
const DONE = 'delivered';
const DONE_TTL_MS = 3_600_000;

export type DeliveryOutcome = 'delivered' | 'retried' | 'failed' | 'dropped' | 'skipped';

interface Endpoint {
  index: number;
  config: WebhookEndpointConfig;
  types: ReadonlySet<string> | null;
  repositories: RegExp[];
}

interface Delivery {
  endpoint: Endpoint;
  key: string;
  body: Buffer;
  headers: Record<string, string>;
  attempt: number;
  lease: Lease | null;
}

/** The HMAC-SHA256 signature header's value for a body. */
export function signBody(secret: string, body: Buffer | string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** The CloudEvent of an act: its attributes and its data. */
export function cloudEvent(act: Readonly<Act>): { attributes: Record<string, string>; data: Record<string, unknown> } {
  const { id, time, type, ...rest } = act;
  const subject = act.repository === undefined ? undefined : act.tag !== undefined ? `${act.repository}:${act.tag}` : act.digest !== undefined ? `${act.repository}@${act.digest}` : act.repository;
  const attributes: Record<string, string> = { specversion: '1.0', id, source: SOURCE, type: `${CLOUDEVENT_TYPE_PREFIX}${type}`, time };
  if (subject !== undefined) attributes.subject = subject;
  return { attributes, data: { id, type, ...rest } };
}

export interface WebhookOptions {
  config: WebhooksConfig;
  log: Logger;
  /** Cluster mode: the shared leases; null: this process alone. */
  leases: Leases | null;
  onDelivery?: (outcome: DeliveryOutcome) => void;
}

export class WebhookDispatcher {
  private readonly endpoints: Endpoint[];
  private readonly ready: Delivery[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Deliveries held: waiting, in flight or between retries. */
  private held = 0;
  private inFlight = 0;
  private closed = false;
  private readonly agent: LazyAgent;
  private readonly log: Logger;

  constructor(private readonly opts: WebhookOptions) {
    this.log = opts.log.child({ component: 'webhooks' });
    this.endpoints = opts.config.endpoints.map((config, index) => ({
      index,
      config,
      types: config.types.length ? new Set(config.types) : null,
      repositories: config.repositories.map(compilePattern),
    }));
    const t = opts.config.timeout;
    this.agent = new LazyAgent({ connect: { timeout: t }, headersTimeout: t, bodyTimeout: t, keepAliveTimeout: 4_000 });
  }

  get active(): boolean {
    return this.endpoints.length > 0;
  }

  /** The consumer of Acts: enqueues, never waits. */
  readonly consume = (act: Readonly<Act>): void => {
    if (this.closed || !(EVENT_TYPES as readonly string[]).includes(act.type)) return;
    const type = act.type as EventType;
    let event: ReturnType<typeof cloudEvent> | null = null;
    for (const endpoint of this.endpoints) {
      if (endpoint.types && !endpoint.types.has(type)) continue;
      if (act.repository === undefined ? !endpoint.config.repositories.includes('**') : !endpoint.repositories.some((re) => re.test(act.repository!))) continue;
      if (this.held >= this.opts.config.queueSize) {
        this.opts.onDelivery?.('dropped');
        this.log.warn({ event: act.id, type, url: endpoint.config.url, queueSize: this.opts.config.queueSize }, 'webhook queue full: event dropped');
        continue;
      }
      event ??= cloudEvent(act);
      this.held++;
      this.ready.push({ endpoint, key: `webhook:${endpoint.index}:${act.id}`, ...encode(event, endpoint.config), attempt: 0, lease: null });
    }
    this.pump();
  };

  private pump(): void {
    while (!this.closed && this.inFlight < this.opts.config.concurrency && this.ready.length) {
      const d = this.ready.shift()!;
      this.inFlight++;
      void this.attempt(d)
        .catch((err: unknown) => {
          this.log.error({ err }, 'a webhook delivery failed unexpectedly');
          this.finish(d, 'failed');
        })
        .finally(() => {
          this.inFlight--;
          this.pump();
        });
    }
  }

  private async attempt(d: Delivery): Promise<void> {
    if (d.attempt === 0 && !(await this.claim(d))) return this.finish(d, 'skipped');
    if (this.closed) return this.finish(d, 'failed');
    const url = d.endpoint.config.url;
    let problem: string;
    try {
      const res = await request(url, {
        method: 'POST',
        headers: d.headers,
        body: d.body,
        dispatcher: await this.agent.get(),
        signal: AbortSignal.timeout(this.opts.config.timeout),
      });
      await res.body.dump().catch(() => undefined);
      if (res.statusCode >= 200 && res.statusCode < 300) {
        await d.lease?.publish(DONE).catch(() => undefined);
        if (d.lease) await this.markDone(d.key);
        return this.finish(d, 'delivered');
      }
      problem = `status ${res.statusCode}`;
    } catch (err) {
      problem = (err as { code?: string }).code ?? (err as Error).name ?? 'error';
    }
    if (d.attempt >= this.opts.config.retries || this.closed) {
      this.log.warn({ url, key: d.key, attempts: d.attempt + 1, problem }, 'webhook not delivered: retries exhausted');
      return this.finish(d, 'failed');
    }
    const base = Math.min(this.opts.config.maxRetryDelay, this.opts.config.retryDelay * 2 ** d.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    d.attempt++;
    this.opts.onDelivery?.('retried');
    this.log.debug({ url, key: d.key, attempt: d.attempt, problem, delay }, 'webhook attempt failed; retrying');
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.ready.push(d);
      this.pump();
    }, delay);
    timer.unref();
    this.timers.add(timer);
  }

  /** Cluster mode: whether this replica sends the delivery (module comment). */
  private async claim(d: Delivery): Promise<boolean> {
    const leases = this.opts.leases;
    if (!leases?.shared) return true;
    try {
      if ((await leases.getNote(`${d.key}:done`)) === DONE) return false;
      const ttl = Math.max(30_000, this.opts.config.timeout * 3);
      d.lease = await leases.acquire(d.key, ttl);
      return d.lease !== null;
    } catch (err) {
      this.log.debug({ err, key: d.key }, 'the coordinator is unreachable: the webhook is sent without a cluster claim');
      return true;
    }
  }

  private async markDone(key: string): Promise<void> {
    try {
      await this.opts.leases?.setNote(`${key}:done`, DONE, DONE_TTL_MS);
    } catch {
      // Unreachable: the lease's expiry is then the only guard.
    }
  }

  private finish(d: Delivery, outcome: DeliveryOutcome): void {
    this.held--;
    this.opts.onDelivery?.(outcome);
    const lease = d.lease;
    d.lease = null;
    // Kept past a delivery (the done note says it all) only as long as the release takes.
    if (lease) void lease.release().catch(() => undefined);
  }

  /** Stops: pending retries and queued deliveries are given up (logged with their count). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    const lost = this.held - this.inFlight;
    if (lost > 0) this.log.warn({ lost }, 'webhooks not delivered at shutdown (the queue is in memory)');
    // In-flight attempts are cut (a stalled receiver must not hold the shutdown up).
    await this.agent.destroy();
  }
}

function encode(event: ReturnType<typeof cloudEvent>, endpoint: WebhookEndpointConfig): { body: Buffer; headers: Record<string, string> } {
  if (endpoint.mode === 'binary') {
    const body = Buffer.from(JSON.stringify(event.data));
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    for (const [k, v] of Object.entries(event.attributes)) headers[`ce-${k}`] = v;
    headers[SIGNATURE_HEADER] = signBody(endpoint.secret, body);
    return { body, headers };
  }
  const body = Buffer.from(JSON.stringify({ ...event.attributes, datacontenttype: 'application/json', data: event.data }));
  return { body, headers: { 'content-type': 'application/cloudevents+json; charset=utf-8', [SIGNATURE_HEADER]: signBody(endpoint.secret, body) } };
}
