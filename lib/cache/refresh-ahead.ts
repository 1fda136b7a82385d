/**
 * Refresh-ahead (stale-while-revalidate) for hot tags (config `cache.refreshAhead`): which tag
 * answers are due for a background revalidation, and how many of those run at once.
 *
 * A tag's memoized answer lives for its TTL. A tag asked for at least `minRequests` times during
 * that life is hot; once less than `before` (at most half the TTL) is left, one background
 * revalidation is started for it, at most `perUpstream` at once per upstream. Its clients keep
 * being answered from memory meanwhile; when the answer's life ends, the revalidation has already
 * refreshed the tag's record, so the next request finds it fresh without asking the upstream.
 * A tag nobody asks for is never revalidated ahead: it simply expires, as before.
 *
 * Whether the upstream may be asked at all (cool-down, breaker, low quota) is the caller's
 * business (TagResolver.refreshTag, tag-resolver.ts), as for every other revalidation.
 */
import { LRUCache } from 'lru-cache';
import { upTo } from '../util/lru-bound.js';

export interface RefreshAheadOptions {
  enabled: boolean;
  /** Revalidate once less than this is left of an answer's TTL (capped at half the TTL). */
  before: number;
  /** Requests during an answer's life that make its tag hot. */
  minRequests: number;
  /** Background revalidations running at once per upstream at most. */
  perUpstream: number;
}

/** Tags whose requests are counted (an LRU: the least recently asked are forgotten first). */
const TRACKED_TAGS = 10_000;

interface Life {
  /** When the memoized answer started (its identity: a new answer starts a new count). */
  start: number;
  requests: number;
  /** A revalidation was started for this answer. */
  started: boolean;
}

export class RefreshAhead {
  private readonly lives = new LRUCache<string, Life>(upTo(TRACKED_TAGS));
  private readonly running = new Map<string, number>();
  /** Revalidations started (metrics and tests). */
  started = 0;

  constructor(readonly options: RefreshAheadOptions) {}

  /**
   * Counts a request answered from memory for tag `key` of `upstream`, whose answer started at
   * `start`, lives `ttl` ms and has `remaining` ms left. True when a revalidation should start now
   * (then call run()).
   */
  note(key: string, start: number, ttl: number, remaining: number): boolean {
    if (!this.options.enabled || !Number.isFinite(ttl)) return false;
    let life = this.lives.get(key);
    if (!life || life.start !== start) {
      life = { start, requests: 0, started: false };
      this.lives.set(key, life);
    }
    life.requests++;
    if (life.started || life.requests < this.options.minRequests) return false;
    return remaining <= Math.min(this.options.before, ttl / 2);
  }

  /**
   * Runs `revalidate` in the background for `key` unless `upstream` already has perUpstream
   * running (then a later request may try again). Its failure is the caller's to log; it never rejects.
   */
  run(key: string, upstream: string, revalidate: () => Promise<void>): boolean {
    const n = this.running.get(upstream) ?? 0;
    if (n >= this.options.perUpstream) return false;
    const life = this.lives.get(key);
    if (life) life.started = true;
    this.running.set(upstream, n + 1);
    this.started++;
    void revalidate()
      .catch(() => undefined)
      .finally(() => {
        const left = (this.running.get(upstream) ?? 1) - 1;
        if (left > 0) this.running.set(upstream, left);
        else this.running.delete(upstream);
      });
    return true;
  }
}
