/**
 * Parallel ranged reads of one large object (s3-backend.ts, `readThreshold`): bytes [start, end]
 * are cut into parts of `partSize`, up to `concurrency` parts are fetched at once by ranged GETs,
 * and the parts are written to the destination in order, as fast as it takes them.
 *
 * Memory: a part fetched ahead of the one being written is held in memory until its turn, so each
 * one fetched ahead takes `partSize` bytes from a budget shared by every stream of the process
 * (`ReadBudget`, `readMemory`) before it is asked for, and gives them back once written. A stream
 * that gets none waits for it (first come, first served) — but never stalls: the part it must write
 * next, if not fetched ahead, is fetched "direct", streamed at the destination's pace with only a
 * small buffer, as a small blob is. So one stream holds at most `concurrency` × `partSize` of the
 * budget, all of them together at most the budget, and a slow client holding its share cannot stop
 * the others.
 *
 *   part:    0 (direct)      1 (ahead)       2 (ahead)       3 (ahead)       4 (waits for budget)
 *            ├── writing ──┤ ├─ buffered ──┤ ├─ buffered ──┤ ├─ arriving ──┤
 *
 * Failures: a part that fails (a reset, a short body, a 5xx) is asked again from the byte it
 * reached, at most `retries` times; then the whole read fails (the destination is cut: its length
 * was promised). Every part after the first is asked with `If-Match` on the first answer's ETag:
 * an object replaced meanwhile fails the read instead of splicing two versions. The destination
 * closing (the client hung up) aborts every part in flight and gives their budget back.
 */
import { buffersPassed } from '../../util/buffer-churn.js';
import type { ServerResponse } from 'node:http';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { DestinationClosedError } from '../../util/destination-closed.js';
import type { PooledBody, PooledChunk } from './pooled-get.js';

/**
 * What the parts are read from (S3: ranged GetObject through the SDK, or pooled-get.ts; tests: a
 * programmable source). A `pooled` body's chunks are views of pooled memory, each released once
 * the destination's write of it was called back.
 */
export interface PartSource {
  /** Bytes [start, end] of the object, only if its ETag is still `ifMatch` (null: any version). */
  get(start: number, end: number, ifMatch: string | null, signal: AbortSignal): Promise<{ body: Readable } | { pooled: PooledBody }>;
  /** Whether a failure says the object is no longer the version being read (not retried). */
  changed(err: unknown): boolean;
}

/** The object changed between parts (If-Match failed): the read is cut. */
export class ObjectChangedError extends Error {
  readonly code = 'OBJECT_CHANGED';
  constructor(cause: unknown) {
    super('the object changed while it was being read', { cause });
  }
}

/** What is buffered at most by a part fetched direct (not counted in the budget), and the chunk size of those above it. */
const DIRECT_BUFFER = 256 * 1024;
/** Bytes written to the destination at once at most (corked). */
const WRITE_BATCH = 1024 * 1024;

/**
 * Bytes that reads ahead may hold, shared by every stream of a process: granted first come, first
 * served; a grant never takes the total past the limit, except for a stream's single part larger
 * than the whole limit when nothing else is held.
 */
export class ReadBudget {
  private used = 0;
  private peakUsed = 0;
  private waited = 0;
  private readonly queue: Array<{ n: number; grant: () => void }> = [];

  constructor(readonly limit: number) {}

  /** Takes `n` bytes, waiting behind earlier requests; rejects (taking nothing) when `signal` aborts. */
  take(n: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    if (this.queue.length === 0 && this.fits(n)) {
      this.grant(n);
      return Promise.resolve();
    }
    this.waited++;
    return new Promise<void>((resolve, reject) => {
      const entry = {
        n,
        grant: (): void => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        const i = this.queue.indexOf(entry);
        if (i >= 0) this.queue.splice(i, 1);
        reject(signal.reason as Error);
        this.serve(); // the one behind may fit now
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.queue.push(entry);
    });
  }

  give(n: number): void {
    this.used -= n;
    this.serve();
  }

  /** Bytes held now, the most ever held, the limit, how many requests had to wait, and how many wait now. */
  stats(): { inUse: number; peak: number; limit: number; waited: number; waiting: number } {
    return { inUse: this.used, peak: this.peakUsed, limit: this.limit, waited: this.waited, waiting: this.queue.length };
  }

  private fits(n: number): boolean {
    return this.used + n <= this.limit || this.used === 0;
  }

  private grant(n: number): void {
    this.used += n;
    this.peakUsed = Math.max(this.peakUsed, this.used);
  }

  private serve(): void {
    while (this.queue.length > 0 && this.fits(this.queue[0]!.n)) {
      const e = this.queue.shift()!;
      this.grant(e.n);
      e.grant();
    }
  }
}

/** A chunk of a part: a buffer of its own, or a view of pooled memory to release after its write. */
type PartChunk = Buffer | PooledChunk;

function bytesOf(c: PartChunk): Buffer {
  return Buffer.isBuffer(c) ? c : c.data;
}

/** One part: its bytes as they arrive, until the writer takes them. */
class Part {
  private readonly chunks: PartChunk[] = [];
  private queued = 0;
  /** Bytes received (a retry asks from here). */
  received = 0;
  ended = false;
  error: Error | null = null;
  private body: Readable | null = null;
  private pooled: PooledBody | null = null;
  private pausedPooled = false;
  private wake: (() => void) | null = null;
  /** Settles when the fetch is over (ended, failed, or aborted). */
  fetched: Promise<void> = Promise.resolve();

  constructor(
    readonly start: number,
    readonly end: number,
    /** Budget bytes it holds (0: fetched direct). */
    public reserved: number,
  ) {}

  get length(): number {
    return this.end - this.start + 1;
  }

  /** Reads a pooled body (bytes [start + received, end]) into the queue; resolves when it ended with every byte. */
  consumePooled(body: PooledBody, signal: AbortSignal): Promise<void> {
    this.pooled = body;
    const max = this.reserved > 0 ? Infinity : DIRECT_BUFFER;
    return new Promise<void>((resolve, reject) => {
      let over = false;
      const done = (err?: Error): void => {
        if (over) return;
        over = true;
        signal.removeEventListener('abort', onAbort);
        this.pooled = null;
        this.pausedPooled = false;
        if (err) {
          body.destroy(err);
          reject(err);
        } else resolve();
      };
      const onAbort = (): void => done(signal.reason as Error);
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      body.consume({
        chunk: (c) => {
          if (over) {
            c.release();
            return false;
          }
          if (this.received + c.data.length > this.length) {
            c.release();
            done(new Error(`part ${this.start}-${this.end}: more bytes than asked for`));
            return false;
          }
          this.received += c.data.length;
          this.chunks.push(c);
          this.queued += c.data.length;
          this.notify();
          if (this.queued >= max) {
            this.pausedPooled = true;
            return false;
          }
          return true;
        },
        end: () => done(this.received === this.length ? undefined : new Error(`part ${this.start}-${this.end}: the body ended after ${this.received} of ${this.length} bytes`)),
        error: (err) => done(err),
      });
    });
  }

  /** Reads `body` (bytes [start + received, end]) into the queue; resolves when it ended with every byte. */
  consume(body: Readable, signal: AbortSignal): Promise<void> {
    this.body = body;
    const max = this.reserved > 0 ? Infinity : DIRECT_BUFFER;
    return new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => {
        body.off('data', onData);
        body.off('end', onEnd);
        body.off('error', onError);
        body.off('close', onClose);
        signal.removeEventListener('abort', onAbort);
        this.body = null;
        if (err) {
          body.destroy();
          reject(err);
        } else resolve();
      };
      const onData = (chunk: Buffer): void => {
        if (this.received + chunk.length > this.length) return done(new Error(`part ${this.start}-${this.end}: more bytes than asked for`));
        this.received += chunk.length;
        this.chunks.push(chunk);
        this.queued += chunk.length;
        if (this.queued >= max) body.pause();
        this.notify();
      };
      const onEnd = (): void => done(this.received === this.length ? undefined : new Error(`part ${this.start}-${this.end}: the body ended after ${this.received} of ${this.length} bytes`));
      const onError = (err: Error): void => done(err);
      const onClose = (): void => done(new Error(`part ${this.start}-${this.end}: the body closed after ${this.received} of ${this.length} bytes`));
      const onAbort = (): void => done(signal.reason as Error);
      if (signal.aborted) return onAbort();
      body.on('data', onData);
      body.once('end', onEnd);
      body.once('error', onError);
      body.once('close', onClose);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The next chunk to write, or null when none is here yet. */
  take(): PartChunk | null {
    const c = this.chunks.shift();
    if (!c) return null;
    this.queued -= bytesOf(c).length;
    if (this.body?.isPaused() && this.queued < DIRECT_BUFFER) this.body.resume();
    if (this.pausedPooled && this.queued < DIRECT_BUFFER) {
      this.pausedPooled = false;
      this.pooled?.resume();
    }
    return c;
  }

  /** All of it was taken. */
  get drained(): boolean {
    return this.ended && this.chunks.length === 0;
  }

  /** Resolves when a chunk arrives, the part ends or fails. */
  waitForMore(): Promise<void> {
    return new Promise<void>((resolve) => (this.wake = resolve));
  }

  notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  drop(): void {
    for (const c of this.chunks.splice(0)) if (!Buffer.isBuffer(c)) c.release();
    this.queued = 0;
  }
}

/** The answer that found the object, bytes [0, end]: a stream, or a body received into pooled memory. */
export type FirstAnswer = ({ body: Readable } | { pooled: PooledBody }) & { end: number };

/** Gives up an answer not used. */
export function destroyFirst(f: FirstAnswer): void {
  if ('pooled' in f) f.pooled.destroy();
  else f.body.destroy();
}

export interface RangedReadOptions {
  source: PartSource;
  budget: ReadBudget;
  /** Bytes [start, end] (inclusive) of the object. */
  start: number;
  end: number;
  partSize: number;
  /** Parts fetched at once (the one being written included). */
  concurrency: number;
  /** How many times a failed part is asked again. */
  retries: number;
  /** The object's ETag when first asked (If-Match for every part); null: not checked. */
  etag: string | null;
  /** A body already asked for, of bytes [0, end] (the GET that found the object): used as the first part if it is exactly that part, else destroyed. */
  first?: FirstAnswer | null;
  /**
   * Pooled chunks are copied into buffers of their own before they are written (and released at
   * once): for a destination that keeps what is written after calling the write back (a PassThrough).
   */
  copyPooled?: boolean;
  /** Told of each retry (a log line). */
  onRetry?: (err: unknown, part: { start: number; end: number; attempt: number }) => void;
  /** Delay before retry n (ms): default 100 × n. */
  retryDelayMs?: (attempt: number) => number;
}

/**
 * Writes bytes [start, end] of the object to `dest` in order, without ending it. Rejects when a
 * part fails for good, the object changed (ObjectChangedError), or `dest` closes
 * (DestinationClosedError); by then every part was aborted and all budget given back.
 */
export async function writeRanged(dest: Writable, o: RangedReadOptions): Promise<void> {
  const ac = new AbortController();
  const signal = ac.signal;
  const socket = (dest as Partial<ServerResponse>).req?.socket;
  const onGone = (): void => {
    if (!dest.writableFinished) ac.abort(new DestinationClosedError());
  };
  dest.once('close', onGone);
  socket?.once('close', onGone);
  const n = Math.ceil((o.end - o.start + 1) / o.partSize);
  // The answer already asked for serves as the first part only if it is exactly that part.
  let first = o.first ?? null;
  if (first && !(o.start === 0 && first.end === Math.min(o.end, o.partSize - 1))) {
    destroyFirst(first);
    first = null;
  }
  const reserve = Math.min(o.partSize, o.end - o.start + 1);
  const parts: Array<Part | undefined> = [];
  let launched = 0;
  let writing = 0;
  let moved: (() => void) | null = null;
  const fetches: Array<Promise<void>> = [];
  // An abort (the client gone, a part failed for good) wakes the writer wherever it waits.
  const onAbort = (): void => {
    for (const p of parts) p?.notify();
  };
  signal.addEventListener('abort', onAbort, { once: true });

  const fetchPart = async (p: Part): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      try {
        if (first && p.start === 0 && p.received === 0) {
          const f = first;
          first = null;
          if ('pooled' in f) await p.consumePooled(f.pooled, signal);
          else await p.consume(f.body, signal);
        } else {
          const got = await o.source.get(p.start + p.received, p.end, o.etag, signal);
          if ('pooled' in got) await p.consumePooled(got.pooled, signal);
          else await p.consume(got.body, signal);
        }
        p.ended = true;
        return;
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        if (o.source.changed(err)) throw new ObjectChangedError(err);
        if (attempt >= o.retries) throw err;
        o.onRetry?.(err, { start: p.start + p.received, end: p.end, attempt: attempt + 1 });
        await sleep(o.retryDelayMs?.(attempt + 1) ?? 100 * (attempt + 1), undefined, { signal });
      }
    }
  };
  const launch = (i: number, reserved: number): void => {
    const start = o.start + i * o.partSize;
    const p = new Part(start, Math.min(o.end, start + o.partSize - 1), reserved);
    parts[i] = p;
    launched++;
    p.fetched = fetchPart(p).then(
      () => p.notify(),
      (err: unknown) => {
        p.error = err as Error;
        p.notify();
      },
    );
    fetches.push(p.fetched);
  };
  const release = (p: Part): void => {
    p.drop();
    if (p.reserved > 0) o.budget.give(p.reserved);
    p.reserved = 0;
  };
  // Takes budget for the parts ahead of the one being written, in order, within the window.
  const ahead = async (): Promise<void> => {
    while (!signal.aborted && launched < n) {
      if (launched - writing >= o.concurrency) {
        await new Promise<void>((resolve) => (moved = resolve));
        continue;
      }
      await o.budget.take(reserve, signal);
      if (signal.aborted || launched >= n) {
        o.budget.give(reserve);
        return;
      }
      launch(launched, reserve);
    }
  };

  let prefetch: Promise<void> = Promise.resolve();
  try {
    if (dest.destroyed || socket?.destroyed) throw new DestinationClosedError();
    // The first part is fetched direct: it is written as it arrives.
    launch(0, 0);
    if (n > 1 && o.concurrency > 1) prefetch = ahead();
    prefetch.catch(() => undefined);
    for (writing = 0; writing < n; writing++) {
      const m = moved as (() => void) | null;
      moved = null;
      m?.();
      if (writing >= launched) launch(writing, 0); // not fetched ahead (no budget): direct
      const p = parts[writing]!;
      for (;;) {
        if (signal.aborted) throw signal.reason;
        // The chunks already here go out together (corked: one writev rather than a write each).
        let chunk = p.take();
        if (chunk) {
          let ok = true;
          let batch = 0;
          let dropped = 0;
          dest.cork();
          for (; chunk; chunk = ok && batch < WRITE_BATCH ? p.take() : null) {
            if (Buffer.isBuffer(chunk)) {
              ok = dest.write(chunk);
              batch += chunk.length;
              dropped += chunk.length;
            } else if (o.copyPooled) {
              const copy: Buffer = Buffer.from(chunk.data);
              chunk.release();
              ok = dest.write(copy);
              batch += copy.length;
              dropped += copy.length;
            } else {
              const c: PooledChunk = chunk;
              ok = dest.write(c.data, (err) => c.release(!err));
              batch += c.data.length;
            }
          }
          dest.uncork();
          // Buffers of their own are dropped once written (pooled ones are reused): see buffer-churn.ts.
          buffersPassed(dropped);
          if (!ok) await drained(dest, signal);
          continue;
        }
        if (p.error) throw p.error;
        if (p.drained) break;
        await p.waitForMore(); // an abort wakes it too (onAbort)
      }
      release(p);
      parts[writing] = undefined;
    }
  } catch (err) {
    if (!signal.aborted) ac.abort(err);
    throw signal.aborted && signal.reason instanceof DestinationClosedError ? signal.reason : err;
  } finally {
    if (!signal.aborted) ac.abort(new Error('read over'));
    const m = moved as (() => void) | null;
    m?.();
    if (first) destroyFirst(first);
    await prefetch.catch(() => undefined);
    await Promise.allSettled(fetches);
    for (const p of parts) if (p) release(p);
    dest.off('close', onGone);
    socket?.off('close', onGone);
  }
}

/** Resolves when `dest` drained; rejects when `signal` aborts first. */
function drained(dest: Writable, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const done = (): void => {
      dest.off('drain', done);
      signal.removeEventListener('abort', onAbort);
      resolve();
    };
    const onAbort = (): void => {
      dest.off('drain', done);
      reject(signal.reason as Error);
    };
    if (signal.aborted) return onAbort();
    dest.once('drain', done);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
