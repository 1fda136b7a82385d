/**
 * Copies a byte range of an open file to a writable (an HTTP response) with two reusable buffers
 * from a shared pool: one is read into while the other is being written, and a buffer goes back
 * to the pool only when the destination has flushed it (the write callback). No per-chunk
 * allocation, so warm serving neither churns the GC nor grows memory with the number of clients,
 * and reading overlaps writing.
 *
 * The same loop follows a file that is still being written (a download in progress): `available`
 * says how far the file may be read now, and `waitForMore` resolves when that changes.
 */
import type { promises as fsp } from 'node:fs';
import type { Writable } from 'node:stream';

/**
 * Chunk size by load: a few transfers get large chunks (fewer syscalls, full speed on one
 * connection); many at once get smaller ones, so memory stays flat (64 transfers × 2 × 256 KiB).
 */
export const SEND_CHUNK = 512 * 1024;
const SEND_CHUNK_BUSY = 256 * 1024;
const BUSY_TRANSFERS = 16;
/** Buffers kept for reuse per size; more are allocated under load and dropped when returned past this. */
const POOL_MAX = 32;
const pools = new Map<number, Buffer[]>([
  [SEND_CHUNK, []],
  [SEND_CHUNK_BUSY, []],
]);
let active = 0;

function take(size: number): Buffer {
  return pools.get(size)!.pop() ?? Buffer.allocUnsafeSlow(size);
}

function give(b: Buffer): void {
  const pool = pools.get(b.length);
  if (pool && pool.length < POOL_MAX) pool.push(b);
}

export interface Follow {
  /** Bytes of the file that may be read now (exclusive end offset). */
  available(): number;
  /** True when the file is complete: `available()` is its size and nothing more will come. */
  complete(): boolean;
  /** Resolves when more may be available, or rejects when the file will never be complete. */
  waitForMore(): Promise<void>;
}

export class DestinationClosedError extends Error {
  readonly code = 'ERR_STREAM_PREMATURE_CLOSE';
  constructor() {
    super('the client went away');
  }
}

/**
 * Sends bytes [start, end] (inclusive; Infinity: to the end of a followed file) of `fh` to
 * `dest`, then ends `dest`. Rejects (leaving `dest` to the caller to destroy) when reading fails,
 * the destination closes, or `follow` says the file will never be complete.
 */
export async function sendFileRange(fh: fsp.FileHandle, dest: Writable, start: number, end: number, follow?: Follow): Promise<void> {
  active++;
  const size = active > BUSY_TRANSFERS ? SEND_CHUNK_BUSY : SEND_CHUNK;
  const buffers: [Buffer, Buffer] = [take(size), take(size)];
  const inFlight: [Promise<void> | null, Promise<void> | null] = [null, null];
  let closed = false;
  let markClosed!: () => void;
  // Settles when the destination closes: a write it never completes cannot hang the sender.
  const closedSignal = new Promise<never>((_, reject) => {
    markClosed = () => reject(new DestinationClosedError());
  });
  closedSignal.catch(() => undefined);
  const onClose = (): void => {
    closed = true;
    markClosed();
  };
  dest.once('close', onClose);
  const settle = (p: Promise<void>): Promise<void> => Promise.race([p, closedSignal]);
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
      const buf = buffers[i]!;
      const want = Math.min(size, limit - pos);
      const { bytesRead } = await fh.read(buf, 0, want, pos);
      if (bytesRead === 0) throw new Error(`short read at ${pos} (file shorter than expected)`);
      pos += bytesRead;
      const chunk = bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
      inFlight[i] = new Promise<void>((resolve, reject) => {
        dest.write(chunk, (err) => (err ? reject(err) : resolve()));
      });
      // Observed below or on the next turn of this buffer; never unhandled.
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
    // Every write completed: both buffers are free again.
    for (const b of buffers) give(b);
  } finally {
    active--;
    dest.off('close', onClose);
    // On failure the buffers are dropped, not pooled: a write that never completed may still
    // reference one.
  }
}
