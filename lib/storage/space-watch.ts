/**
 * The store's disk filling up, as an episode: the first write refused for want of space logs one
 * error, later ones are only counted (`noSpaceErrors`, the metric
 * `stevedore_store_write_errors_total{reason="no_space"}`), and the first write that succeeds
 * after it logs that space returned. Nothing is blocked while the disk is full: every new
 * download or push tries again, so the process recovers by itself when space returns.
 */
import type { Logger } from 'pino';
import { StorageFullError } from './errors.js';

export class SpaceWatch {
  /** A write was refused for want of space, and none has succeeded since. */
  full = false;
  /** Writes refused for want of space since start (each failed a download or a push). */
  noSpaceErrors = 0;
  private since = 0;

  constructor(
    private readonly log: Logger | undefined,
    private readonly now: () => number = Date.now,
  ) {}

  /** A write refused for want of space: counted, logged once per episode. Returns the error to throw. */
  noSpace(what: string, cause: unknown): StorageFullError {
    this.noSpaceErrors++;
    if (!this.full) {
      this.full = true;
      this.since = this.now();
      this.log?.error(
        { err: (cause as Error | null)?.message ?? String(cause), what },
        "the store's disk is full: downloads and pushes that need space fail (507) until space returns; stored content is still served (storage.maxSize lets stevedore evict to make room)",
      );
    }
    return cause instanceof StorageFullError ? cause : new StorageFullError(`the store's disk is full: ${what} could not be written`, { cause });
  }

  /** Content was written: an episode of a full disk ends. */
  wrote(): void {
    if (!this.full) return;
    this.full = false;
    this.log?.warn({ fullForMs: this.now() - this.since, refused: this.noSpaceErrors }, "the store's disk has room again: writes succeed");
  }
}
