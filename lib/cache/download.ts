/**
 * One upstream download of one digest into the store. Every client asking for that digest while
 * it runs reads the growing temp file at its own pace; the download runs at upstream speed and
 * finishes into the store even when every client has gone.
 */
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { BlobWriter, CommitResult } from '../storage/blob-writer.js';

export interface DownloadSource {
  /** Opens the upstream body; resolves once headers arrived. */
  open(): Promise<{ size: number | null; body: Readable }>;
}

export class Download {
  readonly digest: string;
  readonly writer: BlobWriter;
  /** Total size once the upstream said it (Content-Length). */
  size: number | null = null;
  /** Resolves when the upstream answered with a body (or rejects with its error). */
  readonly ready: Promise<void>;
  /** Resolves when the blob is verified and in the store. */
  readonly done: Promise<CommitResult>;

  constructor(digest: string, writer: BlobWriter, source: DownloadSource, log: Logger) {
    this.digest = digest;
    this.writer = writer;
    let markReady!: () => void;
    let failReady!: (err: unknown) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    this.done = (async () => {
      try {
        const { size, body } = await source.open();
        this.size = size;
        markReady();
        await pipeline(body, writer);
        return await writer.commit(size ?? undefined);
      } catch (err) {
        failReady(err);
        await writer.abort(err instanceof Error ? err : new Error(String(err)));
        log.warn({ err, digest }, 'download failed; nothing stored');
        throw err;
      }
    })();
    // Observed by whoever awaits; never an unhandled rejection.
    this.ready.catch(() => undefined);
    this.done.catch(() => undefined);
  }

  /** Bytes [start, end] of the blob as they arrive. */
  createReader(start?: number, end?: number): Readable {
    return this.writer.createReader(start ?? 0, end);
  }
}
