/**
 * Copies a byte range of an open file to a writable (an HTTP response) through buffers from a
 * shared pool: at most two chunks per transfer are in flight (one being read while the other is
 * written), and each buffer goes back to the pool as soon as the destination has flushed it (the
 * write callback). No per-chunk allocation, so warm serving neither churns the GC nor grows memory
 * with the number of clients, and reading overlaps writing.
 *
 * The same loop follows a file that is still being written (a download in progress): `available`
 * says how far the file may be read now, `waitForMore` resolves when that changes, and `inMemory`
 * hands out the download's latest bytes (recent-bytes.ts), which a follower keeping up writes as
 * they are (shared by every such follower) instead of reading them back. A follower waiting for more holds no buffer:
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
import { dropSendBuffer as drop, giveSendBuffer as give, SEND_BUDGET, SEND_CHUNK_SMALL, SIZES, takeSendBuffer as take } from './send-buffers.js';
import type { Lease } from './recent-bytes.js';

let active = 0;

/** The largest chunk with which two per transfer running now fit the budget. */
function chunkSize(): number {
  return SIZES.findLast((s) => 2 * active * s <= SEND_BUDGET) ?? SEND_CHUNK_SMALL;
}

export interface Follow {
  /** Bytes of the file that may be read now (exclusive end offset). */
  available(): number;
  /** True when the file is complete: `available()` is its size and nothing more will come. */
  complete(): boolean;
  /** Resolves when more may be available, or rejects when the file will never be complete. */
  waitForMore(): Promise<void>;
  /**
   * Bytes [pos, limit) (at most `max`) as views starting at `pos`, unchanged until their lease is
   * released (once their write is called back); null when they are not in memory (then they are
   * read from the file).
   */
  inMemory?(pos: number, limit: number, max: number): Lease | null;
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
  /** Writes handed to `dest` (pooled buffers, leased views) whose callbacks have not come yet. */
  const pending = new Set<Lease>();
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
      const lease = follow?.inMemory?.(pos, limit, size);
      if (lease) {
        // Shared with every other follower: written as they are (one writev), no buffer taken.
        inFlight[i] = writeLease(dest, lease, pending);
        inFlight[i]!.catch(() => undefined);
        for (const v of lease.views) pos += v.length;
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
      // The buffer back to the pool once written, written off if the write fails or never completes.
      inFlight[i] = writeLease(dest, { views: [chunk], release: () => give(buf), abandon: () => drop(buf) }, pending);
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
    // got the connection never calls them at all): their buffers and leased views may still be
    // referenced, so they are written off, never pooled.
    for (const l of pending) l.abandon();
    pending.clear();
  }
}

/**
 * Writes a lease's views (several: corked, one writev); settles with the last write, which completes after
 * the others. The lease is released when that write is called back without an error, abandoned
 * when with one (the views may still be referenced: their memory is never reused), and left in
 * `pending` until then (the transfer abandons what is left there when it ends).
 */
function writeLease(dest: Writable, lease: Lease, pending: Set<Lease>): Promise<void> {
  const { views } = lease;
  pending.add(lease);
  return new Promise<void>((resolve, reject) => {
    const corked = views.length > 1;
    if (corked) dest.cork();
    for (let k = 0; k < views.length - 1; k++) dest.write(views[k]!);
    dest.write(views[views.length - 1]!, (err) => {
      // Already abandoned when the transfer ended without this callback (see sendFileRange).
      if (pending.delete(lease)) {
        if (err) lease.abandon();
        else lease.release();
      }
      if (err) reject(err);
      else resolve();
    });
    if (corked) dest.uncork();
  });
}
