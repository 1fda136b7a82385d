/**
 * Leases: who does a piece of work (download a digest, evict, append to an upload) when several
 * processes share one store. Two implementations behind one interface:
 *   - InProcessCoordinator: a map with expiry, for a single process (and for tests of lease logic);
 *   - RedisCoordinator: `SET key token NX PX ttl`, renewed and released only by the token's holder
 *     (compare-and-set in a Lua script), so a holder that lost its lease can never extend or delete
 *     its successor's.
 * A lease is renewed in the background at a third of its TTL while held; a holder that cannot renew
 * it (taken over after a pause, or Redis gone for longer than the TTL) is told through `lost`.
 */
import { randomBytes } from 'node:crypto';
import type { RedisLink } from './redis-link.js';

export interface LeaseRecord {
  token: string;
  /** What the holder published about its work (JSON, the caller's format). */
  value: string;
}

export interface Lease {
  readonly key: string;
  readonly token: string;
  /** Aborted when the lease was taken by someone else or could not be renewed in time. */
  readonly lost: AbortSignal;
  /** Replaces what the holder publishes; false when the lease is no longer ours. */
  publish(value: string): Promise<boolean>;
  /** Gives the lease up (only if still ours). Stops renewing. */
  release(): Promise<void>;
}

export interface Coordinator {
  /** True when other processes coordinate through this (Redis): work may be done elsewhere. */
  readonly shared: boolean;
  /** Whether leases can be taken now (Redis reachable). */
  available(): boolean;
  /**
   * Takes the lease for `key` if nobody holds it. Null: someone does. Throws when the coordinator
   * cannot be reached (the caller falls back to working alone).
   */
  acquire(key: string, ttlMs: number, value?: string): Promise<Lease | null>;
  /** The current holder's record, or null when nobody holds the lease. Throws when unreachable. */
  read(key: string): Promise<LeaseRecord | null>;
  /** A short-lived note for the others (why a download failed). Throws when unreachable. */
  setNote(key: string, value: string, ttlMs: number): Promise<void>;
  getNote(key: string): Promise<string | null>;
}

const SEP = ' ';

function newToken(): string {
  return randomBytes(12).toString('hex');
}

/** Background renewal shared by both implementations. */
class HeldLease implements Lease {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private lastRenewed = Date.now();
  private released = false;

  constructor(
    readonly key: string,
    readonly token: string,
    private readonly ttlMs: number,
    private readonly ops: {
      renew(key: string, token: string, ttlMs: number): Promise<boolean>;
      publish(key: string, token: string, value: string): Promise<boolean>;
      release(key: string, token: string): Promise<void>;
    },
  ) {
    this.timer = setInterval(() => void this.renew(), Math.max(50, Math.floor(ttlMs / 3)));
    this.timer.unref();
  }

  get lost(): AbortSignal {
    return this.controller.signal;
  }

  private async renew(): Promise<void> {
    if (this.released) return;
    let ours: boolean;
    try {
      ours = await this.ops.renew(this.key, this.token, this.ttlMs);
    } catch {
      // Unreachable: the lease may still be ours. Given up only once it must have expired.
      if (Date.now() - this.lastRenewed > this.ttlMs) this.lose(new Error(`lease ${this.key} could not be renewed for ${this.ttlMs} ms`));
      return;
    }
    if (ours) this.lastRenewed = Date.now();
    else this.lose(new Error(`lease ${this.key} was taken over`));
  }

  private lose(reason: Error): void {
    clearInterval(this.timer);
    this.released = true;
    this.controller.abort(reason);
  }

  async publish(value: string): Promise<boolean> {
    if (this.released) return false;
    return this.ops.publish(this.key, this.token, value);
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    await this.ops.release(this.key, this.token).catch(() => undefined);
  }
}

export class InProcessCoordinator implements Coordinator {
  readonly shared = false;
  private readonly held = new Map<string, { token: string; value: string; until: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  available(): boolean {
    return true;
  }

  private live(key: string): { token: string; value: string; until: number } | null {
    const h = this.held.get(key);
    if (!h) return null;
    if (h.until <= this.now()) {
      this.held.delete(key);
      return null;
    }
    return h;
  }

  async acquire(key: string, ttlMs: number, value = ''): Promise<Lease | null> {
    if (this.live(key)) return null;
    const token = newToken();
    this.held.set(key, { token, value, until: this.now() + ttlMs });
    return new HeldLease(key, token, ttlMs, {
      renew: async (k, tok, ttl) => {
        const h = this.live(k);
        if (!h || h.token !== tok) return false;
        h.until = this.now() + ttl;
        return true;
      },
      publish: async (k, tok, v) => {
        const h = this.live(k);
        if (!h || h.token !== tok) return false;
        h.value = v;
        return true;
      },
      release: async (k, tok) => {
        if (this.held.get(k)?.token === tok) this.held.delete(k);
      },
    });
  }

  async read(key: string): Promise<LeaseRecord | null> {
    const h = this.live(key);
    return h ? { token: h.token, value: h.value } : null;
  }

  private readonly notes = new Map<string, { value: string; until: number }>();

  async setNote(key: string, value: string, ttlMs: number): Promise<void> {
    this.notes.set(key, { value, until: this.now() + ttlMs });
  }

  async getNote(key: string): Promise<string | null> {
    const n = this.notes.get(key);
    if (!n) return null;
    if (n.until <= this.now()) {
      this.notes.delete(key);
      return null;
    }
    return n.value;
  }
}

// Each script acts only if the key still holds our token (the value starts with "<token> ").
const RENEW = `local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;
const PUBLISH = `local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1] .. ARGV[2], 'KEEPTTL') return 1 end
return 0`;
const RELEASE = `local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

export class RedisCoordinator implements Coordinator {
  readonly shared = true;

  /** `prefix` scopes every key (one store's replicas share it, another store's do not). */
  constructor(
    private readonly link: RedisLink,
    private readonly prefix: string,
  ) {}

  available(): boolean {
    return this.link.up;
  }

  private k(key: string): string {
    return `${this.prefix}${key}`;
  }

  async acquire(key: string, ttlMs: number, value = ''): Promise<Lease | null> {
    const token = newToken();
    const ok = await this.link.client.set(this.k(key), `${token}${SEP}${value}`, { condition: 'NX', expiration: { type: 'PX', value: ttlMs } });
    if (ok !== 'OK') return null;
    const client = this.link.client;
    return new HeldLease(this.k(key), token, ttlMs, {
      renew: async (k, tok, ttl) => Number(await client.eval(RENEW, { keys: [k], arguments: [`${tok}${SEP}`, String(ttl)] })) === 1,
      publish: async (k, tok, v) => Number(await client.eval(PUBLISH, { keys: [k], arguments: [`${tok}${SEP}`, v] })) === 1,
      release: async (k, tok) => {
        await client.eval(RELEASE, { keys: [k], arguments: [`${tok}${SEP}`] });
      },
    });
  }

  async read(key: string): Promise<LeaseRecord | null> {
    const raw = await this.link.client.get(this.k(key));
    if (raw === null) return null;
    const s = String(raw);
    const i = s.indexOf(SEP);
    return i < 0 ? { token: s, value: '' } : { token: s.slice(0, i), value: s.slice(i + 1) };
  }

  async setNote(key: string, value: string, ttlMs: number): Promise<void> {
    await this.link.client.set(this.k(`note:${key}`), value, { expiration: { type: 'PX', value: ttlMs } });
  }

  async getNote(key: string): Promise<string | null> {
    const v = await this.link.client.get(this.k(`note:${key}`));
    return v === null ? null : String(v);
  }
}
