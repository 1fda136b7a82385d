/**
 * What we know about each upstream's health, kept in the shared metadata so replicas agree:
 *   - cool-down after a 429: no request until Retry-After (or the configured default) has passed;
 *   - a circuit breaker: after N consecutive failures (5xx, refused, reset, timeout, DNS) no
 *     request for `openFor`; then one is let through, and its outcome closes or re-opens it;
 *   - the last `ratelimit-remaining` the upstream reported, so tag revalidation can slow down
 *     before the quota runs out.
 */
import type { Metadata } from './metadata.js';

export interface HealthPolicy {
  /** Cool-down after a 429 that carried no Retry-After. */
  retryAfterDefaultMs: number;
  /** Consecutive failures that open the circuit. */
  breakerFailures: number;
  /** How long an open circuit refuses requests. */
  breakerOpenMs: number;
  /** ratelimit-remaining at or below this counts as a low quota. */
  quotaLowWatermark: number;
}

export type Gate =
  | { open: true }
  | { open: false; kind: 'rate_limited' | 'unavailable'; retryAfterSec: number; reason: string };

export interface HealthSnapshot {
  /** A 429's cool-down in force: no request before `until` (epoch ms). */
  coolDown: { until: number; reason: string } | null;
  /** Consecutive failures counted, and until when the breaker is open (null: closed). */
  breaker: { failures: number; openUntil: number | null };
  /** The last `ratelimit-remaining` reported (Docker Hub), null when none was. */
  quota: { remaining: number; limit: number | null; low: boolean } | null;
}

interface CoolDown {
  until: number;
  reason: string;
}
interface Breaker {
  failures: number;
  openUntil: number;
  /**
   * Why the last of them failed, by class (`upstream docker.io unreachable (ECONNREFUSED)`): an
   * open circuit's answer says it, as the person needs the cause, not only the count. That answer
   * goes to every client of the upstream, so the cause names no repository or reference: those
   * were another client's request (the log has them).
   */
  last?: string;
}

/** Longest failure cause kept in a breaker record. */
const CAUSE_MAX = 200;
interface Quota {
  remaining: number;
  limit: number | null;
  at: number;
}

export class UpstreamHealth {
  constructor(
    private readonly metadata: Metadata,
    private readonly policy: HealthPolicy,
    private readonly now: () => number,
  ) {}

  /** May a request go to this upstream now? */
  async gate(upstream: string): Promise<Gate> {
    const now = this.now();
    const [cool, breaker] = await Promise.all([
      this.metadata.getRecord<CoolDown>(`cooldown:${upstream}`),
      this.metadata.getRecord<Breaker>(`breaker:${upstream}`),
    ]);
    if (cool && cool.until > now) {
      return { open: false, kind: 'rate_limited', retryAfterSec: Math.ceil((cool.until - now) / 1000), reason: cool.reason };
    }
    if (breaker && breaker.openUntil > now) {
      return {
        open: false,
        kind: 'unavailable',
        retryAfterSec: Math.ceil((breaker.openUntil - now) / 1000),
        reason: `circuit open after ${breaker.failures} consecutive failures${breaker.last ? ` (the last: ${breaker.last})` : ''}`,
      };
    }
    return { open: true };
  }

  async rateLimited(upstream: string, retryAfterSec: number | undefined): Promise<number> {
    const ms = retryAfterSec !== undefined ? retryAfterSec * 1000 : this.policy.retryAfterDefaultMs;
    const until = this.now() + ms;
    await this.metadata.setRecord<CoolDown>(`cooldown:${upstream}`, { until, reason: 'rate-limited (429)' }, ms + 60_000);
    return Math.ceil(ms / 1000);
  }

  /**
   * Counts a failure. Returns how long the breaker is now open (ms) when this failure opened it,
   * else 0. `threshold` overrides breakerFailures (a source with another behind it: 1). `cause`:
   * the failure's class (no repository, reference or upstream text: see Breaker.last), kept as
   * the breaker's last cause.
   */
  async failed(upstream: string, threshold = this.policy.breakerFailures, cause?: string): Promise<number> {
    const key = `breaker:${upstream}`;
    const now = this.now();
    const b = (await this.metadata.getRecord<Breaker>(key)) ?? { failures: 0, openUntil: 0 };
    const failures = b.failures + 1;
    const opens = failures >= threshold && b.openUntil <= now;
    const openUntil = opens ? now + this.policy.breakerOpenMs : b.openUntil;
    const last = cause !== undefined ? cause.slice(0, CAUSE_MAX) : b.last;
    await this.metadata.setRecord<Breaker>(key, { failures, openUntil, ...(last !== undefined ? { last } : {}) });
    return opens ? this.policy.breakerOpenMs : 0;
  }

  /** Closes the breaker; true when it had counted failures (the upstream answers again). */
  async succeeded(upstream: string): Promise<boolean> {
    const key = `breaker:${upstream}`;
    const b = await this.metadata.getRecord<Breaker>(key);
    if (b && b.failures > 0) {
      await this.metadata.deleteRecord(key);
      return true;
    }
    return false;
  }

  /** Records `ratelimit-remaining`; it is forgotten when its window (`w=` seconds, else 1 h) has passed. */
  async quota(upstream: string, remaining: number, limit: number | null, windowSec: number | null): Promise<void> {
    await this.metadata.setRecord<Quota>(`quota:${upstream}`, { remaining, limit, at: this.now() }, (windowSec ?? 3600) * 1000);
  }

  /** Everything recorded about one upstream (or source), for the dashboard. */
  async snapshot(upstream: string): Promise<HealthSnapshot> {
    const now = this.now();
    const [cool, breaker, quota] = await Promise.all([
      this.metadata.getRecord<CoolDown>(`cooldown:${upstream}`),
      this.metadata.getRecord<Breaker>(`breaker:${upstream}`),
      this.quotaState(upstream),
    ]);
    return {
      coolDown: cool && cool.until > now ? { until: cool.until, reason: cool.reason } : null,
      breaker: breaker ? { failures: breaker.failures, openUntil: breaker.openUntil > now ? breaker.openUntil : null } : { failures: 0, openUntil: null },
      quota,
    };
  }

  /** The last reported quota, and whether it is at or below the watermark. */
  async quotaState(upstream: string): Promise<{ remaining: number; limit: number | null; low: boolean } | null> {
    const q = await this.metadata.getRecord<Quota>(`quota:${upstream}`);
    if (!q) return null;
    return { remaining: q.remaining, limit: q.limit, low: q.remaining <= this.policy.quotaLowWatermark };
  }
}
