/**
 * Content-addressed blobs above a storage backend (backend.ts): the size-bounded LRU index over
 * them and its snapshot, pins, start-up recovery, eviction, and the API the rest of `lib/` uses.
 * Backend-neutral: the bytes are the backend's (a directory, a bucket, memory), the index and its
 * policies are here, and only the BlobBackend interface is used to reach the bytes.
 *
 * Start-up: a backend whose listing is cheap (`reconcileIntervalMs` null, the filesystem) is
 * listed before serving: the listing is the truth about what exists, the snapshot gives sizes and
 * recency of what it knows (no file read). One whose listing is slow or paid (S3) starts from the
 * snapshot (or, without one, from one listing) and is reconciled with a listing in the background.
 * A miss asks the backend once before anyone goes upstream: another process may have stored it.
 */
import { IndexSnapshot, SNAPSHOT_HEADER } from './index-snapshot.js';
import { promises as fsp } from 'node:fs';
import type { Writable } from 'node:stream';
import type { Logger } from 'pino';
import { tryParseDigest, type Digest } from '../oci/digest.js';
import type { BlobWriter } from './blob-writer.js';
import { BlobIndex, type IndexEntry } from './blob-index.js';
import { recordKeys } from './paths.js';
import type { Records } from './records.js';
import type { SessionFiles } from './session-files.js';
import type { Follow } from './file-sender.js';
import type { BackendCoordination, BackendInfo, BlobBackend, StoredBody } from './backend.js';
import { isNoSpace, StorageFullError } from './errors.js';
import { SpaceWatch } from './space-watch.js';
import { activeTracer } from '../util/tracing.js';

export type { BackendInfo } from './backend.js';

/** Recency is written to the stored bytes (with `touch`) at most this often, so a restart keeps the LRU order. */
const TOUCH_INTERVAL_MS = 3_600_000;

/** Stored content opened for reading: the backend's body (an open file, an object's GET…). */

/**
 * Told what happens to stored content, for an index shared by several processes (cluster mode:
 * lib/cluster/shared-index.ts). Every call is synchronous and cheap: it only records.
 */
export interface StoreObserver {
  /** Served (a hit): its recency. */
  used(digest: string): void;
  /** Committed into the store. */
  committed(digest: string, size: number, pinned: boolean): void;
  /** Pinned (no longer evictable), or unpinned (evictable again). */
  pinChanged(digest: string, pinned: boolean, size: number | null): void;
  /** Deleted (gc, DELETE). */
  removed(digest: string): void;
  /** Evicted by this process's own index (storage.maxSize, not cluster mode). */
  evicted?(digest: string): void;
}

export interface BlobStoreOptions {
  /** Bytes of cached (unpinned) content; null: unbounded. */
  maxSize: number | null;
  log?: Logger;
  now?: () => number;
}

export interface IndexStats {
  cachedBytes: number;
  cachedCount: number;
  pinnedBytes: number;
  pinnedCount: number;
}

/** Lines of the index snapshot joined into one string at a time (saveSnapshot). */
const SNAPSHOT_CHUNK_LINES = 4096;

export interface InitOptions {
  /** false: leave temp files alone (a CLI command beside a running server). */
  sweep?: boolean;
  sweepOlderThanMs?: number;
  /** Called once the snapshot is read, before the listing (init). */
  settle?: () => void;
}

export class BlobStore {
  readonly backend: BlobBackend;
  /** The index: callers outside lib/storage use the methods below (isPinned, sizeOf, stats, digests…). */
  readonly index: BlobIndex;
  /** Pins (and, through Store, the repositories' records). */
  readonly records: Records;
  private readonly log: Logger | undefined;
  private readonly now: () => number;
  /** Set in cluster mode. */
  observer: StoreObserver | null = null;
  /** Open reads by digest: content being served now (a shared index protects it from eviction). */
  private readonly reading = new Map<string, number>();
  private reconciling: Promise<void> | null = null;
  private reconcileTimer: NodeJS.Timeout | null = null;
  /** The snapshot's recency, read once for `lastUsed` (a command's `ls` asks it for every tag). */
  private snapshotRecency: Promise<IndexSnapshot> | null = null;
  /** Reconciliations finished (tests, metrics). */
  reconciliations = 0;
  /** The disk filling up: episodes logged once, refused writes counted (space-watch.ts). */
  readonly space: SpaceWatch;
  private readonly maxSize: number | null;

  constructor(backend: BlobBackend, opts: BlobStoreOptions = { maxSize: null }) {
    this.backend = backend;
    this.log = opts.log;
    this.now = opts.now ?? Date.now;
    this.records = backend.records;
    this.maxSize = opts.maxSize;
    this.space = new SpaceWatch(opts.log, this.now);
    this.index = new BlobIndex({ maxSize: opts.maxSize, onEvict: (digest, entry) => this.evict(digest, entry) });
  }

  /** Where push sessions keep their bytes (upload-store.ts). */
  sessionFiles(): SessionFiles {
    return this.backend.sessions;
  }

  info(): BackendInfo {
    return this.backend.info();
  }

  /**
   * Whether the replicas of a cluster share this backend's temp files (a shared volume), so that a
   * download in progress is followed from any replica; else it is streamed from its holder.
   */
  get sharesDownloads(): boolean {
    return this.backend.shared !== null;
  }

  /** A local directory for work in progress (bundle imports stage their blobs there). */
  get tmpDir(): string {
    return this.backend.tmpDir;
  }

  /** Hooks the backend may use in cluster mode (S3: its orphan sweeps leave leased downloads alone). */
  coordinate(c: BackendCoordination): void {
    this.backend.coordinate(c);
  }

  /** Stops background work (reconciliation, the backend's own). */
  async close(): Promise<void> {
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    this.reconcileTimer = null;
    await this.reconciling?.catch(() => undefined);
    await this.backend.close();
  }

  /**
   * Creates the layout, deletes temp files left by an interrupted run, and rebuilds the index.
   * `sweep: false` leaves temp files alone: for a CLI command working beside a running server,
   * whose downloads in progress those files are.
   *
   * `settle` is called once the snapshot is read, before the listing: the server gives back memory
   * there (a memory-reducing collection: the snapshot's text is garbage by then, and the young
   * generation shrinks before the listing's 100k short-lived objects; start-up's peak, bench s7).
   */
  async init(opts: InitOptions = {}): Promise<{ sweptTempFiles: number; blobs: number; bytes: number; ms: number }> {
    const started = performance.now();
    const { swept } = await this.backend.open(opts);
    const settle = opts.settle ?? ((): void => undefined);
    const { blobs, bytes } = this.backend.reconcileIntervalMs === null ? await this.rebuildIndex(settle) : await this.loadIndex(settle);
    if (opts.sweep !== false && this.backend.reconcileIntervalMs !== null) {
      this.reconcileTimer = setInterval(() => void this.reconcile(), this.backend.reconcileIntervalMs);
      this.reconcileTimer.unref();
    }
    return { sweptTempFiles: swept, blobs, bytes, ms: Math.round(performance.now() - started) };
  }

  /**
   * Deletes temp files (shared downloads included) untouched for `olderThanMs`: left by a process
   * that died, and taken over by nobody since. Returns how many.
   */
  async sweepTemp(olderThanMs: number): Promise<number> {
    return this.backend.sweepTemp(olderThanMs);
  }

  /** Sizes of a shared download's temp file and of the stored content (null: absent), in one look. */
  async probeShared(d: Digest): Promise<{ part: number | null; final: number | null }> {
    if (this.backend.shared) return this.backend.shared.probe(d);
    return { part: null, final: this.index.peek(d.value) ?? (await this.backend.stat(d).catch(() => null))?.size ?? null };
  }

  /**
   * Sends bytes [start, end] of a download another replica writes into the shared temp file, as
   * `follow` says they become available (backends whose temp files the replicas share only).
   */
  async sendShared(d: Digest, dest: Writable, start: number, end: number, follow: Follow): Promise<void> {
    if (!this.backend.shared) throw new Error(`the ${this.backend.info().kind} backend shares no downloads in progress between replicas`);
    await this.backend.shared.send(d, dest, start, end, follow);
  }

  /**
   * The index from a listing, which is the truth about what exists; sizes and recency come from
   * the last snapshot (written at shutdown and every few minutes) when it knows the content, else
   * from the listing. Content-addressed bytes never change size, so an old snapshot is never wrong
   * about content that still exists; it only knows less about recency.
   */
  private async rebuildIndex(settle: () => void): Promise<{ blobs: number; bytes: number }> {
    const pinned = await this.listPins();
    const known = await this.readSnapshot();
    settle();
    // What the listing found is marked on the snapshot's own slots (no second set of 100k digests).
    const unknownFound: Array<{ digest: string; size: number; mtime: number }> = [];
    for await (const f of this.backend.list((digest) => known.has(digest))) {
      if (f.size === null) known.mark(f.digest);
      else unknownFound.push(f);
    }
    // Content the snapshot did not know (all of it without one) was listed with a stat each: the
    // young generation grew for it; given back before the index is built.
    if (unknownFound.length > 0) settle();
    // Least recently used first: what the snapshot knows, in its order (its digest strings are the
    // ones the index keeps); then content it did not know (stored after it was written) by time.
    let blobs = 0;
    let bytes = 0;
    const add = (digest: string, size: number, mtime: number): void => {
      blobs++;
      bytes += size;
      this.index.add(digest, size, mtime, pinned.has(digest));
    };
    for (const k of known.entries(true)) add(k.digest, k.size, k.mtime);
    unknownFound.sort((a, b) => a.mtime - b.mtime);
    for (const f of unknownFound) add(f.digest, f.size, f.mtime);
    return { blobs, bytes };
  }

  /**
   * The index at start for a backend whose listing is slow: the snapshot's entries, then one
   * listing (awaited when there is no snapshot, else in the background) adds what others stored
   * and drops what is gone.
   */
  private async loadIndex(settle: () => void): Promise<{ blobs: number; bytes: number }> {
    const snapshot = await this.readSnapshot();
    settle();
    if (snapshot.size === 0) {
      await this.reconcile();
    } else {
      const pinned = await this.listPins();
      for (const k of snapshot.entries()) this.index.add(k.digest, k.size, k.mtime, pinned.has(k.digest));
      void this.reconcile();
    }
    const s = this.index.stats();
    return { blobs: s.cachedCount + s.pinnedCount, bytes: s.cachedBytes + s.pinnedBytes };
  }

  /** Lists the backend and brings the index in line with it. One at a time. */
  reconcile(): Promise<void> {
    this.reconciling ??= this.reconcileNow().finally(() => {
      this.reconciling = null;
    });
    return this.reconciling;
  }

  private async reconcileNow(): Promise<void> {
    const started = this.now();
    const seen = new Set<string>();
    try {
      const found: Array<{ digest: string; size: number; mtime: number; pinned: boolean }> = [];
      for await (const o of this.listStored()) found.push(o);
      found.sort((a, b) => a.mtime - b.mtime);
      for (const o of found) {
        seen.add(o.digest);
        if (!this.index.has(o.digest)) this.index.add(o.digest, o.size, o.mtime, o.pinned);
        else if (o.pinned && !this.index.isPinned(o.digest)) this.index.pin(o.digest, o.size);
      }
      // Gone from the backend (deleted by another replica or by hand): forgotten, unless stored
      // here after the listing began.
      for (const e of [...this.index.entries()]) {
        if (seen.has(e.digest) || this.reading.has(e.digest)) continue;
        if (e.touchedAt >= started && !this.index.isPinned(e.digest)) continue;
        const d = tryParseDigest(e.digest);
        if (d && (await this.backend.stat(d).catch(() => undefined)) === null) this.index.remove(e.digest);
      }
      this.reconciliations++;
    } catch (err) {
      this.log?.warn({ err: this.backend.describeError?.(err) ?? err }, 'listing the bucket to reconcile the index failed; will try again');
    }
  }

  /** The snapshot the server wrote (index-snapshot.ts); empty when there is none or it cannot be read. */
  private async readSnapshot(): Promise<IndexSnapshot> {
    return IndexSnapshot.parse(await this.backend.readSnapshot().catch(() => null));
  }

  /**
   * Writes the index (digest, size, recency) for a fast start next time: least recently used
   * first. Atomic (the backend's): a crash keeps the previous snapshot.
   */
  async saveSnapshot(): Promise<void> {
    // In chunks of lines, taken at once (a consistent snapshot) but never one array of every line
    // and a copy of them joined: 100k blobs peaked ~20 MiB above the index for a moment.
    const chunks: string[] = [];
    let lines: string[] = [SNAPSHOT_HEADER];
    for (const { digest, size, touchedAt } of this.index.entries()) {
      lines.push(`${digest} ${size} ${Math.round(touchedAt)}`);
      if (lines.length >= SNAPSHOT_CHUNK_LINES) {
        chunks.push(`${lines.join('\n')}\n`);
        lines = [];
      }
    }
    if (lines.length > 0) chunks.push(`${lines.join('\n')}\n`);
    await this.backend.writeSnapshot(chunks);
  }

  // ---- what the index knows (no backend access) ------------------------------------------------

  /** Size of stored content, refreshing its recency; null when not stored. No backend access. */
  stat(d: Digest): { size: number } | null {
    const e = this.index.use(d.value);
    if (!e) return null;
    this.recordUse(d.value, e);
    return { size: e.size };
  }

  /**
   * Content served from a copy the caller keeps in memory (a manifest's bytes, manifests.ts): its
   * recency refreshed as stat() does, so that what is served most without touching the store is not
   * what eviction takes first. Not stored: nothing.
   */
  served(digest: string): void {
    const e = this.index.use(digest);
    if (e) this.recordUse(digest, e);
  }

  /** Whether the content is stored, without refreshing recency, by this process's index alone. */
  has(d: Digest): boolean {
    return this.index.has(d.value);
  }

  /** Size of indexed content without refreshing its recency; null when this index does not know it. */
  sizeOf(digest: string): number | null {
    return this.index.peek(digest);
  }

  /** Whether this index holds the content pinned (hosted or seeded: never evicted). */
  isPinned(digest: string): boolean {
    return this.index.isPinned(digest);
  }

  /** Bytes and counts of cached and pinned content. */
  stats(): IndexStats {
    return this.index.stats();
  }

  /** Every indexed digest: cached ones from least to most recently used, then pinned ones. */
  *digests(): Generator<string> {
    for (const e of this.index.entries()) yield e.digest;
  }

  /** Forgets content whose bytes another process deleted (the cluster's eviction). */
  forget(digest: string): void {
    this.index.remove(digest);
  }

  /** Evictions since start (metrics). */
  get evictions(): number {
    return this.index.evictions;
  }

  /** Digests being read right now (open content). */
  readingNow(): IterableIterator<string> {
    return this.reading.keys();
  }

  // ---- reading ----------------------------------------------------------------------------------

  /**
   * Content another process put in the store (prefetch, import) is unknown to this index until it
   * is looked for: on a miss, one look finds it and adds it. True when it is (now) indexed.
   */
  async adopt(d: Digest): Promise<boolean> {
    if (this.index.has(d.value)) return true;
    const st = await this.backend.probe(d);
    if (!st) return false;
    const pinned = await this.pinnedOnDisk(d).catch(() => false);
    this.index.add(d.value, st.size, this.backend.touch ? st.mtime : this.now(), pinned);
    return this.index.has(d.value);
  }

  /**
   * Whether the content is stored, asking the backend when the index does not know it: another
   * process on the same store (a replica, a CLI command) may have put it there.
   */
  async present(d: Digest): Promise<boolean> {
    return this.index.has(d.value) || this.adopt(d);
  }

  /** stat(), after asking the backend when the index does not know the content (present()). */
  async statPresent(d: Digest): Promise<{ size: number } | null> {
    if (!(await this.present(d))) return null;
    return this.stat(d);
  }

  /** Recency of content just used: on the stored bytes at most hourly (`touch`), and for the cluster's shared index. */
  private recordUse(digest: string, e: IndexEntry): void {
    this.maybeTouch(digest, e);
    this.observer?.used(digest);
  }

  private maybeTouch(digest: string, e: IndexEntry): void {
    const now = this.now();
    if (!this.backend.touch) {
      // Recency lives in the index, its snapshot, and Redis in cluster mode.
      e.touchedAt = now;
      return;
    }
    if (now - e.touchedAt < TOUCH_INTERVAL_MS) return;
    const d = tryParseDigest(digest);
    if (!d) return;
    e.touchedAt = now;
    this.backend.touch(d, now);
  }

  /**
   * Opens stored content for reading, refreshing its recency. Null when it is not stored (or its
   * bytes vanished, in which case the index forgets it).
   */
  open(d: Digest): Promise<StoredBody | null> {
    const tracer = activeTracer();
    return tracer ? tracer.span('store.open', { 'stevedore.digest': d.value }, () => this.openNow(d)) : this.openNow(d);
  }

  private async openNow(d: Digest): Promise<StoredBody | null> {
    if (!this.index.has(d.value)) await this.adopt(d);
    const e = this.index.use(d.value);
    if (!e) return null;
    const finished = this.startReading(d.value);
    let body: StoredBody | null;
    try {
      body = await this.backend.read(d, e.size, finished);
    } catch (err) {
      finished();
      throw err;
    }
    if (!body) {
      finished();
      this.index.remove(d.value);
      return null;
    }
    this.recordUse(d.value, e);
    return body;
  }

  /** Counts a read of `digest` as in progress; the function returned ends it (once, however often called). */
  private startReading(digest: string): () => void {
    this.reading.set(digest, (this.reading.get(digest) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.reading.get(digest) ?? 1) - 1;
      if (n <= 0) this.reading.delete(digest);
      else this.reading.set(digest, n);
    };
  }

  /** Small content (manifests) read whole. */
  readSmall(d: Digest): Promise<Buffer | null> {
    const tracer = activeTracer();
    return tracer ? tracer.span('store.read', { 'stevedore.digest': d.value }, () => this.readSmallNow(d)) : this.readSmallNow(d);
  }

  private async readSmallNow(d: Digest): Promise<Buffer | null> {
    if (!(await this.present(d))) return null;
    this.observer?.used(d.value);
    const bytes = await this.backend.readSmall(d);
    if (!bytes) this.index.remove(d.value);
    return bytes;
  }

  /** When the content was last served (as far as recency was recorded), or stored; null when not stored. */
  async lastUsed(d: Digest): Promise<Date | null> {
    const st = await this.backend.stat(d);
    if (!st) return null;
    if (this.backend.touch) return new Date(st.mtime);
    // Recency is not on the stored bytes: the snapshot (written by the server) knows it.
    this.snapshotRecency ??= this.readSnapshot();
    const known = (await this.snapshotRecency).mtime(d.value);
    return new Date(Math.max(st.mtime, known ?? 0));
  }

  // ---- writing ----------------------------------------------------------------------------------

  /** A writer of new content; `expected` null means "whatever digest the bytes have" (manifests by tag). */
  createWriter(expected: Digest | null, opts: { maxSize?: number; pinned?: boolean; keepRecent?: number; shared?: boolean } = {}): BlobWriter {
    const { pinned, ...writerOpts } = opts;
    const w = this.backend.createWriter(expected, writerOpts, (d, size) => {
      this.index.add(d.value, size, this.now(), pinned === true);
      this.observer?.committed(d.value, size, pinned === true);
    });
    w.makeRoom = (bytes) => this.makeRoom(bytes);
    w.events.once('failed', (err: Error) => {
      if (err instanceof StorageFullError) this.space.noSpace(expected?.value ?? 'new content', err);
    });
    w.events.once('committed', () => this.space.wrote());
    return w;
  }

  /**
   * The disk is full (ENOSPC) and a write needs `bytes`: with storage.maxSize set (the store is a
   * cache this process evicts from), the least recently served content not being read is evicted
   * until at least `bytes` were freed. True when anything was. Without maxSize nothing is evicted:
   * the store keeps everything, and the write fails (StorageFullError).
   */
  async makeRoom(bytes: number): Promise<boolean> {
    if (this.maxSize === null) return false;
    let freed = 0;
    let evicted = 0;
    for (const digest of this.index.evictionOrder()) {
      if (freed >= bytes && evicted > 0) break;
      // A file being read frees its space only when its reader is done.
      if (this.reading.has(digest)) continue;
      const size = this.index.peek(digest);
      if (size === null) continue;
      this.index.remove(digest);
      this.index.evictions++;
      this.evict(digest, { size, touchedAt: 0 });
      freed += size;
      evicted++;
    }
    if (evicted === 0) return false;
    this.log?.warn({ bytes, evicted, freed }, "the store's disk is full: evicted least recently served content to make room");
    await this.backend.evictionsSettled();
    return true;
  }

  /** `err` as storage's StorageFullError when it says the disk is full (counted and logged once per episode), else as it is. */
  noSpace(what: string, err: unknown): unknown {
    return isNoSpace(err) || err instanceof StorageFullError ? this.space.noSpace(what, err) : err;
  }

  /**
   * Writes small verified content (a manifest already in memory). Returns the digest it was stored
   * under. `pinned` content (pushed) is pinned before it lands, so it is never evicted, not even once.
   */
  putSmall(data: Buffer, expected: Digest | null, opts: { pinned?: boolean } = {}): Promise<string> {
    const tracer = activeTracer();
    if (!tracer) return this.putSmallNow(data, expected, opts);
    return tracer.span('store.write', { 'stevedore.digest': expected?.value ?? 'unknown', 'stevedore.size': data.length }, () => this.putSmallNow(data, expected, opts));
  }

  private async putSmallNow(data: Buffer, expected: Digest | null, opts: { pinned?: boolean }): Promise<string> {
    if (opts.pinned && expected) await this.writePinFile(expected);
    const w = this.createWriter(expected, opts);
    try {
      // end()'s callback gets the write's error (a full disk) too: without it, commit would wait for a finish that never comes.
      await new Promise<void>((resolve, reject) => {
        w.once('error', reject);
        w.end(data, (err?: Error | null) => (err ? reject(err) : resolve()));
      });
    } catch (err) {
      await w.abort(err as Error);
      throw err;
    }
    const { digest } = await w.commit(data.length);
    return digest;
  }

  /**
   * Puts a push session's verified bytes in the store as pinned content: the pin is recorded
   * first, then the backend publishes the bytes (one rename, or an upload completed only if they
   * still hash right). Content already stored is only pinned.
   */
  commitSession(uuid: string, size: number, d: Digest): Promise<void> {
    const tracer = activeTracer();
    if (!tracer) return this.commitSessionNow(uuid, size, d);
    return tracer.span('store.write', { 'stevedore.digest': d.value, 'stevedore.size': size }, () => this.commitSessionNow(uuid, size, d));
  }

  private async commitSessionNow(uuid: string, size: number, d: Digest): Promise<void> {
    await this.writePinFile(d);
    if (await this.pinIfStored(d, size)) return;
    await this.backend.sessions.publish(uuid, size, d);
    this.index.add(d.value, size, this.now(), true);
    // Cached by another replica before (this one's index did not know it): no longer evictable.
    this.observer?.pinChanged(d.value, true, size);
  }

  /** Pins content already stored (this index knows it, or the backend holds it at this size); whether it was. */
  private async pinIfStored(d: Digest, size: number): Promise<boolean> {
    if (!this.index.has(d.value)) {
      const st = await this.backend.stat(d);
      if (st?.size === size) this.index.add(d.value, size, this.now(), true);
    }
    if (!this.index.has(d.value)) return false;
    // Pinned before anything else is awaited: an eviction in between would lose the content.
    this.index.pin(d.value);
    this.observer?.pinChanged(d.value, true, size);
    return true;
  }

  /**
   * Moves a local file of verified bytes (a bundle's staged blob, in tmpDir) into the store as
   * pinned content: the pin first, then one rename (or upload). Already stored: the file is
   * deleted and the stored copy pinned.
   */
  async commitVerifiedFile(file: string, d: Digest, size: number): Promise<void> {
    await this.writePinFile(d);
    if (await this.pinIfStored(d, size)) {
      await fsp.rm(file, { force: true });
      return;
    }
    await this.backend.importFile(file, d, size);
    this.index.add(d.value, size, this.now(), true);
    this.observer?.pinChanged(d.value, true, size);
  }

  // ---- pins, deletion, eviction -----------------------------------------------------------------

  /** Pins stored content: it is never evicted, across restarts too. */
  async pin(d: Digest): Promise<void> {
    // The index first, before anything is awaited: an eviction in between would lose the content.
    this.index.pin(d.value);
    this.observer?.pinChanged(d.value, true, this.index.peek(d.value));
    await this.writePinFile(d);
  }

  /** Pins content in this index only (its pin record is written by whoever stores it). */
  pinIndexed(digest: string): void {
    this.index.pin(digest);
  }

  private async writePinFile(d: Digest): Promise<void> {
    await this.records.write(recordKeys.pin(d), '');
  }

  /** Every pinned digest, from the pin records. */
  private async listPins(): Promise<Set<string>> {
    const pinned = new Set<string>();
    for (const alg of await this.records.list(recordKeys.pins)) {
      for (const hex of await this.records.list(`${recordKeys.pins}/${alg}`)) pinned.add(`${alg}:${hex}`);
    }
    return pinned;
  }

  /**
   * Returns pinned content to the evictable cache (a delete left no repository naming it): the
   * least-recently-used policy, or `stevedore gc`, may then remove it.
   */
  async unpin(d: Digest): Promise<void> {
    await this.records.remove(recordKeys.pin(d));
    const size = this.index.peek(d.value);
    if (size === null || !this.index.isPinned(d.value)) return;
    this.index.remove(d.value);
    this.index.add(d.value, size, this.now());
    this.observer?.pinChanged(d.value, false, size);
  }

  async delete(d: Digest): Promise<void> {
    this.index.remove(d.value);
    this.observer?.removed(d.value);
    await this.backend.remove(d);
    await this.records.remove(recordKeys.pin(d));
  }

  /**
   * Evicts content chosen by the cluster's eviction (one replica decides for all): its bytes are
   * deleted unless it is pinned. Returns whether they were.
   */
  async evictChosen(d: Digest, size: number): Promise<boolean> {
    if (this.index.isPinned(d.value)) return false;
    if (await this.pinnedOnDisk(d)) return false;
    this.index.remove(d.value);
    this.index.evictions++;
    this.evict(d.value, { size, touchedAt: 0 });
    return true;
  }

  /** Whether the content is pinned in the records (a pin exists), whatever this process's index knows. */
  async pinnedOnDisk(d: Digest): Promise<boolean> {
    return this.records.exists(recordKeys.pin(d));
  }

  /** Every stored blob (digest, size, time, pinned), listing the backend: slow, for reconciliation. */
  async *listStored(): AsyncGenerator<{ digest: string; size: number; mtime: number; pinned: boolean }> {
    const pinned = await this.listPins();
    for await (const f of this.backend.list()) {
      if (f.size === null) continue;
      yield { digest: f.digest, size: f.size, mtime: f.mtime, pinned: pinned.has(f.digest) };
    }
  }

  /** The store's identity: replicas on the same storage share it, so they coordinate; others never do. */
  async storeId(): Promise<string> {
    return this.backend.storeId();
  }

  /** Deletions of evicted content still in flight (tests wait for them). */
  async evictionsSettled(): Promise<void> {
    await this.backend.evictionsSettled();
  }

  private evict(digest: string, entry: IndexEntry): void {
    const d = tryParseDigest(digest);
    if (!d) return;
    this.log?.info({ digest, size: entry.size }, 'evicted least recently served content');
    this.observer?.evicted?.(digest);
    // Started before returning: a later write of the same digest is never deleted by it.
    this.backend.evict(d);
  }
}
