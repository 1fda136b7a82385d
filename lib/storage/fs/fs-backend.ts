/**
 * The filesystem backend: verified content as files `<root>/blobs/<alg>/<ab>/<hex>`, records as
 * files under the root, push sessions as directories under `uploads/` (layout: paths.ts). Writes
 * go to a temp file and are renamed into place once verified; reads are open file descriptors, so
 * an eviction (an unlink) never cuts a transfer short. Recency is kept in the files' mtime, so a
 * restart keeps the LRU order. Replicas on a shared volume share its temp files: a download in
 * progress is followed from any replica (SharedDownloads).
 */
import { createReadStream, promises as fsp, statSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Writable } from 'node:stream';
import type { Logger } from 'pino';
import { tryParseDigest, type Digest } from '../../oci/digest.js';
import type { BackendCoordination, BackendFactory, BackendInfo, BlobBackend, StoredBody, BlobStat, ListedBlob, SharedDownloads, WriterOptions } from '../backend.js';
import { BlobWriter } from '../blob-writer.js';
import { sendFileRange, type Follow } from '../file-sender.js';
import { DIR_MODE, FILE_MODE } from '../modes.js';
import { StorePaths } from '../paths.js';
import { readSnapshotFile, writeSnapshotFile } from '../snapshot-file.js';
import { FileRecords } from './file-records.js';
import { FsSessionFiles } from './fs-session-files.js';

/** Large reads keep syscalls per GiB low on warm hits. */
const READ_HIGH_WATER_MARK = 512 * 1024;

export class FsBackend implements BlobBackend {
  readonly paths: StorePaths;
  readonly records: FileRecords;
  readonly sessions: FsSessionFiles;
  readonly reconcileIntervalMs = null;
  readonly shared: SharedDownloads;
  private readonly log: Logger | undefined;
  private readonly now: () => number;

  constructor(root: string, opts: { log?: Logger; now?: () => number } = {}) {
    this.paths = new StorePaths(root);
    this.log = opts.log;
    this.now = opts.now ?? Date.now;
    this.records = new FileRecords(this.paths.root, this.paths.tmp);
    this.sessions = new FsSessionFiles(this.paths);
    this.shared = {
      probe: (d) => this.probeShared(d),
      send: (d, dest, start, end, follow) => this.sendShared(d, dest, start, end, follow),
    };
  }

  info(): BackendInfo {
    return { kind: 'filesystem', location: this.paths.root };
  }

  get tmpDir(): string {
    return this.paths.tmp;
  }

  async open(opts: { sweep?: boolean; sweepOlderThanMs?: number }): Promise<{ swept: number }> {
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
    return { swept };
  }

  async close(): Promise<void> {}

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

  async *list(known?: (digest: string) => boolean): AsyncGenerator<ListedBlob> {
    for (const alg of await readdirOrEmpty(this.paths.blobs)) {
      const algDir = path.join(this.paths.blobs, alg);
      for (const p of await readdirOrEmpty(algDir)) {
        const dir = path.join(algDir, p);
        for (const hex of await readdirOrEmpty(dir)) {
          const digest = `${alg}:${hex}`;
          if (!hex.startsWith(p) || !tryParseDigest(digest)) continue;
          if (known) {
            if (known(digest)) {
              yield { digest, size: null, mtime: null };
              continue;
            }
            // Start-up, before listening: a synchronous stat is a few microseconds on a warm inode
            // cache and leaves no promise or Stats garbage behind (100k files without a snapshot).
            const st = statSync(path.join(dir, hex), { throwIfNoEntry: false });
            if (st?.isFile()) yield { digest, size: st.size, mtime: st.mtimeMs };
            continue;
          }
          const st = await fsp.stat(path.join(dir, hex)).catch(() => null);
          if (st?.isFile()) yield { digest, size: st.size, mtime: st.mtimeMs };
        }
      }
    }
  }

  async stat(d: Digest): Promise<BlobStat | null> {
    const st = await fsp.stat(this.paths.blob(d)).catch(() => null);
    return st?.isFile() ? { size: st.size, mtime: st.mtimeMs } : null;
  }

  probe(d: Digest): Promise<BlobStat | null> {
    return this.stat(d);
  }

  touch(d: Digest, at: number): void {
    const t = new Date(at);
    fsp.utimes(this.paths.blob(d), t, t).catch(() => undefined);
  }

  async read(d: Digest, size: number, done: () => void): Promise<StoredBody | null> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.paths.blob(d), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.log?.warn({ digest: d.value }, 'stored file vanished; forgetting it');
        return null;
      }
      throw err;
    }
    let used = false;
    return {
      size,
      open: (range) => {
        used = true;
        const rs = createReadStream('', {
          fd: fh,
          highWaterMark: READ_HIGH_WATER_MARK,
          autoClose: true,
          ...(range ? { start: range.start, end: range.end } : { start: 0 }),
        });
        rs.once('close', done);
        return rs;
      },
      sendTo: async (dest, range) => {
        used = true;
        try {
          await sendFileRange(fh, dest, range?.start ?? 0, range?.end ?? size - 1);
        } finally {
          done();
          await fh.close().catch(() => undefined);
        }
      },
      release: async () => {
        if (!used) {
          done();
          await fh.close();
        }
      },
    };
  }

  async readSmall(d: Digest): Promise<Buffer | null> {
    try {
      return await fsp.readFile(this.paths.blob(d));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  createWriter(expected: Digest | null, opts: WriterOptions, committed: (d: Digest, size: number) => void): BlobWriter {
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
      onCommitted: committed,
    });
  }

  async importFile(file: string, d: Digest): Promise<void> {
    const final = this.paths.blob(d);
    await fsp.mkdir(path.dirname(final), { recursive: true, mode: DIR_MODE });
    await fsp.rename(file, final);
  }

  async remove(d: Digest): Promise<void> {
    await fsp.rm(this.paths.blob(d), { force: true });
  }

  evict(d: Digest): void {
    // Synchronous on purpose: a later re-download of the same digest must never be unlinked by a
    // deletion still in flight. Readers holding the file open keep reading.
    try {
      unlinkSync(this.paths.blob(d));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log?.error({ err, digest: d.value }, 'eviction failed to delete a file');
    }
  }

  async evictionsSettled(): Promise<void> {}

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

  readSnapshot(): Promise<Buffer | null> {
    return readSnapshotFile(this.paths.indexSnapshot);
  }

  writeSnapshot(chunks: readonly string[]): Promise<void> {
    return writeSnapshotFile(this.paths.indexSnapshot, this.paths.tmp, chunks);
  }

  coordinate(_c: BackendCoordination): void {
    // Replicas on one directory share temp files: nothing to ask.
  }

  private async probeShared(d: Digest): Promise<{ part: number | null; final: number | null }> {
    const part = await fsp.stat(this.paths.sharedPart(d)).catch(() => null);
    if (part) return { part: part.size, final: null };
    const final = await fsp.stat(this.paths.blob(d)).catch(() => null);
    return { part: null, final: final?.size ?? null };
  }

  /**
   * `follow` of a shared download read through `fh`, which must turn out to be the file that was
   * stored: the holder renames its temp file into the store, so a follower's descriptor reads the
   * verified file in the end. But when that download failed (its digest did not match), the temp
   * file was deleted and a later download of the digest wrote and stored another one: `fh` still
   * reads the deleted file of unverified bytes. Once `follow` says the blob is stored, no byte
   * beyond those already allowed goes out before `fh` proved to be the stored file (same inode);
   * when it is not, the answer is cut (waitForMore rejects).
   */
  private sameFileOnceStored(fh: fsp.FileHandle, d: Digest, follow: Follow): Follow {
    let allowed = 0;
    let checked: Promise<void> | null = null;
    let same = false;
    const check = (): Promise<void> =>
      (checked ??= isStoredFile(fh, this.paths.blob(d)).then((ok) => {
        if (!ok) throw new Error(`the shared download of ${d.value} that this answer read failed and another download stored the blob: the answer is cut`);
        same = true;
      }));
    return {
      available: () => {
        if (same) return follow.available();
        if (!follow.complete()) return (allowed = Math.max(allowed, follow.available()));
        return allowed;
      },
      complete: () => same && follow.complete(),
      waitForMore: () => (!same && follow.complete() ? check() : follow.waitForMore()),
      ...(follow.inMemory ? { inMemory: follow.inMemory.bind(follow) } : {}),
    };
  }

  /**
   * Sends bytes [start, end] of a download another replica writes into the shared temp file, as
   * `follow` says they become available; the descriptor survives the rename into the store (and
   * must be the stored file in the end: sameFileOnceStored).
   */
  private async sendShared(d: Digest, dest: Writable, start: number, end: number, follow: Follow): Promise<void> {
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
      await sendFileRange(fh, dest, start, end, this.sameFileOnceStored(fh, d, follow));
    } finally {
      await fh.close().catch(() => undefined);
    }
  }
}

/** The file a descriptor reads is the one stored at `blob` (same inode), checked once the blob is stored. */
async function isStoredFile(fh: fsp.FileHandle, blob: string): Promise<boolean> {
  const [mine, stored] = await Promise.all([fh.stat(), fsp.stat(blob).catch(() => null)]);
  return stored !== null && mine.ino === stored.ino && mine.dev === stored.dev;
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fsp.readdir(dir);
  } catch {
    return [];
  }
}

/** `storage.backend: filesystem`: everything under `storage.path`. */
export const filesystemBackend: BackendFactory = (storage, opts) => new FsBackend(storage.path, opts.log ? { log: opts.log } : {});
