/**
 * Slows password guessing. Each guess is counted against its client address and against the user
 * name it tries, BEFORE its password is checked: at most `maxFailures` guesses per address and per
 * user within `windowMs` are ever checked, however many arrive at once. Past that, logins from the
 * address, or for the user, are refused (429 TOOMANYREQUESTS with Retry-After) without spending a
 * bcrypt round, until the window that began with the first counted guess has passed.
 *
 *   begin({ address, user })  over the allowance on either → null (refuse); else one attempt
 *                             reserved on both, and the Attempt that settles it:
 *   attempt.failed()          the guess was wrong: it stays counted
 *   attempt.succeeded()       the password was right: this attempt is given back (and only it:
 *                             a success resets no count, neither the address's nor anyone else's)
 *   attempt.cancelled()       the password was never checked (no worker free): given back too
 *
 * Counting per user stops guessing one account from many addresses; counting per address stops
 * one client trying many accounts. Addresses and users are kept apart, so a flood of one kind
 * never pushes the other out. In memory, per process (each replica counts its own).
 */
import { LRUCache } from 'lru-cache';

export interface LoginThrottleOptions {
  maxFailures?: number;
  windowMs?: number;
  now?: () => number;
}

/** Who a login is: the client's address and the user name it tries. */
export interface LoginKeys {
  address: string;
  user: string;
}

export interface Attempt {
  failed(): void;
  succeeded(): void;
  cancelled(): void;
}

interface Window {
  count: number;
  /** When the first counted attempt of this window happened. */
  since: number;
}

/** User names are the client's to choose: only this much of one is a key. */
const USER_KEY_MAX = 256;

export class LoginThrottle {
  readonly maxFailures: number;
  readonly windowMs: number;
  private readonly now: () => number;
  private readonly byAddress = new LRUCache<string, Window>({ max: 10_000 });
  private readonly byUser = new LRUCache<string, Window>({ max: 10_000 });

  constructor(opts: LoginThrottleOptions = {}) {
    this.maxFailures = opts.maxFailures ?? 10;
    this.windowMs = opts.windowMs ?? 60_000;
    this.now = opts.now ?? Date.now;
  }

  /** Milliseconds until a login of `who` may be checked; 0 when it may now. */
  retryAfter(who: LoginKeys): number {
    return Math.max(this.wait(this.byAddress, who.address), this.wait(this.byUser, userKey(who.user)));
  }

  /** Counts one attempt for the address and the user; null (nothing counted) when either is over its allowance. */
  begin(who: LoginKeys): Attempt | null {
    if (this.retryAfter(who) > 0) return null;
    const windows = [this.count(this.byAddress, who.address), this.count(this.byUser, userKey(who.user))];
    let settled = false;
    const giveBack = (): void => {
      if (settled) return;
      settled = true;
      // Only into the window it was counted in: one that has since been replaced keeps its count.
      for (const w of windows) if (w.count > 0) w.count--;
    };
    return {
      failed: () => {
        settled = true;
      },
      succeeded: giveBack,
      cancelled: giveBack,
    };
  }

  private wait(map: LRUCache<string, Window>, key: string): number {
    const w = map.get(key);
    if (!w) return 0;
    const left = w.since + this.windowMs - this.now();
    if (left <= 0) {
      map.delete(key);
      return 0;
    }
    return w.count >= this.maxFailures ? left : 0;
  }

  private count(map: LRUCache<string, Window>, key: string): Window {
    const now = this.now();
    let w = map.get(key);
    if (!w || w.since + this.windowMs <= now) map.set(key, (w = { count: 0, since: now }));
    w.count++;
    return w;
  }
}

function userKey(user: string): string {
  return user.slice(0, USER_KEY_MAX);
}
