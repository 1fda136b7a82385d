/**
 * A blob on its way into the store: written to a temp file while it is hashed, renamed into place
 * only when the digest matches. Readers may follow the growing file (`createReader`) while it is
 * being written; they see only bytes already written and fail if the blob never verifies.
 */
import { buffersPassed } from '../util/buffer-churn.js';
import { EventEmitter } from 'node:events';
import { promises as fsp } from 'node:fs';
import { createHash, type Hash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { sendFileRange } from './file-sender.js';
import { RecentBytes, type Lease } from './recent-bytes.js';
import path from 'node:path';
import { DigestMismatchError, isNoSpace, SizeInvalidError, StorageFullError } from './errors.js';
import type { Digest, DigestAlgorithm } from '../oci/digest.js';
import { NextEvent } from '../util/next-event.js';
import { activeTracer } from '../util/tracing.js';
import { DIR_MODE, FILE_MODE } from './modes.js';

export type WriterState = 'writing' | 'committed' | 'failed';

/** Times one write asks for room (each time evicting at least what it needs) before it gives up. */
const ROOM_ATTEMPTS = 32;

export interface CommitResult {
  digest: string;
  size: number;
  path: string;
}

export class BlobWriter extends Writable {
  readonly tmpPath: string;
  readonly expected: Digest | null;
  readonly maxSize: number;
  /** Bytes in the temp file, readable by followers. */
  written = 0;
  state: WriterState = 'writing';
  /**
   * Every byte is in and the digest matched. With a `publish` hook (S3), followers get the last
   * byte at this moment, while the content is still being put in place (the last parts and the
   * completion take a moment a client need not wait for: the bytes it holds are verified either
   * way). On disk, where putting it in place is one rename, they get it once it is committed, so
   * that a client that has a whole blob finds it in the store.
   */
  verified = false;
  failure: Error | null = null;
  /** Where the content lives once committed. */
  finalPath: string | null = null;
  /**
   * Leave the temp file in place on abort: it is a shared download another process takes over
   * (cluster mode), not ours to delete.
   */
  keepFileOnAbort = false;
  /**
   * Nothing is released to followers before the blob verified (not only its last byte): set while
   * bytes come from a source trusted by digest only (a peer), whose prefix may still be rewound.
   */
  withhold = false;
  /**
   * Asked when the disk is full (ENOSPC) with the bytes a write needs: true when room was made
   * (content evicted), and the write is tried again; null or false: the blob fails with
   * StorageFullError (its temp file removed). Set by the store (blob-store.ts, `makeRoom`).
   */
  makeRoom: ((bytes: number) => Promise<boolean>) | null = null;
  /** Bytes already in the temp file when it was opened to resume (re-hashed), else 0. */
  readonly resumedFrom: Promise<number>;
  private markResumed!: (n: number) => void;
  readonly events = new EventEmitter();
  private fh: fsp.FileHandle | null = null;
  /** Settles once the temp file exists (or could not be created): followers may arrive before. */
  private readonly created: Promise<void>;
  private markCreated!: (err?: Error) => void;
  private hash: Hash;
  private readonly algorithm: DigestAlgorithm;
  private readonly resolveFinal: (d: Digest) => string;
  /** Puts verified content in place instead of a rename (the S3 backend); the temp file stays the followers' file. */
  private readonly publish: ((d: Digest, size: number) => Promise<void>) | null;
  private readonly onCommitted: (d: Digest, size: number) => void;
  /** Open an existing temp file and continue it (its bytes re-hashed) instead of creating a new one. */
  private readonly resume: boolean;
  /** The most recent bytes: followers at the edge send these instead of reading the file. */
  private readonly recent: RecentBytes | null;
  /** What followers waiting for more bytes wait on (nextEvent). */
  private readonly next = new NextEvent();

  constructor(opts: {
    tmpPath: string;
    expected: Digest | null;
    maxSize?: number;
    resolveFinal: (d: Digest) => string;
    onCommitted?: (d: Digest, size: number) => void;
    /**
     * Keep about this many of the latest bytes in memory for followers (`sendTo`), so those keeping
     * up with the download share one copy instead of each reading the file. Copied into pooled
     * slabs (recent-bytes.ts): the chunks written may be reused or dropped as soon as written.
     */
    keepRecent?: number;
    /**
     * The temp file may exist already (a download another process began and left): its bytes are
     * read and hashed again and writing continues after them; `resumedFrom` says how many.
     */
    resume?: boolean;
    /**
     * Called with the verified digest instead of renaming the temp file into place: the S3
     * backend completes its multipart upload. The temp file is left where it is (and stays
     * `finalPath` for followers); a rejection fails the blob like a digest mismatch.
     */
    publish?: (d: Digest, size: number) => Promise<void>;
  }) {
    // autoDestroy off: finishing is not committing; commit() or abort() decides the file's fate.
    super({ highWaterMark: 1024 * 1024, autoDestroy: false });
    this.tmpPath = opts.tmpPath;
    this.expected = opts.expected;
    this.maxSize = opts.maxSize ?? Number.MAX_SAFE_INTEGER;
    this.algorithm = opts.expected?.algorithm ?? 'sha256';
    this.hash = createHash(this.algorithm);
    this.resolveFinal = opts.resolveFinal;
    this.publish = opts.publish ?? null;
    this.onCommitted = opts.onCommitted ?? (() => undefined);
    this.recent = opts.keepRecent ? new RecentBytes(opts.keepRecent) : null;
    this.resume = opts.resume === true;
    this.events.setMaxListeners(0);
    this.resumedFrom = new Promise<number>((resolve) => {
      this.markResumed = resolve;
    });
    this.created = new Promise<void>((resolve, reject) => {
      this.markCreated = (err) => (err ? reject(err) : resolve());
    });
    this.created.catch(() => undefined);
  }

  override _construct(callback: (error?: Error | null) => void): void {
    this.openTemp().then(
      (fh) => {
        this.fh = fh;
        this.markResumed(this.written);
        this.markCreated();
        callback();
      },
      (err: Error) => {
        this.markResumed(0);
        this.markCreated(err);
        callback(err);
      },
    );
  }

  private async openTemp(): Promise<fsp.FileHandle> {
    try {
      return await this.openTempFile();
    } catch (err) {
      throw isNoSpace(err) ? new StorageFullError(`the store's disk is full: no room for a temp file of ${this.expected?.value ?? 'new content'}`, { cause: err }) : err;
    }
  }

  private async openTempFile(): Promise<fsp.FileHandle> {
    if (!this.resume) return fsp.open(this.tmpPath, 'wx', FILE_MODE);
    await fsp.mkdir(path.dirname(this.tmpPath), { recursive: true, mode: DIR_MODE });
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(this.tmpPath, 'r+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      return fsp.open(this.tmpPath, 'wx', FILE_MODE);
    }
    try {
      // What is already there is trusted no more than the network: hashed again, byte by byte.
      const { size } = await fh.stat();
      const buf = Buffer.allocUnsafe(Math.min(1024 * 1024, Math.max(1, size)));
      let pos = 0;
      while (pos < size) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
        if (bytesRead === 0) break;
        this.hash.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
      if (pos > this.maxSize) throw new SizeInvalidError(`content exceeds the limit of ${this.maxSize} bytes`);
      this.written = pos;
      return fh;
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.writeChunks([chunk]).then(() => callback(), callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    this.writeChunks(chunks.map((c) => c.chunk)).then(() => callback(), callback);
  }

  private async writeChunks(chunks: Buffer[]): Promise<void> {
    let total = 0;
    for (const c of chunks) total += c.length;
    if (this.written + total > this.maxSize) {
      throw new SizeInvalidError(`content exceeds the limit of ${this.maxSize} bytes`);
    }
    // The disk full: room is made (evicting) and the same bytes written again at the same offset.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.writeAt(chunks, total);
        break;
      } catch (err) {
        if (!isNoSpace(err)) throw err;
        if (attempt < ROOM_ATTEMPTS && this.makeRoom && (await this.makeRoom(total))) continue;
        throw new StorageFullError(`the store's disk is full: ${this.written} bytes of ${this.expected?.value ?? 'new content'} were written, the next ${total} refused`, { cause: err });
      }
    }
    for (const c of chunks) this.hash.update(c);
    this.recent?.append(chunks, this.written);
    buffersPassed(total);
    this.written += total;
    this.wakeFollowers();
    this.events.emit('progress', this.written);
  }

  /** Writes `chunks` (`total` bytes) at `this.written`. */
  private async writeAt(chunks: Buffer[], total: number): Promise<void> {
    const fh = this.fh!;
    const { bytesWritten } = await fh.writev(chunks, this.written);
    if (bytesWritten !== total) {
      // writev may write partially; finish the rest chunk by chunk.
      let offset = this.written + bytesWritten;
      const rest = Buffer.concat(chunks).subarray(bytesWritten);
      let pos = 0;
      while (pos < rest.length) {
        const r = await fh.write(rest, pos, rest.length - pos, offset);
        pos += r.bytesWritten;
        offset += r.bytesWritten;
      }
    }
  }

  /**
   * Views of bytes [pos, limit) still in memory, at most `max` bytes, starting exactly at `pos`,
   * leased until released; null when `pos` is no longer (or not yet) among the recent bytes.
   */
  recentRange(pos: number, limit: number, max: number): Lease | null {
    return this.recent?.range(pos, limit, max) ?? null;
  }

  private forgetRecent(): void {
    this.recent?.clear();
  }

  /**
   * Bytes followers may have: all once verified; until then all but the last written (a client
   * that received every byte of Content-Length would take the transfer for complete, even if the
   * digest fails), and none while withholding (bytes from a peer, verified only at the end).
   */
  releasedBytes(): number {
    if (this.state === 'committed' || this.releasedAll()) return this.written;
    return this.withhold ? 0 : this.written - 1;
  }

  /** Verified, and released early: followers may have every byte (see `verified`). */
  releasedAll(): boolean {
    return this.verified && this.publish !== null;
  }

  /** Resolves once every chunk handed to write() is in the file (and hashed). */
  async flushed(): Promise<void> {
    while (this.writableLength > 0 && this.state === 'writing') {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.events.off('progress', done);
          this.events.off('failed', done);
          setImmediate(resolve);
        };
        this.events.on('progress', done);
        this.events.on('failed', done);
      });
    }
  }

  /** The digest of the bytes written so far (call after flushed()). */
  digestSoFar(): string {
    return `${this.algorithm}:${this.hash.copy().digest('hex')}`;
  }

  /**
   * Drops every byte written (the file truncated, the hash started over) so the blob is written
   * again from byte 0: bytes from a source trusted by digest only did not verify. Followers have
   * seen none of them (`withhold`).
   */
  async rewind(): Promise<void> {
    if (!this.withhold) throw new Error('rewind: bytes may already have been sent to followers');
    await this.flushed();
    if (this.state !== 'writing') throw this.failure ?? new Error('blob writer is not writing');
    await this.fh!.truncate(0);
    this.hash = createHash(this.algorithm);
    this.written = 0;
    this.forgetRecent();
    this.events.emit('rewound');
  }

  /**
   * Verifies and moves the finished file into the store. Call after the source ended and this
   * stream finished. Throws (and deletes the temp file) when the digest or size does not match.
   */
  commit(expectedSize?: number): Promise<CommitResult> {
    const tracer = activeTracer();
    if (!tracer) return this.commitNow(expectedSize);
    // The store write's last step (the bytes were written as they came): verify, then put in place.
    return tracer.span('store.commit', { 'stevedore.digest': this.expected?.value ?? 'unknown', 'stevedore.size': this.written }, () => this.commitNow(expectedSize));
  }

  private async commitNow(expectedSize?: number): Promise<CommitResult> {
    if (this.state !== 'writing') throw this.failure ?? new Error('blob writer already committed');
    if (this.errored) {
      // A write failed (a full disk): no finish will come.
      await this.abort(this.errored);
      throw this.errored;
    }
    if (!this.writableFinished) {
      await new Promise<void>((resolve, reject) => {
        this.once('finish', resolve);
        this.once('error', reject);
        this.end();
      });
    }
    this.forgetRecent();
    const hex = this.hash.digest('hex');
    const actual: Digest = { algorithm: this.algorithm, hex, value: `${this.algorithm}:${hex}` };
    if (expectedSize !== undefined && expectedSize !== this.written) {
      const err = new SizeInvalidError(`expected ${expectedSize} bytes, received ${this.written}`);
      await this.abort(err);
      throw err;
    }
    if (this.expected && this.expected.value !== actual.value) {
      const err = new DigestMismatchError(`content does not match ${this.expected.value} (got ${actual.value})`);
      await this.abort(err);
      throw err;
    }
    this.verified = true;
    this.wakeFollowers();
    this.events.emit('verified');
    await this.closeFile();
    let finalPath: string;
    if (this.publish) {
      try {
        await this.publish(actual, this.written);
      } catch (err) {
        await this.abort(err as Error);
        throw err;
      }
      finalPath = this.tmpPath;
    } else {
      finalPath = this.resolveFinal(actual);
      try {
        await fsp.mkdir(path.dirname(finalPath), { recursive: true, mode: DIR_MODE });
        await fsp.rename(this.tmpPath, finalPath);
      } catch (err) {
        // A new directory may need a block the disk no longer has: nothing stored, the temp file removed.
        const failure = isNoSpace(err) ? new StorageFullError(`the store's disk is full: ${actual.value} could not be put in place`, { cause: err }) : (err as Error);
        await this.abort(failure);
        throw failure;
      }
    }
    this.finalPath = finalPath;
    this.state = 'committed';
    this.onCommitted(actual, this.written);
    this.wakeFollowers();
    this.events.emit('committed', finalPath);
    return { digest: actual.value, size: this.written, path: finalPath };
  }

  /**
   * Says no new follower will come (its download is forgotten): a backend that keeps the temp file
   * after the commit for followers (S3) may delete it now.
   */
  release(): void {
    this.events.emit('released');
  }

  /** Stops writing, deletes the temp file and fails every follower. Safe to call more than once. */
  async abort(reason: Error): Promise<void> {
    if (this.state !== 'writing') return;
    this.state = 'failed';
    this.failure = reason;
    this.forgetRecent();
    if (!this.destroyed) this.destroy();
    // The temp file may still be on its way: removed before it exists, it would be left behind.
    await this.created.catch(() => undefined);
    await this.closeFile();
    if (!this.keepFileOnAbort) await fsp.rm(this.tmpPath, { force: true });
    this.wakeFollowers(reason);
    this.events.emit('failed', reason);
  }

  private async closeFile(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (fh) await fh.close().catch(() => undefined);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    // Followers are failed by abort(); destroy alone (e.g. pipeline error) must lead to abort too.
    if (this.state === 'writing') {
      this.abort(err ?? new Error('blob writer destroyed')).then(() => callback(err), () => callback(err));
      return;
    }
    callback(err);
  }

  /**
   * Sends bytes [start, end] (inclusive; end omitted: to the end) to `dest` as the file grows,
   * from the recent chunks in memory when it keeps up, else from the file with file-sender's pooled
   * buffers. The last byte is released only once the blob verified; a failed blob rejects (and the
   * caller destroys `dest`).
   */
  async sendTo(dest: Writable, start = 0, end?: number): Promise<void> {
    const fh = await this.openForReading();
    try {
      await sendFileRange(fh, dest, start, end ?? Infinity, {
        available: () => {
          if (this.state === 'failed') throw this.failure ?? new Error('download failed');
          return this.releasedBytes();
        },
        complete: () => this.state === 'committed' || this.releasedAll(),
        waitForMore: () => this.nextEvent(),
        inMemory: (pos, limit, max) => this.recentRange(pos, limit, max),
      });
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  /**
   * Resolves on the next progress or commit; rejects if the blob fails. Every follower waits on the
   * same promise: one allocation per chunk written, however many clients follow.
   */
  private nextEvent(): Promise<void> {
    if (this.state === 'failed') return Promise.reject(this.failure ?? new Error('download failed'));
    if (this.state === 'committed' || this.releasedAll()) return Promise.resolve();
    return this.next.wait();
  }

  private wakeFollowers(err?: Error): void {
    this.next.fire(err);
  }

  /** Opens the file once (tmp, or final once committed); the descriptor survives the rename. */
  async openForReading(): Promise<fsp.FileHandle> {
    // A follower may come before the temp file was created.
    if (this.state === 'writing') await this.created;
    for (let attempt = 0; attempt < 3; attempt++) {
      if (this.state === 'failed') throw this.failure ?? new Error('download failed');
      const p = this.state === 'committed' ? this.finalPath! : this.tmpPath;
      try {
        return await fsp.open(p, 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    throw this.failure ?? new Error('blob file vanished');
  }

  /**
   * A stream of bytes [start, end] (inclusive, end optional) that follows the file as it grows. Ends
   * when the writer commits and every byte has been read; errors when the writer fails.
   */
  createReader(start = 0, end?: number): Readable {
    return new GrowingFileReader(this, start, end);
  }
}

const READ_CHUNK = 256 * 1024;

class GrowingFileReader extends Readable {
  private fh: fsp.FileHandle | null = null;
  private pos: number;
  private readonly end: number | undefined;
  private readonly writer: BlobWriter;
  private waiting: (() => void) | null = null;
  private readonly wake = (): void => {
    const w = this.waiting;
    this.waiting = null;
    w?.();
  };

  constructor(writer: BlobWriter, start: number, end: number | undefined) {
    super({ highWaterMark: READ_CHUNK });
    this.writer = writer;
    this.pos = start;
    this.end = end;
    writer.events.on('progress', this.wake);
    writer.events.on('verified', this.wake);
    writer.events.on('committed', this.wake);
    writer.events.on('failed', this.wake);
  }

  override _construct(callback: (error?: Error | null) => void): void {
    this.openFile().then(() => callback(), callback);
  }

  private async openFile(): Promise<void> {
    this.fh = await this.writer.openForReading();
  }

  override _read(): void {
    this.readMore().catch((err: Error) => this.destroy(err));
  }

  private async readMore(): Promise<void> {
    for (;;) {
      if (this.destroyed) return;
      const w = this.writer;
      if (w.state === 'failed') {
        this.destroy(w.failure ?? new Error('download failed'));
        return;
      }
      const available = w.releasedBytes();
      const limit = this.end === undefined ? available : Math.min(available, this.end + 1);
      if (this.end !== undefined && this.pos > this.end) {
        this.push(null);
        return;
      }
      if (this.pos < limit) {
        const len = Math.min(READ_CHUNK, limit - this.pos);
        const buf = Buffer.allocUnsafe(len);
        const { bytesRead } = await this.fh!.read(buf, 0, len, this.pos);
        if (bytesRead === 0) throw new Error('short read from growing file');
        this.pos += bytesRead;
        this.push(bytesRead === len ? buf : buf.subarray(0, bytesRead));
        return;
      }
      if (w.state === 'committed' || w.releasedAll()) {
        this.push(null);
        return;
      }
      await new Promise<void>((resolve) => {
        this.waiting = resolve;
      });
    }
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.writer.events.off('progress', this.wake);
    this.writer.events.off('verified', this.wake);
    this.writer.events.off('committed', this.wake);
    this.writer.events.off('failed', this.wake);
    this.wake();
    const fh = this.fh;
    this.fh = null;
    if (fh) fh.close().then(() => callback(err), () => callback(err));
    else callback(err);
  }
}
