/**
 * Eviction for replicas sharing one store (cluster mode). Each replica's in-memory index only knows
 * what it served; the store's size and recency are kept in Redis instead:
 *   <prefix>idx:size     hash   digest → bytes, for every cached (unpinned) stored file
 *   <prefix>idx:total    string the sum of idx:size
 *   <prefix>idx:used     zset   digest → when any replica last served it (ms)
 *   <prefix>idx:evicted  zset   digest → when it was evicted (replicas drop it from their index)
 * Replicas record what they serve in memory and send it in one batch every `recencyFlush` (never a
 * Redis write per request); content being sent at that moment counts as used then, so a transfer in
 * progress on any replica stays recent. One replica at a time (the `evict` lease) deletes the least
 * recently used files while the total is above storage.maxSize, skipping anything used within two
 * flushes, and reconciles the records with the directory listing when it becomes the evictor and
 * every 10 minutes (files imported by CLI commands, deleted by hand, left from before cluster mode).
 * While Redis is unreachable nothing is evicted (logged by the link); the store may grow past its
 * bound until Redis returns.
 */
import type { Logger } from 'pino';
import { tryParseDigest } from '../oci/digest.js';
import type { BlobStore, StoreObserver } from '../storage/blob-store.js';
import type { Coordinator, Lease } from './coordinator.js';
import type { RedisLink } from './redis-link.js';

const RECONCILE_EVERY_MS = 10 * 60_000;
/** Evicted digests are announced this long (a replica that was away longer rebuilds nothing: it re-stats on a miss). */
const EVICTED_KEEP_MS = 3_600_000;
const EVICT_BATCH = 64;

// Counts a digest's size once, however many replicas report it.
const ADD = `if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then redis.call('INCRBY', KEYS[2], ARGV[2]) end
redis.call('ZADD', KEYS[3], 'GT', ARGV[3], ARGV[1])
return 1`;
const FORGET = `local s = redis.call('HGET', KEYS[1], ARGV[1])
if s then redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('DECRBY', KEYS[2], s) end
redis.call('ZREM', KEYS[3], ARGV[1])
return s`;

export interface SharedIndexOptions {
  maxSize: number | null;
  recencyFlushMs: number;
  evictionIntervalMs: number;
  leaseTtlMs: number;
  now?: () => number;
}

export class SharedIndex implements StoreObserver {
  private recent = new Set<string>();
  private added = new Map<string, number>();
  private forgotten = new Set<string>();
  private lastEvictedSeen: number;
  private flushTimer: NodeJS.Timeout | null = null;
  private evictTimer: NodeJS.Timeout | null = null;
  private lease: Lease | null = null;
  private lastReconcile = 0;
  private busy = false;
  private readonly now: () => number;
  /** Warned that the store stays above its bound (once until it is not). */
  private overWarned = false;
  /** Files this replica evicted (metrics). */
  evictions = 0;

  constructor(
    private readonly link: RedisLink,
    private readonly coordinator: Coordinator,
    private readonly prefix: string,
    private readonly store: BlobStore,
    private readonly log: Logger,
    private readonly opts: SharedIndexOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.lastEvictedSeen = this.now();
  }

  private key(k: string): string {
    return `${this.prefix}idx:${k}`;
  }

  start(): void {
    this.flushTimer = setInterval(() => void this.flush().catch(() => undefined), this.opts.recencyFlushMs);
    this.flushTimer.unref();
    if (this.opts.maxSize !== null) {
      this.evictTimer = setInterval(() => void this.evictTick().catch((err: unknown) => this.log.warn({ err }, 'cluster eviction failed')), this.opts.evictionIntervalMs);
      this.evictTimer.unref();
    }
  }

  async stop(): Promise<void> {
    if (this.flushTimer) clearInterval(this.flushTimer);
    if (this.evictTimer) clearInterval(this.evictTimer);
    await this.flush().catch(() => undefined);
    await this.lease?.release();
    this.lease = null;
  }

  // ---- StoreObserver: only records, in memory -------------------------------------------

  used(digest: string): void {
    this.recent.add(digest);
  }

  committed(digest: string, size: number, pinned: boolean): void {
    if (pinned) return;
    this.added.set(digest, size);
    this.forgotten.delete(digest);
  }

  pinChanged(digest: string, pinned: boolean, size: number | null): void {
    if (pinned) {
      this.added.delete(digest);
      this.forgotten.add(digest);
    } else if (size !== null) {
      this.forgotten.delete(digest);
      this.added.set(digest, size);
    }
  }

  removed(digest: string): void {
    this.added.delete(digest);
    this.forgotten.add(digest);
  }

  // ---- batches ---------------------------------------------------------------------------

  /** Sends what this replica served and stored since the last flush; drops what others evicted. */
  async flush(): Promise<void> {
    if (!this.link.up) return;
    const now = this.now();
    const used = this.recent;
    const added = this.added;
    const forgotten = this.forgotten;
    this.recent = new Set();
    this.added = new Map();
    this.forgotten = new Set();
    // Being sent right now counts as used now: a long transfer stays recent on every flush.
    for (const d of this.store.readingNow()) used.add(d);
    const c = this.link.client;
    try {
      const ops: Array<Promise<unknown>> = [];
      for (const [d, size] of added) ops.push(c.eval(ADD, { keys: [this.key('size'), this.key('total'), this.key('used')], arguments: [d, String(size), String(now)] }));
      for (const d of forgotten) ops.push(c.eval(FORGET, { keys: [this.key('size'), this.key('total'), this.key('used')], arguments: [d] }));
      const served = [...used].filter((d) => !forgotten.has(d));
      // Only digests counted in idx:size (cached) matter; a stray one is dropped by the evictor.
      if (served.length) ops.push(c.zAdd(this.key('used'), served.map((d) => ({ score: now, value: d })), { GT: true }));
      await Promise.all(ops);
      const evicted = await c.zRangeByScore(this.key('evicted'), this.lastEvictedSeen, '+inf');
      this.lastEvictedSeen = now - this.opts.recencyFlushMs;
      for (const d of evicted) this.store.index.remove(String(d));
    } catch (err) {
      // Lost with Redis: sent again next time (recency is a hint; sizes are reconciled from disk).
      for (const d of used) this.recent.add(d);
      for (const [d, s] of added) if (!this.added.has(d)) this.added.set(d, s);
      for (const d of forgotten) this.forgotten.add(d);
      throw err;
    }
  }

  /** Bytes of cached content the cluster's records hold. */
  async total(): Promise<number> {
    return Number((await this.link.client.get(this.key('total'))) ?? 0);
  }

  // ---- the evictor -----------------------------------------------------------------------

  private async evictTick(): Promise<void> {
    if (this.busy || !this.link.up || this.opts.maxSize === null) return;
    this.busy = true;
    try {
      if (this.lease?.lost.aborted) this.lease = null;
      if (!this.lease) {
        this.lease = await this.coordinator.acquire('evict', Math.max(this.opts.leaseTtlMs, 2 * this.opts.evictionIntervalMs));
        if (!this.lease) return;
        this.log.info('this replica now evicts for the cluster');
        this.lastReconcile = 0;
      }
      if (this.now() - this.lastReconcile >= RECONCILE_EVERY_MS) {
        await this.reconcile();
        this.lastReconcile = this.now();
      }
      await this.evictOver(this.opts.maxSize);
    } finally {
      this.busy = false;
    }
  }

  /** Deletes least recently used cached files until the total is within `maxSize`. Returns how many. */
  async evictOver(maxSize: number): Promise<number> {
    const c = this.link.client;
    // Used within two flushes: possibly being served on a replica that has not reported it yet.
    const protectAfter = this.now() - 2 * this.opts.recencyFlushMs - 1_000;
    let total = await this.total();
    let evicted = 0;
    let skippedRecent = false;
    while (total > maxSize && !this.lease?.lost.aborted) {
      const batch = await c.zRangeWithScores(this.key('used'), 0, EVICT_BATCH - 1);
      if (batch.length === 0) break;
      for (const { value, score } of batch) {
        if (total <= maxSize) break;
        const digest = String(value);
        if (score > protectAfter) {
          skippedRecent = true;
          break;
        }
        const d = tryParseDigest(digest);
        const forgotSize = await c.eval(FORGET, { keys: [this.key('size'), this.key('total'), this.key('used')], arguments: [digest] });
        if (!d || forgotSize === null) continue; // not counted (pinned, or a stray recency entry)
        const size = Number(forgotSize);
        if (await this.store.evictChosen(d, size)) {
          total -= size;
          evicted++;
          this.evictions++;
          await c.zAdd(this.key('evicted'), { score: this.now(), value: digest });
        } else {
          total = await this.total(); // pinned on disk: it was never ours to count
        }
      }
      if (skippedRecent) break;
    }
    const stuck = skippedRecent && total > maxSize;
    if (stuck && !this.overWarned) {
      this.log.warn({ total, maxSize }, 'the store is above storage.maxSize, but everything left was served in the last seconds: evicting again later');
    }
    this.overWarned = stuck;
    await c.zRemRangeByScore(this.key('evicted'), '-inf', this.now() - EVICTED_KEEP_MS);
    return evicted;
  }

  /** Makes the records match the directory listing (slow: every file is stat-ed). */
  async reconcile(): Promise<void> {
    const c = this.link.client;
    const started = this.now();
    const onDisk = new Map<string, { size: number; mtime: number }>();
    for await (const f of this.store.listStored()) if (!f.pinned) onDisk.set(f.digest, { size: f.size, mtime: f.mtime });
    const recorded = await c.hGetAll(this.key('size'));
    let added = 0;
    let removed = 0;
    for (const [digest, { size, mtime }] of onDisk) {
      if (recorded[digest] !== undefined) continue;
      await c.hSet(this.key('size'), digest, String(size));
      await c.zAdd(this.key('used'), { score: Math.round(mtime), value: digest }, { NX: true });
      added++;
    }
    for (const digest of Object.keys(recorded)) {
      if (onDisk.has(digest)) continue;
      await c.hDel(this.key('size'), digest);
      await c.zRem(this.key('used'), digest);
      removed++;
    }
    let total = 0;
    for (const { size } of onDisk.values()) total += size;
    // Commits reported while we listed are counted again by the next reconciliation at worst.
    await c.set(this.key('total'), String(total));
    this.log.info({ files: onDisk.size, bytes: total, added, removed, ms: this.now() - started }, 'cluster store index reconciled with the disk');
  }
}
