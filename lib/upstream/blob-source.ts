/**
 * Where a blob download reads its bytes from: one upstream's sources in order (upstream-sources.ts),
 * or a test's fake. The download itself (lib/cache/download.ts) resumes, verifies and stores.
 */
import type { Readable } from 'node:stream';
import type { ProgressRule } from '../util/progress.js';

export interface OpenedBody {
  size: number | null;
  start: number;
  body: Readable;
  /**
   * From a source trusted by digest only (a peer): nothing reaches the followers before the whole
   * blob verified, and bytes that do not verify are fetched again from the trusted sources.
   */
  untrusted?: boolean;
  /** This source's minimum progress, when it differs from the download's. */
  stall?: ProgressRule | null;
}

export interface DownloadSource {
  /**
   * Opens the upstream body from byte `start` on. `start` in the answer is where the body really
   * begins (0 when the upstream ignored the Range); `size` is the blob's total size if known.
   */
  open(start: number, signal: AbortSignal): Promise<OpenedBody>;
  /**
   * The body last opened failed (broke, stalled, announced a wrong size, ran too long): true when
   * the source moved on to another (a failed peer is left for the next source), so the download
   * opens again at once from where it is; false: the download's own resume rules apply.
   */
  failed?(err: unknown): boolean;
  /** Untrusted bytes did not verify: the download starts over from the trusted sources only. */
  distrust?(): void;
}
