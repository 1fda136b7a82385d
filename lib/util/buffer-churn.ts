/**
 * Buffers that stream through the process and are dropped — an upstream's body written to the
 * store, a push's bytes — are freed by V8 only when it collects. With little JavaScript allocated
 * per MiB moved, its young generation fills slowly, and it collects for the buffers only at its
 * external-memory soft limit (v8-internal.h, kExternalAllocationSoftLimit: 64 MiB over what the
 * last collection left): a streaming process's resident size rose and fell by up to 64 MiB. Every
 * CHURN_STEP bytes passed through, a young-generation collection (a scavenge: well under a
 * millisecond with a young generation of little live data) frees the dead ones.
 *
 * Measured (bench s6, 20 clients on one cold 1 GiB blob, one worker): peak RSS 151–157 MiB against
 * 172–191 without; 32 and 64 MiB steps: 163–165. The step was 16 MiB while downloads kept their
 * latest chunks for followers (those outlived the collections whatever the step); since the chunks
 * die at their write (storage/recent-bytes.ts), what a step leaves is what piles up between two
 * collections: 4 MiB took the download-holding worker of scenario 5 (cold pull by 20 clients, two
 * workers) from 151.4 and 149.1 MiB to 136.7 and 138.7 (ABBA, bench/RESULTS.md), one worker's
 * 135.4/137.5 to 129.8/136.1; at most 50 such collections a second, each well under a millisecond.
 */
import { performance } from 'node:perf_hooks';
import { v8Gc, type GcFunction } from './v8-gc.js';

export const CHURN_STEP = 4 * 1024 * 1024;

/** The least time between two of these collections: at most 50 a second however fast bytes move. */
const MIN_INTERVAL_MS = 20;

let passed = 0;
let collected = 0;
let lastAt = -Infinity;
let gc: GcFunction | null = null;

/** Young-generation collections run for buffers passed through, since start. */
export function churnCollections(): number {
  return collected;
}

/** `bytes` of buffers passed through and dropped (or about to be). Never throws. */
export function buffersPassed(bytes: number): void {
  passed += bytes;
  if (passed < CHURN_STEP) return;
  const now = performance.now();
  if (now - lastAt < MIN_INTERVAL_MS) return;
  passed = 0;
  lastAt = now;
  try {
    gc ??= v8Gc();
    gc({ type: 'minor', execution: 'sync' });
    collected++;
  } catch {
    // A runtime without V8's gc options: V8 collects on its own, as it always did.
    gc = null;
    passed = -Infinity;
  }
}
