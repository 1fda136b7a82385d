/**
 * Copies a byte range of an open file to a writable (an HTTP response) through buffers from a
 * shared pool: at most two chunks per transfer are in flight (one being read while the other is
 * written), and each buffer goes back to the pool as soon as the destination has flushed it (the
 * write callback). No per-chunk allocation, so warm serving neither churns the GC nor grows memory
 * with the number of clients, and reading overlaps writing.
 *
 * The same loop follows a file that is still being written (a download in progress): `available`
 * says how far the file may be read now, `waitForMore` resolves when that changes, and `inMemory`
 * hands out the download's latest bytes, which a follower keeping up writes as they are (shared by
 * every such follower) instead of reading them back. A follower waiting for more holds no buffer:
 * buffers are taken per chunk, sized to the read, so memory follows the bytes actually moving
 * rather than the number of clients.
 *
 * The destination's contract: a write is called back only once the chunk is no longer referenced
 * (a socket: handed to the kernel, or copied into TLS records). An in-memory stream that calls back
 * at once and keeps the chunk to be read later (a PassThrough) would see its chunks overwritten by
 * later reads: copy into it (lib/cache/cluster-downloads.ts, open()).
 */
import type { promises as fsp } from 'node:fs';
import type { Writable } from 'node:stream';
import { DestinationClosedError } from '../util/destination-closed.js';
import { LowWaterPool } from '../util/low-water-pool.js';

/**
 * Chunk size by load, under one budget for every transfer of the process: a few transfers get
 * large chunks (fewer syscalls, full speed on one connection); more at once get smaller ones, so
 * that two chunks per transfer fit the budget (32 transfers × 2 × 512 KiB, 64 × 2 × 256 KiB, then
 * 64 KiB each) and memory stays flat however many clients there are.
 */
export const SEND_CHUNK = 512 * 1024;
const SEND_CHUNK_BUSY = 256 * 1024;
/** The smallest buffer: a read at the edge of a download rarely finds more than this. */
const SEND_CHUNK_SMALL = 64 * 1024;
const SIZES = [SEND_CHUNK_SMALL, SEND_CHUNK_BUSY, SEND_CHUNK] as const;
/**
 * What the send buffers of the process hold at most, in use and pooled together (past it, with
 * more than 256 transfers of 64 KiB chunks, buffers are allocated and dropped rather than kept).
 */
export const SEND_BUDGET = 32 * 1024 * 1024;
/**
 * Buffers given back stay pooled (never dropped for the GC to find later: garbage buffers are what
 * grew memory under load) while the pool and the buffers in use fit the budget. Every idleTrimMs
 * (10 s), the buffers of each size that stayed in the pool the whole time (its lowest count since
 * the last look) are released: a pool nothing took from is emptied, so a burst does not keep its
 * memory, and a busy process keeps what its load uses now rather than what its busiest moment
 * ever needed (which only grew, a step at each new peak: a slope in the soak).
 */
let idleTrimMs = 10_000;
const pools = new Map<number, LowWaterPool>(SIZES.map((size) => [size, new LowWaterPool()]));
let active = 0;
let inUseBytes = 0;
let pooledBytes = 0;
let trimTimer: NodeJS.Timeout | null = null;

/**
 * A buffer for `want` bytes: the smallest pooled size that fits (never more than `max`
 * allocated), else any larger pooled one rather than a new allocation; a smaller one (the caller
 * reads what fits) when a new allocation would take the buffers past the budget.
 */
function take(want: number, max: number): Buffer {
  const fit = SIZES.find((s) => s >= want && s <= max) ?? max;
  for (const size of SIZES) {
    if (size < fit) continue;
    const pooled = pools.get(size)!.pop();
    if (pooled) return taken(pooled);
  }
  // A new buffer only within the budget; past it (transfers that began when few ran still hold
  // larger ones), a small one: that transfer reads less per chunk meanwhile.
  if (fit > SEND_CHUNK_SMALL && inUseBytes + pooledBytes + fit > SEND_BUDGET) {
    const small = pools.get(SEND_CHUNK_SMALL)!.pop();
    return small ? taken(small) : taken(Buffer.allocUnsafeSlow(SEND_CHUNK_SMALL), false);
  }
  return taken(Buffer.allocUnsafeSlow(fit), false);
}

function taken(b: Buffer, fromPool = true): Buffer {
  if (fromPool) pooledBytes -= b.length;
  inUseBytes += b.length;
  return b;
}

/** The largest chunk with which two per transfer running now fit the budget. */
function chunkSize(): number {
  return SIZES.findLast((s) => 2 * active * s <= SEND_BUDGET) ?? SEND_CHUNK_SMALL;
}

/** Back to the pool; only for a buffer nothing references any more. */
function give(b: Buffer): void {
  inUseBytes -= b.length;
  if (pooledBytes + inUseBytes + b.length > SEND_BUDGET) return;
  pools.get(b.length)!.push(b);
  pooledBytes += b.length;
  trimTimer ??= setInterval(trimIdle, idleTrimMs).unref();
}

function trimIdle(): void {
  let left = 0;
  for (const [size, pool] of pools) {
    pooledBytes -= pool.trim() * size;
    left += pool.length;
  }
  if (left > 0) return;
  clearInterval(trimTimer!);
  trimTimer = null;
}

/** Sets how long pooled buffers may sit unused before they are released (tests). */
export function setSendBufferIdleTrim(ms: number): void {
  idleTrimMs = ms;
  if (trimTimer) clearInterval(trimTimer);
  trimTimer = null;
  for (const pool of pools.values()) pool.mark();
}

/** Drops a buffer that something may still reference (a write that failed or never completed). */
function drop(b: Buffer): void {
  inUseBytes -= b.length;
}

/** Bytes of send buffers held by transfers right now, and kept in the pool for reuse. */
export function sendBufferStats(): { inUse: number; pooled: number } {
  return { inUse: inUseBytes, pooled: pooledBytes };
}

export interface Follow {
  /** Bytes of the file that may be read now (exclusive end offset). */
  available(): number;
  /** True when the file is complete: `available()` is its size and nothing more will come. */
  complete(): boolean;
  /** Resolves when more may be available, or rejects when the file will never be complete. */
  waitForMore(): Promise<void>;
  /**
   * Bytes [pos, limit) (at most `max`) as views of memory that will never change, starting at
   * `pos`; empty when they are not in memory (then they are read from the file).
   */
  inMemory?(pos: number, limit: number, max: number): Buffer[];
}

export { DestinationClosedError };

/**
 * Sends bytes [start, end] (inclusive; Infinity: to the end of a followed file) of `fh` to
 * `dest`, then ends `dest`. Rejects (leaving `dest` to the caller to destroy) when reading fails,
 * the destination closes, or `follow` says the file will never be complete.
 */
export async function sendFileRange(fh: fsp.FileHandle, dest: Writable, start: number, end: number, follow?: Follow): Promise<void> {
  active++;
  // The two most recent writes; a third chunk waits for the older one.
  const inFlight: [Promise<void> | null, Promise<void> | null] = [null, null];
  let closed = false;
  /** Pooled buffers handed to `dest.write` whose callbacks have not come yet. */
  const writing = new Set<Buffer>();
  // The one wait in progress (the loop awaits one thing at a time), failed at once when the
  // destination closes: a write it never completes cannot hang the sender. Not Promise.race with a
  // promise that lives as long as the transfer: every race leaves a reaction on it, thousands per
  // large blob, all kept until the transfer ends.
  let failWait: ((err: Error) => void) | null = null;
  const onClose = (): void => {
    closed = true;
    // After the reactions already queued: a wait that settled just before the close stands.
    queueMicrotask(() => failWait?.(new DestinationClosedError()));
  };
  dest.once('close', onClose);
  // `p` gets its handlers first, always: a promise given up on because the client left (a write
  // that fails with ECONNRESET later, a download that fails later) must never reject unobserved.
  const settle = (p: Promise<void>): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      p.then(
        () => {
          if (failWait === reject) failWait = null;
          resolve();
        },
        (err: unknown) => {
          if (failWait === reject) failWait = null;
          reject(err instanceof Error ? err : new Error(String(err)));
        },
      );
      if (closed) reject(new DestinationClosedError());
      else failWait = reject;
    });
  try {
    let pos = start;
    let i = 0;
    copy: while (pos <= end) {
      if (closed || dest.destroyed) throw new DestinationClosedError();
      let limit = end + 1;
      if (follow) {
        let avail = follow.available();
        while (avail <= pos) {
          if (follow.complete()) break copy;
          await settle(follow.waitForMore());
          if (closed || dest.destroyed) throw new DestinationClosedError();
          avail = follow.available();
        }
        limit = Math.min(limit, avail);
      }
      if (inFlight[i]) await settle(inFlight[i]!);
      // Sized per chunk: transfers that started when few ran shrink theirs as more begin.
      const size = chunkSize();
      const views = follow?.inMemory?.(pos, limit, size);
      if (views && views.length > 0) {
        // Shared with every other follower: written as they are (one writev), no buffer taken.
        inFlight[i] = writeViews(dest, views);
        inFlight[i]!.catch(() => undefined);
        for (const v of views) pos += v.length;
        i ^= 1;
        continue;
      }
      const buf = take(Math.min(size, limit - pos), size);
      let bytesRead: number;
      try {
        ({ bytesRead } = await fh.read(buf, 0, Math.min(buf.length, limit - pos), pos));
      } catch (err) {
        give(buf);
        throw err;
      }
      if (bytesRead === 0) {
        give(buf);
        throw new Error(`short read at ${pos} (file shorter than expected)`);
      }
      pos += bytesRead;
      const chunk = bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
      writing.add(buf);
      inFlight[i] = new Promise<void>((resolve, reject) => {
        dest.write(chunk, (err) => {
          // Already written off when the transfer ended without this callback (see finally).
          if (!writing.delete(buf)) return err ? reject(err) : resolve();
          if (err) {
            drop(buf);
            reject(err);
          } else {
            give(buf);
            resolve();
          }
        });
      });
      // Observed below or on the next turn of this slot; never unhandled.
      inFlight[i]!.catch(() => undefined);
      i ^= 1;
    }
    await settle(Promise.all(inFlight.filter((p): p is Promise<void> => p !== null)).then(() => undefined));
    await settle(
      new Promise<void>((resolve, reject) => {
        if (closed || dest.destroyed) reject(new DestinationClosedError());
        else dest.end(() => resolve());
      }),
    );
  } finally {
    active--;
    dest.off('close', onClose);
    // Writes whose callbacks have not come (a client gone mid-write; a pipelined answer that never
    // got the connection never calls them at all): their buffers may still be referenced, so they
    // are written off, never pooled.
    for (const b of writing) drop(b);
    writing.clear();
  }
}

/** Writes `views` corked (one writev); settles with the last write, which completes after the others. */
function writeViews(dest: Writable, views: Buffer[]): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    dest.cork();
    for (let k = 0; k < views.length - 1; k++) dest.write(views[k]!);
    dest.write(views[views.length - 1]!, (err) => (err ? reject(err) : resolve()));
    dest.uncork();
  });
}
