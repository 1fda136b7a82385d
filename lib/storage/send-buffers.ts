/**
 * The buffers blob bytes leave the process through, pooled for the whole process under one budget:
 * file-sender.ts reads the file into them, and recent-bytes.ts keeps a download's latest bytes in
 * them for the clients following it. One pool for both: when a download completes, the slabs of its
 * window become the buffers its followers read the rest of the file into, rather than a second
 * pool's worth of memory kept beside the first.
 */
import { LowWaterPool } from '../util/low-water-pool.js';

/**
 * Chunk size by load, under one budget for every transfer of the process: a few transfers get
 * large chunks (fewer syscalls, full speed on one connection); more at once get smaller ones, so
 * that two chunks per transfer fit the budget (16 transfers × 2 × 512 KiB, 32 × 2 × 256 KiB,
 * 64 × 2 × 128 KiB, then 64 KiB each) and memory stays flat however many clients there are.
 */
export const SEND_CHUNK = 512 * 1024;
export const SEND_CHUNK_BUSY = 256 * 1024;
export const SEND_CHUNK_CROWDED = 128 * 1024;
/** The smallest buffer: a read at the edge of a download rarely finds more than this. */
export const SEND_CHUNK_SMALL = 64 * 1024;
export const SIZES = [SEND_CHUNK_SMALL, SEND_CHUNK_CROWDED, SEND_CHUNK_BUSY, SEND_CHUNK] as const;
/**
 * What the send buffers of the process hold at most, in use and pooled together (past it, with
 * more than 128 transfers of 64 KiB chunks, buffers are allocated and dropped rather than kept).
 * 16 MiB, not 32: it was the largest part of a busy process's peak one could choose (60 transfers
 * held 30 MiB of 256 KiB chunks), and warm blobs' rate with 128 KiB chunks was not
 * distinguishable from 256 KiB's in the runs that chose it (bench/RESULTS.md, "Issue 28,
 * 2026-12-07 evening").
 */
export const SEND_BUDGET = 16 * 1024 * 1024;
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
let inUseBytes = 0;
let pooledBytes = 0;
let trimTimer: NodeJS.Timeout | null = null;

/**
 * A buffer for `want` bytes: the smallest pooled size that fits (never more than `max`
 * allocated), else any larger pooled one rather than a new allocation; a smaller one (the caller
 * reads what fits) when a new allocation would take the buffers past the budget.
 */
export function takeSendBuffer(want: number, max: number): Buffer {
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

/** Back to the pool; only for a buffer nothing references any more. */
export function giveSendBuffer(b: Buffer): void {
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
export function dropSendBuffer(b: Buffer): void {
  inUseBytes -= b.length;
}

/** Bytes of send buffers held by transfers right now, and kept in the pool for reuse. */
export function sendBufferStats(): { inUse: number; pooled: number } {
  return { inUse: inUseBytes, pooled: pooledBytes };
}
