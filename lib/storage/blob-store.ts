/**
 * Content-addressed files: read, write-verify-commit, the size-bounded LRU index over them, pins,
 * and start-up recovery (temp files swept, index rebuilt from directory listings and stat alone:
 * no file is read).
 */
import { createReadStream, promises as fsp, statSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { sendFileRange, type Follow } from './file-sender.js';
import type { Logger } from 'pino';
import { tryParseDigest, type Digest } from '../oci/digest.js';
import { BlobWriter } from './blob-writer.js';
import { BlobIndex, type IndexEntry } from './blob-index.js';
import { StorePaths, recordKeys } from './paths.js';
import { FileRecords, type Records } from './records.js';
import { FileSessionFiles, type SessionFiles } from './session-files.js';
import { DIR_MODE, FILE_MODE } from './modes.js';

/** Large reads keep syscalls per GiB low on warm hits. */
const READ_HIGH_WATER_MARK = 512 * 1024;
/** Recency is written to the file's mtime at most this often, so a restart keeps the LRU order. */
const TOUCH_INTERVAL_MS = 3_600_000;
const SNAPSHOT_HEADER = 'stevedore-index 1';

export interface StoredBlob {
  size: number;
  /** Streams bytes [start, end] (inclusive) or all; the file is already open, so eviction cannot cut it. */
  stream(range?: { start: number; end: number }): Readable;
  /** Sends bytes [start, end] (inclusive) or all to `dest` and ends it; the fast path for HTTP answers. Closes the file. */
  sendTo(dest: Writable, range?: { start: number; end: number }): Promise<void>;
  /** Closes the file when the caller decides not to stream after all. */
  close(): Promise<void>;
  /**
   * A URL the client may fetch the bytes from itself (the S3 backend with `redirect`: a presigned
   * URL of the object); absent when the bytes are served here.
   */
  redirect?(): Promise<string>;
}

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
  /** Where pins and the repositories' records live; default: files under the root. */
  records?: Records;
}

/** What a store's backend says about itself (metrics, the dashboard, `stevedore du`). */
export interface BackendInfo {
  kind: 'filesystem' | 's3';
  /** The directory, or `s3://bucket/prefix`. */
  location: string;
}

export class BlobStore {
  readonly paths: StorePaths;
  readonly index: BlobIndex;
  /** Pins (and, through Store, the repositories' records): files under the root. */
  readonly records: Records;
  protected readonly log: Logger | undefined;
  protected readonly now: () => number;
  /** Set in cluster mode. */
  observer: StoreObserver | null = null;
  /** Open reads by digest: content being served now (a shared index protects it from eviction). */
  protected readonly reading = new Map<string, number>();

  constructor(root: string, opts: BlobStoreOptions = { maxSize: null }) {
    this.paths = new StorePaths(root);
    this.log = opts.log;
    this.now = opts.now ?? Date.now;
    this.index = new BlobIndex({ maxSize: opts.maxSize, onEvict: (digest, entry) => this.evict(digest, entry) });
    this.records = opts.records ?? new FileRecords(this.paths.root, this.paths.tmp);
  }

  /** Where push sessions keep their bytes (upload-store.ts). */
  sessionFiles(): SessionFiles {
    return new FileSessionFiles(this);
  }

  info(): BackendInfo {
    return { kind: 'filesystem', location: this.paths.root };
  }

  /** Stops background work (the S3 backend's reconciliation); the filesystem backend has none. */
  async close(): Promise<void> {}

  /**
   * Creates the layout, deletes temp files left by an interrupted run, and rebuilds the index.
   * `sweep: false` leaves temp files alone: for a CLI command working beside a running server,
   * whose downloads in progress those files are.
   */
  async init(opts: { sweep?: boolean; sweepOlderThanMs?: number } = {}): Promise<{ sweptTempFiles: number; blobs: number; bytes: number; ms: number }> {
    const started = performance.now();
    await fsp.mkdir(this.paths.blobs, { recursive: true, mode: DIR_MODE });
    await fsp.mkdir(this.paths.repositories, { recursive: true, mode: DIR_MODE });
    let swept = 0;
    if (opts.sweep !== false && opts.sweepOlderThanMs !== undefined) {
      // Shared with other replicas: only what nobody has written to for a while is left over.
      swept = await this.sweepTemp(opts.sweepOlderThanMs);
    } else if (opts.sweep !== false) {
      try {
        swept = (await fsp.readdir(this.paths.tmp)).length;
      } catch {
        // no tmp dir yet
      }
      await fsp.rm(this.paths.tmp, { recursive: true, force: true });
    }
    await fsp.mkdir(this.paths.tmp, { recursive: true, mode: DIR_MODE });
    const { blobs, bytes } = await this.rebuildIndex();
    return { sweptTempFiles: swept, blobs, bytes, ms: Math.round(performance.now() - started) };
  }

  /**
   * Deletes temp files (shared downloads included) untouched for `olderThanMs`: left by a process
   * that died, and taken over by nobody since. Returns how many.
   */
  async sweepTemp(olderThanMs: number): Promise<number> {
    const cutoff = this.now() - olderThanMs;
    let swept = 0;
    for (const dir of [this.paths.tmp, this.paths.sharedParts]) {
      for (const name of await readdirOrEmpty(dir)) {
        const file = path.join(dir, name);
        const st = await fsp.stat(file).catch(() => null);
        if (!st?.isFile() || st.mtimeMs > cutoff) continue;
        await fsp.rm(file, { force: true });
        swept++;
      }
    }
    return swept;
  }

  /** Sizes of a shared download's temp file and of the stored file (null: absent), in one look. */
  async probeShared(d: Digest): Promise<{ part: number | null; final: number | null }> {
    const part = await fsp.stat(this.paths.sharedPart(d)).catch(() => null);
    if (part) return { part: part.size, final: null };
    const final = await fsp.stat(this.paths.blob(d)).catch(() => null);
    return { part: null, final: final?.size ?? null };
  }

  /**
   * Sends bytes [start, end] of a download another replica writes into the shared temp file, as
   * `follow` says they become available; the descriptor survives the rename into the store.
   */
  async sendShared(d: Digest, dest: Writable, start: number, end: number, follow: Follow): Promise<void> {
    let fh: fsp.FileHandle | null = null;
    // The holder creates its temp file before it asks the upstream, but on a network volume the
    // file may show up a moment after the size it published: a short wait, not a failure.
    for (let attempt = 0; attempt < 40 && !fh; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 50));
      for (const p of [this.paths.sharedPart(d), this.paths.blob(d)]) {
        fh = await fsp.open(p, 'r').catch(() => null);
        if (fh) break;
      }
    }
    if (!fh) throw new Error(`the shared download of ${d.value} vanished`);
    try {
      await sendFileRange(fh, dest, start, end, follow);
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  /**
   * The index from disk. Directory listings are the truth about what exists; sizes and recency come
   * from the last snapshot (written at shutdown and every few minutes) when it knows a file, else
   * from one stat. Content-addressed files never change size, so an old snapshot is never wrong
   * about a file that still exists; it only knows less about recency.
   */
  private async rebuildIndex(): Promise<{ blobs: number; bytes: number }> {
    const pinned = await this.listPins();
    const known = await this.readSnapshot();
    const existing = new Set<string>();
    const found: Array<{ digest: string; size: number; mtime: number }> = [];
    const unknownFound: typeof found = [];
    for (const alg of await readdirOrEmpty(this.paths.blobs)) {
      const algDir = path.join(this.paths.blobs, alg);
      for (const p of await readdirOrEmpty(algDir)) {
        const dir = path.join(algDir, p);
        for (const hex of await readdirOrEmpty(dir)) {
          const digest = `${alg}:${hex}`;
          if (!hex.startsWith(p) || !tryParseDigest(digest)) continue;
          if (known.has(digest)) {
            existing.add(digest);
            continue;
          }
          // Start-up, before listening: a synchronous stat is a few microseconds on a warm inode
          // cache and leaves no promise or Stats garbage behind (100k files without a snapshot).
          const st = statSync(path.join(dir, hex), { throwIfNoEntry: false });
          if (st?.isFile()) unknownFound.push({ digest, size: st.size, mtime: st.mtimeMs });
        }
      }
    }
    // Least recently used first: what the snapshot knows, in its order; then files it did not
    // know (stored after it was written) by mtime.
    for (const [digest, k] of known) if (existing.has(digest)) found.push({ digest, size: k.size, mtime: k.mtime });
    unknownFound.sort((a, b) => a.mtime - b.mtime);
    for (const f of unknownFound) found.push(f);
    let bytes = 0;
    for (const f of found) {
      bytes += f.size;
      this.index.add(f.digest, f.size, f.mtime, pinned.has(f.digest));
    }
    return { blobs: found.length, bytes };
  }

  /** digest → size and recency, in the snapshot's order (least recently used first). */
  protected async readSnapshot(): Promise<Map<string, { size: number; mtime: number }>> {
    const known = new Map<string, { size: number; mtime: number }>();
    let text: string;
    try {
      text = await fsp.readFile(this.paths.indexSnapshot, 'latin1');
    } catch {
      return known;
    }
    if (!text.startsWith(`${SNAPSHOT_HEADER}\n`)) return known;
    // Scanned in place (no split): 100k lines without an array of 100k strings.
    let pos = SNAPSHOT_HEADER.length + 1;
    while (pos < text.length) {
      let nl = text.indexOf('\n', pos);
      if (nl < 0) nl = text.length;
      const a = text.indexOf(' ', pos);
      const b = a < 0 ? -1 : text.indexOf(' ', a + 1);
      if (a > pos && b > a && b < nl) {
        const size = Number(text.slice(a + 1, b));
        const mtime = Number(text.slice(b + 1, nl));
        if (Number.isSafeInteger(size) && Number.isFinite(mtime)) known.set(text.slice(pos, a), { size, mtime });
      }
      pos = nl + 1;
    }
    return known;
  }

  /**
   * Writes the index (digest, size, recency) for a fast start next time: least recently used
   * first. Atomic (temp file + rename); a crash keeps the previous snapshot.
   */
  async saveSnapshot(): Promise<void> {
    const parts: string[] = [SNAPSHOT_HEADER];
    for (const { digest, size, touchedAt } of this.index.entries()) parts.push(`${digest} ${size} ${Math.round(touchedAt)}`);
    const tmp = path.join(this.paths.tmp, `index-${randomBytes(6).toString('hex')}.snapshot`);
    await fsp.writeFile(tmp, `${parts.join('\n')}\n`, { mode: FILE_MODE });
    await fsp.rename(tmp, this.paths.indexSnapshot);
  }


  /** Size of stored content, refreshing its recency; null when not stored. No disk access. */
  stat(d: Digest): { size: number } | null {
    const e = this.index.use(d.value);
    if (!e) return null;
    this.maybeTouch(d, e);
    this.observer?.used(d.value);
    return { size: e.size };
  }

  /**
   * Content another process put in the store (prefetch, import) is unknown to this index until it
   * is looked for: on a miss, one stat finds it and adds it. True when it is (now) indexed.
   */
  async adopt(d: Digest): Promise<boolean> {
    if (this.index.has(d.value)) return true;
    try {
      const st = await fsp.stat(this.paths.blob(d));
      if (!st.isFile()) return false;
      const pinned = await this.pinnedOnDisk(d);
      this.index.add(d.value, st.size, st.mtimeMs, pinned);
      return this.index.has(d.value);
    } catch {
      return false;
    }
  }

  /** Whether the content is stored, without refreshing recency, by this process's index alone. */
  has(d: Digest): boolean {
    return this.index.has(d.value);
  }

  /**
   * Whether the content is stored, asking the disk when the index does not know it: another process
   * on the same store (a replica, a CLI command) may have put it there.
   */
  async present(d: Digest): Promise<boolean> {
    return this.index.has(d.value) || this.adopt(d);
  }

  /** stat(), after asking the disk when the index does not know the content (present()). */
  async statPresent(d: Digest): Promise<{ size: number } | null> {
    if (!(await this.present(d))) return null;
    return this.stat(d);
  }

  protected maybeTouch(d: Digest, e: IndexEntry): void {
    const now = this.now();
    if (now - e.touchedAt < TOUCH_INTERVAL_MS) return;
    e.touchedAt = now;
    const t = new Date(now);
    fsp.utimes(this.paths.blob(d), t, t).catch(() => undefined);
  }

  /**
   * Opens stored content for reading, refreshing its recency. Null when it is not stored (or its
   * file vanished, in which case the index forgets it).
   */
  async open(d: Digest): Promise<StoredBlob | null> {
    if (!this.index.has(d.value)) await this.adopt(d);
    const e = this.index.use(d.value);
    if (!e) return null;
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.paths.blob(d), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.index.remove(d.value);
        this.log?.warn({ digest: d.value }, 'stored file vanished; forgetting it');
        return null;
      }
      throw err;
    }
    this.maybeTouch(d, e);
    this.observer?.used(d.value);
    let used = false;
    const finished = this.startReading(d.value);
    return {
      size: e.size,
      stream: (range) => {
        used = true;
        const rs = createReadStream('', {
          fd: fh,
          highWaterMark: READ_HIGH_WATER_MARK,
          autoClose: true,
          ...(range ? { start: range.start, end: range.end } : { start: 0 }),
        });
        rs.once('close', finished);
        return rs;
      },
      sendTo: async (dest, range) => {
        used = true;
        try {
          await sendFileRange(fh, dest, range?.start ?? 0, range?.end ?? e.size - 1);
        } finally {
          finished();
          await fh.close().catch(() => undefined);
        }
      },
      close: async () => {
        if (!used) {
          finished();
          await fh.close();
        }
      },
    };
  }

  /** Counts a read of `digest` as in progress; the function returned ends it (once, however often called). */
  protected startReading(digest: string): () => void {
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

  /** Digests being read right now (open files). */
  readingNow(): IterableIterator<string> {
    return this.reading.keys();
  }

  /** Small content (manifests) read whole. */
  async readSmall(d: Digest): Promise<Buffer | null> {
    if (!(await this.present(d))) return null;
    this.observer?.used(d.value);
    try {
      return await fsp.readFile(this.paths.blob(d));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.index.remove(d.value);
        return null;
      }
      throw err;
    }
  }

  /** A writer into a new temp file; `expected` null means "whatever digest the bytes have" (manifests by tag). */
  createWriter(expected: Digest | null, opts: { maxSize?: number; pinned?: boolean; keepRecent?: number; shared?: boolean } = {}): BlobWriter {
    // A shared download (cluster mode) has one temp file per digest, resumed by whoever takes it over.
    const shared = opts.shared === true && expected !== null;
    const tmpPath = shared ? this.paths.sharedPart(expected) : path.join(this.paths.tmp, `${randomBytes(12).toString('hex')}.part`);
    return new BlobWriter({
      tmpPath,
      expected,
      resume: shared,
      ...(opts.maxSize !== undefined ? { maxSize: opts.maxSize } : {}),
      ...(opts.keepRecent !== undefined ? { keepRecent: opts.keepRecent } : {}),
      resolveFinal: (d) => this.paths.blob(d),
      onCommitted: (d, size) => {
        this.index.add(d.value, size, this.now(), opts.pinned === true);
        this.observer?.committed(d.value, size, opts.pinned === true);
      },
    });
  }

  /**
   * Writes small verified content (a manifest already in memory). Returns the digest it was stored
   * under. `pinned` content (pushed) is pinned before it lands, so it is never evicted, not even once.
   */
  async putSmall(data: Buffer, expected: Digest | null, opts: { pinned?: boolean } = {}): Promise<string> {
    if (opts.pinned && expected) await this.writePinFile(expected);
    const w = this.createWriter(expected, opts);
    await new Promise<void>((resolve, reject) => {
      w.once('error', reject);
      w.end(data, resolve);
    });
    const { digest } = await w.commit(data.length);
    return digest;
  }

  /** Pins stored content: it is never evicted, across restarts too. */
  async pin(d: Digest): Promise<void> {
    // The index first, before anything is awaited: an eviction in between would lose the content.
    this.index.pin(d.value);
    this.observer?.pinChanged(d.value, true, this.index.peek(d.value));
    await this.writePinFile(d);
  }

  protected async writePinFile(d: Digest): Promise<void> {
    await this.records.write(recordKeys.pin(d), '');
  }

  /** Every pinned digest, from the pin records. */
  protected async listPins(): Promise<Set<string>> {
    const pinned = new Set<string>();
    for (const alg of await this.records.list(recordKeys.pins)) {
      for (const hex of await this.records.list(`${recordKeys.pins}/${alg}`)) pinned.add(`${alg}:${hex}`);
    }
    return pinned;
  }

  /**
   * Moves a finished, already verified file (an upload) into the store as pinned content: the pin
   * is recorded first, then one rename puts it in place. If the content is already stored, the file
   * is deleted and the stored copy pinned instead.
   */
  async commitVerifiedFile(file: string, d: Digest, size: number): Promise<void> {
    await this.writePinFile(d);
    if (this.index.has(d.value)) {
      // Pinned before anything else is awaited: an eviction in between would lose the content.
      this.index.pin(d.value);
      this.observer?.pinChanged(d.value, true, size);
      await fsp.rm(file, { force: true });
      return;
    }
    const final = this.paths.blob(d);
    await fsp.mkdir(path.dirname(final), { recursive: true, mode: DIR_MODE });
    await fsp.rename(file, final);
    this.index.add(d.value, size, this.now(), true);
    // Cached by another replica before (this one's index did not know it): no longer evictable.
    this.observer?.pinChanged(d.value, true, size);
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
    await this.removeContent(d);
    await this.records.remove(recordKeys.pin(d));
  }

  /** Deletes the content's bytes (not its pin). */
  protected async removeContent(d: Digest): Promise<void> {
    await fsp.rm(this.paths.blob(d), { force: true });
  }

  /**
   * Evicts content chosen by the cluster's eviction (one replica decides for all): the file is
   * deleted unless it is pinned. Returns whether it was deleted.
   */
  async evictChosen(d: Digest, size: number): Promise<boolean> {
    if (this.index.isPinned(d.value)) return false;
    if (await this.pinnedOnDisk(d)) return false;
    this.index.remove(d.value);
    this.index.evictions++;
    this.evict(d.value, { size, touchedAt: 0 });
    return true;
  }

  /** Whether the content is pinned on disk (a pin file exists), whatever this process's index knows. */
  async pinnedOnDisk(d: Digest): Promise<boolean> {
    return this.records.exists(recordKeys.pin(d));
  }

  /** When the content was last served (as far as recency was recorded), or stored; null when not stored. */
  async lastUsed(d: Digest): Promise<Date | null> {
    const st = await fsp.stat(this.paths.blob(d)).catch(() => null);
    return st ? st.mtime : null;
  }

  /** Every stored file (digest, size, mtime, pinned), listing the directories: slow, for reconciliation. */
  async *listStored(): AsyncGenerator<{ digest: string; size: number; mtime: number; pinned: boolean }> {
    for (const alg of await readdirOrEmpty(this.paths.blobs)) {
      const algDir = path.join(this.paths.blobs, alg);
      for (const p of await readdirOrEmpty(algDir)) {
        const dir = path.join(algDir, p);
        for (const hex of await readdirOrEmpty(dir)) {
          const d = tryParseDigest(`${alg}:${hex}`);
          if (!d || !hex.startsWith(p)) continue;
          const st = await fsp.stat(path.join(dir, hex)).catch(() => null);
          if (!st?.isFile()) continue;
          yield { digest: d.value, size: st.size, mtime: st.mtimeMs, pinned: await this.pinnedOnDisk(d) };
        }
      }
    }
  }

  /**
   * The store's identity (a random id in `<root>/store.id`, created by the first process): replicas
   * on the same directory share it, so they coordinate; replicas on different stores never do.
   */
  async storeId(): Promise<string> {
    const file = path.join(this.paths.root, 'store.id');
    for (let attempt = 0; attempt < 3; attempt++) {
      const existing = await fsp.readFile(file, 'utf8').catch(() => null);
      if (existing && /^[0-9a-f]{32}$/.test(existing.trim())) return existing.trim();
      const id = randomBytes(16).toString('hex');
      const tmp = path.join(this.paths.tmp, `store-id-${randomBytes(6).toString('hex')}`);
      await fsp.writeFile(tmp, id, { mode: FILE_MODE });
      try {
        // link() fails if the file exists: the first replica's id wins, atomically.
        await fsp.link(tmp, file);
        return id;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      } finally {
        await fsp.rm(tmp, { force: true });
      }
    }
    throw new Error(`cannot read or create ${file}`);
  }

  protected evict(digest: string, entry: IndexEntry): void {
    const d = tryParseDigest(digest);
    if (!d) return;
    this.log?.info({ digest, size: entry.size }, 'evicted least recently served content');
    this.observer?.evicted?.(digest);
    // Synchronous on purpose: a later re-download of the same digest must never be unlinked by a
    // deletion still in flight. Readers holding the file open keep reading.
    try {
      unlinkSync(this.paths.blob(d));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log?.error({ err, digest }, 'eviction failed to delete a file');
    }
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fsp.readdir(dir);
  } catch {
    return [];
  }
}
