/**
 * The latest bytes of a download, kept in memory for the clients following it (blob-writer.ts,
 * `keepRecent`): those keeping up are sent these views, one copy for all of them, instead of each
 * reading the temp file into buffers of its own.
 *
 * The bytes are copied into pooled slabs rather than kept as the network's own chunks. A network
 * chunk kept for the window outlives two scavenges, is promoted to the old generation, and its
 * memory comes back only at the next full GC, which V8 starts once tens of MiB of such buffers
 * piled up: in a cold pull by 20 clients (bench scenario 5) the dead chunks were 38 of the 58 MiB
 * of buffers at the peak. Copied, a chunk dies young (a scavenge frees it within milliseconds of
 * its write to the file), and the slabs are reused, never left to the GC.
 *
 * The slabs are buffers of the send pool (send-buffers.ts). A slab leaves the window when newer
 * bytes fill enough others; it goes back to the pool only once every view of it handed out is
 * released (`Lease.release`, when the destination's write is called back: nothing references it
 * any more). An abandoned lease (a write that failed, or whose callback never came) or one never
 * settled keeps its slabs from ever being reused.
 */
import { dropSendBuffer, giveSendBuffer, SEND_CHUNK_BUSY, takeSendBuffer } from './send-buffers.js';

/** Bytes per slab (a buffer of the send pool, send-buffers.ts): a window of 2 MiB is 8 of them and the one being filled. */
export const RECENT_SLAB = SEND_CHUNK_BUSY;

interface Slab {
  readonly buf: Buffer;
  /** Offset in the blob of the slab's first byte. */
  readonly start: number;
  filled: number;
  /** Views handed out and not released yet. */
  refs: number;
  /** Out of its window: back to the pool when `refs` is 0. */
  retired: boolean;
  /** A view of it was abandoned (may still be referenced): never pooled again. */
  tainted: boolean;
}

/** Views of bytes in memory, valid until released or abandoned (exactly one of them, once). */
export interface Lease {
  readonly views: Buffer[];
  /** Nothing references the views any more: their slabs may be reused. */
  release(): void;
  /** The views may still be referenced (a write that failed or never completed): their slabs are never reused. */
  abandon(): void;
}

function takeSlab(start: number): Slab {
  // The pool may give a larger buffer, or a smaller one past its budget: the slab is what it got.
  const buf = takeSendBuffer(RECENT_SLAB, RECENT_SLAB);
  return { buf, start, filled: 0, refs: 0, retired: false, tainted: false };
}

/** Retired and no view of it out: back to the pool, or written off when a view of it was abandoned. */
function recycle(s: Slab): void {
  if (!s.retired || s.refs > 0) return;
  if (s.tainted) dropSendBuffer(s.buf);
  else giveSendBuffer(s.buf);
}

export class RecentBytes {
  private slabs: Slab[] = [];
  /** Bytes in `slabs`. */
  private bytes = 0;

  /** Keeps at least the latest `keep` bytes (and less than a slab more). */
  constructor(private readonly keep: number) {}

  /** Copies `chunks`, which follow each other in the blob from offset `start`. */
  append(chunks: readonly Buffer[], start: number): void {
    let at = start;
    for (const c of chunks) {
      let off = 0;
      while (off < c.length) {
        let s = this.slabs.at(-1);
        if (!s || s.filled === s.buf.length || s.start + s.filled !== at) {
          // Not contiguous with what is kept (never, in a download's order): start over from here.
          if (s && s.start + s.filled !== at) this.clear();
          s = takeSlab(at);
          this.slabs.push(s);
        }
        const n = c.copy(s.buf, s.filled, off, Math.min(c.length, off + s.buf.length - s.filled));
        s.filled += n;
        off += n;
        at += n;
        this.bytes += n;
      }
    }
    while (this.slabs.length > 1 && this.bytes - this.slabs[0]!.filled >= this.keep) {
      const old = this.slabs.shift()!;
      this.bytes -= old.filled;
      old.retired = true;
      recycle(old);
    }
  }

  /**
   * Bytes [pos, limit) (at most `max`) starting exactly at `pos`, as views leased until released;
   * null when `pos` is not among the bytes kept (then they are read from the file).
   */
  range(pos: number, limit: number, max: number): Lease | null {
    const slabs = this.slabs;
    if (slabs.length === 0 || pos < slabs[0]!.start || pos >= limit) return null;
    let k = slabs.length - 1;
    while (k > 0 && slabs[k]!.start > pos) k--;
    const views: Buffer[] = [];
    const used: Slab[] = [];
    let at = pos;
    const stop = Math.min(limit, pos + max);
    for (; k < slabs.length && at < stop; k++) {
      const s = slabs[k]!;
      const from = at - s.start;
      if (from >= s.filled) continue;
      const to = Math.min(s.filled, stop - s.start);
      views.push(s.buf.subarray(from, to));
      used.push(s);
      s.refs++;
      at = s.start + to;
    }
    if (views.length === 0) return null;
    let done = false;
    const end = (taint: boolean): void => {
      if (done) return;
      done = true;
      for (const s of used) {
        s.refs--;
        if (taint) s.tainted = true;
        recycle(s);
      }
    };
    return { views, release: () => end(false), abandon: () => end(true) };
  }

  /** Forgets every byte kept (slabs with views out go back to the pool once released). */
  clear(): void {
    for (const s of this.slabs) {
      s.retired = true;
      recycle(s);
    }
    this.slabs = [];
    this.bytes = 0;
  }
}
