/**
 * Slows password guessing without letting anyone lock an account out. Each guess is counted BEFORE
 * its password is checked, in three windows of `windowMs` that begin with their first counted guess:
 *
 *   (user, address)  `maxFailures` (10): past it, that address's logins for that user are refused
 *                    (429 TOOMANYREQUESTS with Retry-After) without spending a bcrypt round
 *   address          `maxFailuresPerAddress` (30), whatever users it tries: past it, every login
 *                    from the address is refused (one client trying many accounts)
 *   user             `userCeiling` (10), from all addresses together: from it on, the user's
 *                    logins are slowed, never refused: each waits `delayStepMs` per failure from
 *                    the ceiling on, at most `maxDelayMs`, before its password is checked (`delay`)
 *
 * So eleven wrong passwords for alice from one address refuse alice at that address only; from
 * another address she logs in, a little slower (a per-user block would let anyone lock out anyone).
 * An address is an IPv4 address, or an IPv6 address's /64 (one subscriber's prefix: rotating
 * addresses within it is one client; `addressKey`).
 *
 *   begin({ address, user })  refused on (user, address) or address → null; else one attempt
 *                             reserved in all three windows, and the Attempt that settles it:
 *   attempt.failed()          the guess was wrong: it stays counted
 *   attempt.succeeded()       the password was right: this attempt is given back (and only it:
 *                             a success resets no count, neither its own windows' nor anyone else's)
 *   attempt.cancelled()       the password was never checked (no worker free): given back too
 *
 * Each kind of window has its own table, so a flood of one kind never pushes the others out. In
 * memory, per process (each replica counts its own).
 */
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import { upTo } from '../../util/lru-bound.js';

export interface LoginThrottleOptions {
  /** Failed logins per (user, address) per window before that pair is refused. */
  maxFailures?: number;
  /** Failed logins per address, whatever the user, per window before the address is refused. */
  maxFailuresPerAddress?: number;
  /** Failed logins per user, from all addresses, per window past which the user's logins are slowed. */
  userCeiling?: number;
  /** The delay per failure past the ceiling, and its bound. */
  delayStepMs?: number;
  maxDelayMs?: number;
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
  readonly maxFailuresPerAddress: number;
  readonly userCeiling: number;
  readonly delayStepMs: number;
  readonly maxDelayMs: number;
  readonly windowMs: number;
  private readonly now: () => number;
  private readonly byPair = new LRUCache<string, Window>(upTo(10_000));
  private readonly byAddress = new LRUCache<string, Window>(upTo(10_000));
  private readonly byUser = new LRUCache<string, Window>(upTo(10_000));

  constructor(opts: LoginThrottleOptions = {}) {
    this.maxFailures = opts.maxFailures ?? 10;
    this.maxFailuresPerAddress = opts.maxFailuresPerAddress ?? 30;
    this.userCeiling = opts.userCeiling ?? 10;
    this.delayStepMs = opts.delayStepMs ?? 1000;
    this.maxDelayMs = opts.maxDelayMs ?? 5000;
    this.windowMs = opts.windowMs ?? 60_000;
    this.now = opts.now ?? Date.now;
  }

  /** Milliseconds until a login of `who` may be checked; 0 when it may now. */
  retryAfter(who: LoginKeys): number {
    const keys = this.keys(who);
    return Math.max(this.wait(this.byPair, keys.pair, this.maxFailures), this.wait(this.byAddress, keys.address, this.maxFailuresPerAddress));
  }

  /** Milliseconds a login for `who.user` waits before its password is checked (the per-user ceiling); 0: none. */
  delay(who: LoginKeys): number {
    const w = this.current(this.byUser, this.keys(who).user);
    if (!w || w.count < this.userCeiling) return 0;
    return Math.min(this.maxDelayMs, (w.count - this.userCeiling + 1) * this.delayStepMs);
  }

  /** Counts one attempt in each window; null (nothing counted) when the pair or the address is over its allowance. */
  begin(who: LoginKeys): Attempt | null {
    if (this.retryAfter(who) > 0) return null;
    const keys = this.keys(who);
    const windows = [this.count(this.byPair, keys.pair), this.count(this.byAddress, keys.address), this.count(this.byUser, keys.user)];
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

  private keys(who: LoginKeys): { pair: string; address: string; user: string } {
    const address = addressKey(who.address);
    const user = who.user.slice(0, USER_KEY_MAX);
    // A newline is in no address key; the user name comes last, so no two pairs share a key.
    return { pair: `${address}\n${user}`, address, user };
  }

  /** The window of `key` if it is still open. */
  private current(map: LRUCache<string, Window>, key: string): Window | undefined {
    const w = map.get(key);
    if (w && w.since + this.windowMs <= this.now()) {
      map.delete(key);
      return undefined;
    }
    return w;
  }

  private wait(map: LRUCache<string, Window>, key: string, max: number): number {
    const w = this.current(map, key);
    return w && w.count >= max ? w.since + this.windowMs - this.now() : 0;
  }

  private count(map: LRUCache<string, Window>, key: string): Window {
    let w = this.current(map, key);
    if (!w) map.set(key, (w = { count: 0, since: this.now() }));
    w.count++;
    return w;
  }
}

/**
 * What an address counts as: an IPv4 address as it is; an IPv6 address as its /64 prefix
 * (`2001:db8:1:2::/64`), the block one subscriber or host is usually given, so that rotating
 * through it gains nothing. A zone (`%eth0`) is dropped; an embedded IPv4 tail is read as hex.
 */
export function addressKey(address: string): string {
  if (isIP(address) !== 6) return address;
  let text = address.toLowerCase().replace(/%.*$/, '');
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const rest = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = [...h, ...Array<string>(tail === undefined ? 0 : 8 - h.length - rest.length).fill('0'), ...rest];
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}
