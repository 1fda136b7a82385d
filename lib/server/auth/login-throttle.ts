/**
 * Slows password guessing: after `maxFailures` failed logins from one client address within
 * `windowMs`, further logins from it are refused (429 TOOMANYREQUESTS with Retry-After) without
 * spending a bcrypt round, until the window has passed. A successful login clears the count.
 * Per address, in memory (each replica counts its own).
 */
import { LRUCache } from 'lru-cache';

export interface LoginThrottleOptions {
  maxFailures?: number;
  windowMs?: number;
  now?: () => number;
}

interface Failures {
  count: number;
  /** When the first failure of this window happened. */
  since: number;
}

export class LoginThrottle {
  readonly maxFailures: number;
  readonly windowMs: number;
  private readonly now: () => number;
  private readonly failures = new LRUCache<string, Failures>({ max: 10_000 });

  constructor(opts: LoginThrottleOptions = {}) {
    this.maxFailures = opts.maxFailures ?? 10;
    this.windowMs = opts.windowMs ?? 60_000;
    this.now = opts.now ?? Date.now;
  }

  /** Milliseconds until `client` may try again; 0 when it may now. */
  retryAfter(client: string): number {
    const f = this.failures.get(client);
    if (!f) return 0;
    const left = f.since + this.windowMs - this.now();
    if (left <= 0) {
      this.failures.delete(client);
      return 0;
    }
    return f.count >= this.maxFailures ? left : 0;
  }

  failed(client: string): void {
    const now = this.now();
    const f = this.failures.get(client);
    if (!f || f.since + this.windowMs <= now) this.failures.set(client, { count: 1, since: now });
    else f.count++;
  }

  succeeded(client: string): void {
    this.failures.delete(client);
  }
}
