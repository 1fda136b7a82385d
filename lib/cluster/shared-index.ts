/**
 * Eviction for replicas sharing one store (cluster mode). Each replica's in-memory index only knows
 * what it served; the store's size and recency are kept by the coordinator instead (`IndexRecords`,
 * lib/cluster/coordinator.ts; on Redis the idx:* keys of lib/cluster/redis/shared-index.ts).
 * Replicas record what they serve in memory and send it in one batch every `recencyFlush` (never a
 * coordinator write per request); content being sent at that moment counts as used then, so a
 * transfer in progress on any replica stays recent. One replica at a time (the `evict` lease)
 * deletes the least recently used files while the total is above storage.maxSize, skipping
 * anything used within two flushes, and reconciles the records with the directory listing when it
 * becomes the evictor and every 10 minutes (files imported by CLI commands, deleted by hand, left
 * from before cluster mode). While the coordinator is unreachable nothing is evicted (logged by it);
 * the store may grow past its bound until it returns.
 *
 * The records are not trusted beyond what they say (rule 10): a digest is parsed before anything is
 * done with it, and a pinned file is never deleted whatever they say (`evictChosen` checks the pin).
 */
import type { Logger } from 'pino';
import { tryParseDigest, type Digest } from '../oci/digest.js';
import type { StoreObserver } from '../storage/blob-store.js';
import type { IndexRecords, Lease, Leases } from './coordinator.js';

const RECONCILE_EVERY_MS = 10 * 60_000;
/** Evicted digests are announced this long (a replica that was away longer rebuilds nothing: it re-stats on a miss). */
const EVICTED_KEEP_MS = 3_600_000;
const EVICT_BATCH = 64;

/** What the shared index needs of the store (lib/storage/blob-store.ts). */
export interface EvictableStore {
  /** Digests being sent right now. */
  readingNow(): Iterable<string>;
  /** Forgets a digest another replica evicted. */
  forget(digest: string): void;
  /** Deletes a cached file the evictor chose (`size`: what the records counted), unless it is pinned. */
  evictChosen(d: Digest, size: number): Promise<boolean>;
  listStored(): AsyncIterable<{ digest: string; size: number; mtime: number; pinned: boolean }>;
}

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
    private readonly records: IndexRecords,
    private readonly leases: Leases,
    private readonly store: EvictableStore,
    private readonly log: Logger,
    private readonly opts: SharedIndexOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.lastEvictedSeen = this.now();
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
    if (!this.leases.available()) return;
    const now = this.now();
    const used = this.recent;
    const added = this.added;
    const forgotten = this.forgotten;
    this.recent = new Set();
    this.added = new Map();
    this.forgotten = new Set();
    // Being sent right now counts as used now: a long transfer stays recent on every flush.
    for (const d of this.store.readingNow()) used.add(d);
    try {
      // Only digests counted (cached) matter; a stray one is dropped by the evictor.
      await this.records.update({ added, forgotten, used: [...used].filter((d) => !forgotten.has(d)), at: now });
      const evicted = await this.records.evictedSince(this.lastEvictedSeen);
      this.lastEvictedSeen = now - this.opts.recencyFlushMs;
      for (const d of evicted) this.store.forget(d);
    } catch (err) {
      // Lost with the coordinator: sent again next time (recency is a hint; sizes are reconciled from disk).
      for (const d of used) this.recent.add(d);
      for (const [d, s] of added) if (!this.added.has(d)) this.added.set(d, s);
      for (const d of forgotten) this.forgotten.add(d);
      throw err;
    }
  }

  /** Bytes of cached content the cluster's records hold. */
  async total(): Promise<number> {
    return this.records.total();
  }

  // ---- the evictor -----------------------------------------------------------------------

  private async evictTick(): Promise<void> {
    if (this.busy || !this.leases.available() || this.opts.maxSize === null) return;
    this.busy = true;
    try {
      if (this.lease?.lost.aborted) this.lease = null;
      if (!this.lease) {
        this.lease = await this.leases.acquire('evict', Math.max(this.opts.leaseTtlMs, 2 * this.opts.evictionIntervalMs));
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
    // Used within two flushes: possibly being served on a replica that has not reported it yet.
    const protectAfter = this.now() - 2 * this.opts.recencyFlushMs - 1_000;
    let total = await this.total();
    let evicted = 0;
    let skippedRecent = false;
    while (total > maxSize && !this.lease?.lost.aborted) {
      const batch = await this.records.leastRecent(EVICT_BATCH);
      if (batch.length === 0) break;
      for (const { digest, usedAt } of batch) {
        if (total <= maxSize) break;
        if (usedAt > protectAfter) {
          skippedRecent = true;
          break;
        }
        const d = tryParseDigest(digest);
        const size = await this.records.forget(digest);
        if (!d || size === null) continue; // not counted (pinned, or a stray recency entry)
        if (await this.store.evictChosen(d, size)) {
          total -= size;
          evicted++;
          this.evictions++;
          await this.records.evicted(digest, this.now());
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
    await this.records.dropEvictedBefore(this.now() - EVICTED_KEEP_MS);
    return evicted;
  }

  /** Makes the records match the directory listing (slow: every file is stat-ed). */
  async reconcile(): Promise<void> {
    const started = this.now();
    const onDisk = new Map<string, { size: number; mtime: number }>();
    for await (const f of this.store.listStored()) if (!f.pinned) onDisk.set(f.digest, { size: f.size, mtime: f.mtime });
    const { added, removed } = await this.records.reconcile(onDisk);
    let total = 0;
    for (const { size } of onDisk.values()) total += size;
    this.log.info({ files: onDisk.size, bytes: total, added, removed, ms: this.now() - started }, 'cluster store index reconciled with the disk');
  }
}
