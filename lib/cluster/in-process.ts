/**
 * The coordinator of a single process (no coordinator configured), and the one unit tests use:
 * every part of lib/cluster/coordinator.ts in this process's memory. Nobody else takes part
 * (`shared` false): leases are this process's alone, the bus reaches this process's subscribers.
 */
import Keyv from 'keyv';
import { LRUCache } from 'lru-cache';
import { upTo } from '../util/lru-bound.js';
import {
  HeldLease,
  MAX_HOLDERS,
  newLeaseToken,
  type ClusterCoordinator,
  type CoordinationScope,
  type HolderDirectory,
  type IndexRecords,
  type IndexUse,
  type InvalidationBus,
  type Lease,
  type LeaseOps,
  type LeaseRecord,
  type Leases,
  type SharedValues,
  type BusMessage,
} from './coordinator.js';

/** In-process leases and notes: expired ones are swept once this many are held (see sweepIfDue). */
const SWEEP_MIN = 1024;

export class InProcessLeases implements Leases {
  readonly shared = false;
  private readonly held = new Map<string, { token: string; value: string; until: number }>();
  private readonly notes = new Map<string, { value: string; until: number }>();
  /**
   * Records expire when read, as Redis's do by themselves; one never read again would stay: past
   * this many records held, the expired ones are swept (then the bound doubles with what is live).
   */
  private sweepAt = SWEEP_MIN;

  constructor(private readonly now: () => number = Date.now) {}

  /** Leases and notes held now, expired ones not yet swept included (tests). */
  stats(): { leases: number; notes: number } {
    return { leases: this.held.size, notes: this.notes.size };
  }

  private sweepIfDue(): void {
    if (this.held.size + this.notes.size < this.sweepAt) return;
    const now = this.now();
    for (const [k, h] of this.held) if (h.until <= now) this.held.delete(k);
    for (const [k, n] of this.notes) if (n.until <= now) this.notes.delete(k);
    this.sweepAt = Math.max(SWEEP_MIN, 2 * (this.held.size + this.notes.size));
  }

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

  /** Takes `key` if nobody holds it: its token, or null (the IPC coordinator's host uses these raw operations). */
  take(key: string, ttlMs: number, value = ''): string | null {
    if (this.live(key)) return null;
    this.sweepIfDue();
    const token = newLeaseToken();
    this.held.set(key, { token, value, until: this.now() + ttlMs });
    return token;
  }

  /** What a holder does with its lease, each only while `token` holds `key`. */
  readonly ops: LeaseOps = {
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
  };

  async acquire(key: string, ttlMs: number, value = ''): Promise<Lease | null> {
    const token = this.take(key, ttlMs, value);
    return token === null ? null : new HeldLease(key, token, ttlMs, this.ops);
  }

  async read(key: string): Promise<LeaseRecord | null> {
    const h = this.live(key);
    return h ? { token: h.token, value: h.value } : null;
  }

  async setNote(key: string, value: string, ttlMs: number): Promise<void> {
    this.sweepIfDue();
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

export class InProcessIndexRecords implements IndexRecords {
  private readonly sizes = new Map<string, number>();
  private readonly usedAt = new Map<string, number>();
  private readonly evictions = new Map<string, number>();
  private sum = 0;

  private raise(digest: string, at: number): void {
    const was = this.usedAt.get(digest);
    if (was === undefined || at > was) this.usedAt.set(digest, at);
  }

  async update(batch: { added: ReadonlyMap<string, number>; forgotten: ReadonlySet<string>; used: readonly string[]; at: number }): Promise<void> {
    for (const [d, size] of batch.added) {
      if (!this.sizes.has(d)) {
        this.sizes.set(d, size);
        this.sum += size;
      }
      this.raise(d, batch.at);
    }
    for (const d of batch.forgotten) await this.forget(d);
    for (const d of batch.used) this.raise(d, batch.at);
  }

  async total(): Promise<number> {
    return this.sum;
  }

  async leastRecent(n: number): Promise<IndexUse[]> {
    return [...this.usedAt]
      .sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .slice(0, n)
      .map(([digest, usedAt]) => ({ digest, usedAt }));
  }

  async forget(digest: string): Promise<number | null> {
    const size = this.sizes.get(digest);
    this.usedAt.delete(digest);
    if (size === undefined) return null;
    this.sizes.delete(digest);
    this.sum -= size;
    return size;
  }

  async evicted(digest: string, at: number): Promise<void> {
    this.evictions.set(digest, at);
  }

  async evictedSince(since: number): Promise<string[]> {
    return [...this.evictions].filter(([, at]) => at >= since).map(([d]) => d);
  }

  async dropEvictedBefore(at: number): Promise<void> {
    for (const [d, when] of this.evictions) if (when <= at) this.evictions.delete(d);
  }

  async reconcile(listed: ReadonlyMap<string, { size: number; mtime: number }>): Promise<{ added: number; removed: number }> {
    let added = 0;
    let removed = 0;
    for (const [digest, { size, mtime }] of listed) {
      if (this.sizes.has(digest)) continue;
      this.sizes.set(digest, size);
      if (!this.usedAt.has(digest)) this.usedAt.set(digest, Math.round(mtime));
      added++;
    }
    for (const digest of [...this.sizes.keys()]) {
      if (listed.has(digest)) continue;
      this.sizes.delete(digest);
      this.usedAt.delete(digest);
      removed++;
    }
    let total = 0;
    for (const { size } of listed.values()) total += size;
    this.sum = total;
    return { added, removed };
  }
}

export class InProcessBus implements InvalidationBus {
  private readonly subscribers = new Set<(m: BusMessage) => void>();

  async publish(m: BusMessage): Promise<boolean> {
    // Delivered after the publisher's turn, as a message through a server would be.
    for (const fn of this.subscribers) queueMicrotask(() => fn({ ...m }));
    return true;
  }

  async subscribe(fn: (m: BusMessage) => void): Promise<void> {
    this.subscribers.add(fn);
  }
}

export class InProcessDirectory implements HolderDirectory {
  private readonly held = new Map<string, Map<string, number>>();

  async announce(digests: readonly string[], member: string, until: number): Promise<void> {
    for (const d of digests) {
      let m = this.held.get(d);
      if (!m) this.held.set(d, (m = new Map()));
      m.set(member, until);
    }
  }

  async withdraw(digests: readonly string[], member: string): Promise<void> {
    for (const d of digests) {
      const m = this.held.get(d);
      m?.delete(member);
      if (m?.size === 0) this.held.delete(d);
    }
  }

  async holders(digest: string, now: number): Promise<string[]> {
    return [...(this.held.get(digest) ?? [])].filter(([, until]) => until >= now).slice(0, MAX_HOLDERS).map(([member]) => member);
  }
}

/**
 * Records the in-process values keep at most. They are tag-freshness records (one per tag ever
 * pulled, kept 30 days) and upstream health and quota records; a process pulling ever-new tags (CI
 * tags by commit) would keep every one for 30 days. The least recently used goes first: a tag whose
 * record went is checked with its upstream again on its next pull. ~400 bytes each: ~8 MiB at most.
 */
export const IN_PROCESS_VALUES_MAX = 20_000;

/** Keyv in memory (its own namespace, as tag freshness and health records always had), bounded. */
export class InProcessValues implements SharedValues {
  private readonly entries: LRUCache<string, NonNullable<unknown>>;
  private readonly kv: Keyv;

  constructor(maxEntries = IN_PROCESS_VALUES_MAX) {
    const entries = new LRUCache<string, NonNullable<unknown>>(upTo(maxEntries));
    this.entries = entries;
    // Keyv keeps the expiry in the value and drops an expired one when read; the LRU bounds the
    // count. Keyv passes a TTL as set's third argument, which lru-cache would take for options:
    // the Map it is given drops it.
    const store = {
      get: (k: string) => entries.get(k),
      has: (k: string) => entries.has(k),
      set: (k: string, v: unknown) => {
        if (v === undefined || v === null) entries.delete(k);
        else entries.set(k, v);
        return true;
      },
      delete: (k: string) => entries.delete(k),
      clear: () => entries.clear(),
    };
    this.kv = new Keyv({ namespace: 'stevedore', store });
  }

  /** Records held now (expired ones not yet read included). */
  get size(): number {
    return this.entries.size;
  }

  async get<T>(key: string): Promise<T | null> {
    return (await this.kv.get<T>(key)) ?? null;
  }

  async set<T>(key: string, value: T, ttlMs: number): Promise<void> {
    await this.kv.set(key, value, ttlMs);
  }

  async delete(key: string): Promise<void> {
    await this.kv.delete(key);
  }

  async clear(): Promise<void> {
    await this.kv.clear();
  }

  async close(): Promise<void> {
    await this.kv.disconnect();
  }
}

export class InProcessCoordinator implements ClusterCoordinator {
  readonly name = 'in-process';
  readonly target = 'this process';
  readonly shared = false;
  readonly values: SharedValues = new InProcessValues();
  private readonly scopes = new Map<string, CoordinationScope>();

  constructor(private readonly now: () => number = Date.now) {}

  available(): boolean {
    return true;
  }

  onAvailability(): void {
    // always available
  }

  scope(namespace: string): CoordinationScope {
    let s = this.scopes.get(namespace);
    if (!s) {
      s = { leases: new InProcessLeases(this.now), index: new InProcessIndexRecords(), bus: new InProcessBus(), directory: new InProcessDirectory() };
      this.scopes.set(namespace, s);
    }
    return s;
  }

  async close(): Promise<void> {
    await this.values.close();
  }
}
