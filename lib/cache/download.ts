/**
 * One upstream download of one digest into the store. Every client asking for that digest while
 * it runs reads the growing temp file at its own pace (rule 3 of docs/ARCHITECTURE.md): the download runs at
 * upstream speed, a slow client slows nobody, and it finishes into the store even when every
 * client has gone (unless `finishAbandoned` is off).
 *
 * When the upstream connection drops mid-body, or stalls (less than `stall.minBytes` in
 * `stall.windowMs`: silence or a drip alike), the download resumes with `Range: bytes=N-` from the
 * bytes already written, with bounded retries and backoff; clients notice nothing. When it cannot
 * resume, or the bytes do not verify, the temp file is deleted and every follower fails.
 *
 * The body is held to the size known for the digest: the upstream's Content-Length, the size a
 * manifest's descriptor gave (`expectedSize`), and `maxSize`. An announced size that disagrees or
 * is too large is refused before a byte is read; a body that runs past its size is stopped at once
 * (the connection closed, the chunk never written) and nothing is stored.
 */
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import type { Logger } from 'pino';
import type { BlobWriter, CommitResult } from '../storage/blob-writer.js';
import { UpstreamError } from '../upstream/errors.js';
import { discard } from '../util/http-body.js';
import { ProgressWatch, type ProgressRule } from '../util/progress.js';
import type { DownloadSource } from '../upstream/blob-source.js';

/** Source switches (failed peers) one download makes at most, beside its resumes. */
const MAX_SWITCHES = 8;

export interface DownloadOptions {
  /** Resume attempts after the first request. */
  maxResumes: number;
  /** First backoff; doubles with each resume that made no progress, capped at 5 s. */
  backoffMs: number;
  /** Keep downloading into the store when every client has gone. */
  finishAbandoned: boolean;
  /** No download goes past this many bytes (cache.blobMaxSize). */
  maxSize: number;
  /** The size a manifest stevedore fetched gives for this digest, when one did. */
  expectedSize: number | null;
  /** Minimum progress of the body (timeouts.stall / minProgress); null: only the idle timeout. */
  stall: ProgressRule | null;
  /** The upstream's name, for error messages. */
  upstream: string;
}

export const DEFAULT_DOWNLOAD_OPTIONS: DownloadOptions = {
  maxResumes: 5,
  backoffMs: 100,
  finishAbandoned: true,
  maxSize: Number.MAX_SAFE_INTEGER,
  expectedSize: null,
  stall: null,
  upstream: 'upstream',
};

/** Failures worth a Range resume: the connection broke or stalled after the answer began. */
function isResumable(err: unknown): boolean {
  if (err instanceof UpstreamError) return err.kind === 'unavailable' || err.kind === 'timeout';
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (
    code === 'ECONNRESET' ||
    code === 'EPIPE' ||
    code === 'ETIMEDOUT' ||
    code === 'UND_ERR_SOCKET' ||
    code === 'UND_ERR_BODY_TIMEOUT' ||
    code === 'UND_ERR_ABORTED' ||
    code === 'ERR_STREAM_PREMATURE_CLOSE'
  );
}

/** A connection reset (or a socket closed under a request), wherever undici or node reported it. */
function wasReset(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 5; depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE') return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

export class Download {
  readonly digest: string;
  /** The repository the download was started for (`<upstream>/<name>`): others must be allowed to join. */
  readonly repoKey: string;
  readonly writer: BlobWriter;
  /** Total size once known: the upstream said it (Content-Length / Content-Range), or a manifest did. */
  size: number | null = null;
  /** Where `size` came from. */
  private sizeFrom: 'announced' | 'manifest' | null = null;
  /**
   * Resolves when the upstream answered and its first bytes are in the temp file (or, for an empty
   * blob, once it is stored); rejects with the error otherwise: clients are answered 200 only once
   * the store took bytes, so a disk that is full gets them an error answer, not a cut transfer.
   */
  readonly ready: Promise<void>;
  /** `ready` resolved: the upstream answered and bytes are in the temp file. */
  answered = false;
  /** Resolves when the blob is verified and in the store. */
  readonly done: Promise<CommitResult>;
  /** Upstream requests made (1 + resumes). */
  attempts = 0;
  /** When it started (epoch ms). */
  readonly startedAt = Date.now();
  /** Bytes handed to the writer (some may still be in its buffer): where a resume starts. */
  private received = 0;
  private followers = 0;
  /** Bytes from a peer are in the file: verified before anything is released. */
  private untrusted = false;
  /** `size` is what a peer announced (no manifest gave it): a trusted source may correct it. */
  private sizeUntrusted = false;
  private readonly abort = new AbortController();
  private readonly opts: DownloadOptions;

  constructor(digest: string, repoKey: string, writer: BlobWriter, source: DownloadSource, log: Logger, opts: Partial<DownloadOptions> = {}) {
    this.digest = digest;
    this.repoKey = repoKey;
    this.writer = writer;
    this.opts = { ...DEFAULT_DOWNLOAD_OPTIONS, ...opts };
    // A write that fails (disk full, size limit) stops the copy loop through the abort signal.
    writer.on('error', (err) => this.abort.abort(err));
    let markReady!: () => void;
    let failReady!: (err: unknown) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      markReady = () => {
        this.answered = true;
        resolve();
      };
      failReady = reject;
    });
    writer.events.once('progress', () => markReady());
    this.done = (async () => {
      try {
        // A shared temp file taken over from another replica: its bytes were re-hashed, the
        // upstream is asked for the rest (Range).
        this.received = await writer.resumedFrom;
        if (this.received > 0) log.info({ digest, from: this.received }, 'taking over a download another replica left; resuming with Range');
        await this.run(source, log);
        if (this.untrusted && (await this.rewound(source, log))) await this.run(source, log);
        const stored = await writer.commit(this.size ?? undefined);
        markReady();
        return stored;
      } catch (err) {
        failReady(err);
        await writer.abort(err instanceof Error ? err : new Error(String(err)));
        log.warn({ err, digest, written: writer.written, attempts: this.attempts }, 'download failed; nothing stored');
        throw err;
      }
    })();
    // Observed by whoever awaits; never an unhandled rejection.
    this.ready.catch(() => undefined);
    this.done.catch(() => undefined);
  }

  /**
   * Bytes from a peer (trusted by digest only) are all in: when they do not verify, the file is
   * rewound (followers saw none of it) and the peers distrusted, so the blob is fetched again from
   * the trusted sources. True when it was rewound.
   */
  private async rewound(source: DownloadSource, log: Logger): Promise<boolean> {
    this.untrusted = false;
    await this.writer.flushed();
    const got = this.writer.digestSoFar();
    if (got === this.digest && (this.size === null || this.writer.written === this.size)) return false;
    log.warn({ digest: this.digest, got, bytes: this.writer.written }, 'bytes from a peer did not verify; fetching the blob again from the next source');
    source.distrust?.();
    await this.writer.rewind();
    this.received = 0;
    if (this.sizeUntrusted) {
      this.size = this.opts.expectedSize;
      this.sizeFrom = this.size !== null ? 'manifest' : null;
      this.sizeUntrusted = false;
    }
    return true;
  }

  private async run(source: DownloadSource, log: Logger): Promise<void> {
    let resumes = 0;
    let switches = 0;
    // Backoff grows while resumes make no progress, and starts over once bytes flow again.
    let stuck = 0;
    let lastFrom = -1;
    for (;;) {
      const from = this.received;
      stuck = from > lastFrom ? 0 : stuck + 1;
      lastFrom = from;
      this.attempts++;
      let opened = false;
      try {
        const res = await source.open(from, this.abort.signal);
        if (res.untrusted) {
          this.untrusted = true;
          this.writer.withhold = true;
        }
        const refused = this.refuseSize(res.size);
        if (refused) {
          discard(res.body);
          throw refused;
        }
        if (this.size === null) {
          this.size = res.size ?? this.opts.expectedSize;
          this.sizeFrom = res.size !== null ? 'announced' : this.size !== null ? 'manifest' : null;
          this.sizeUntrusted = res.size !== null && res.untrusted === true;
        } else if (res.size !== null && res.size !== this.size && this.sizeUntrusted && !res.untrusted && this.received <= res.size) {
          // A peer announced it: a trusted source's size wins (the bytes are verified at the end anyway).
          this.size = res.size;
          this.sizeUntrusted = false;
        } else if (res.size !== null && res.size !== this.size) {
          discard(res.body);
          throw new UpstreamError('bad_response', this.opts.upstream, `size of ${this.digest} changed between requests (${this.size} then ${res.size})`);
        }
        opened = true;
        await this.copy(res.body, from - res.start, res.stall === undefined ? this.opts.stall : res.stall);
        return;
      } catch (err) {
        if (this.abort.signal.aborted) throw this.abort.signal.reason as Error;
        // A peer that failed: the next source continues from here (with Range), at once.
        if (switches < MAX_SWITCHES && source.failed?.(err)) {
          switches++;
          log.info({ digest: this.digest, received: this.received, reason: (err as Error).message }, 'a peer failed mid-transfer; continuing from the next source');
          continue;
        }
        // A transfer that had begun is resumed. A first request fails fast (refused, timed out, an
        // error status is the client's answer), unless its connection was reset: that is the
        // same fault as a reset mid-body, only earlier. A body that broke or stalled had begun.
        const begun = this.attempts > 1 || opened || this.received > 0 || wasReset(err);
        if (!begun || !isResumable(err) || resumes >= this.opts.maxResumes) throw err;
        resumes++;
        const wait = Math.min(5_000, this.opts.backoffMs * 2 ** stuck);
        log.info({ digest: this.digest, received: this.received, resume: resumes, waitMs: wait, reason: (err as Error).message }, 'upstream body broke; resuming with Range');
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  /** Why a body announcing `announced` bytes is not even read, or null when it may be. */
  private refuseSize(announced: number | null): UpstreamError | null {
    if (announced === null) return null;
    const { expectedSize, maxSize, upstream } = this.opts;
    if (expectedSize !== null && announced !== expectedSize) {
      return new UpstreamError('bad_response', upstream, `upstream ${upstream} announced ${announced} bytes for blob ${this.digest}, which a manifest gives as ${expectedSize} bytes`);
    }
    if (announced > maxSize) {
      return new UpstreamError('bad_response', upstream, `upstream ${upstream} announced ${announced} bytes for blob ${this.digest}, above the limit of ${maxSize} (cache.blobMaxSize)`);
    }
    return null;
  }

  /** The error for a body that ran past `limit` bytes. */
  private tooLong(limit: number): UpstreamError {
    const { upstream } = this.opts;
    const why =
      this.sizeFrom === 'manifest'
        ? `longer than the ${limit} bytes a manifest gives for it`
        : this.sizeFrom === 'announced'
          ? `longer than the ${limit} bytes it announced`
          : `above the limit of ${limit} bytes (cache.blobMaxSize)`;
    return new UpstreamError('bad_response', upstream, `upstream ${upstream} sent blob ${this.digest} ${why}; download stopped`);
  }

  /** Writes the body into the temp file, first dropping `skip` bytes we already have. */
  private async copy(body: Readable, skip: number, rule: ProgressRule | null): Promise<void> {
    let toSkip = skip;
    const limit = this.size ?? this.opts.maxSize;
    const watch = rule
      ? new ProgressWatch(rule, (bytes) => {
          const { upstream } = this.opts;
          const err = new UpstreamError(
            'timeout',
            upstream,
            `upstream ${upstream} stalled on blob ${this.digest}: ${bytes} bytes in ${rule.windowMs} ms, less than timeouts.minProgress (${rule.minBytes}) per timeouts.stall`,
          );
          body.destroy(err);
        })
      : null;
    try {
      for await (const raw of body as AsyncIterable<Buffer>) {
        watch?.add(raw.length);
        let chunk = raw;
        if (toSkip > 0) {
          if (chunk.length <= toSkip) {
            toSkip -= chunk.length;
            continue;
          }
          chunk = chunk.subarray(toSkip);
          toSkip = 0;
        }
        // Past the size known for the digest: it can never verify. Not a byte more is written.
        if (this.received + chunk.length > limit) throw this.tooLong(limit);
        this.received += chunk.length;
        if (!this.writer.write(chunk)) {
          // Waiting on our own disk is not the upstream stalling.
          watch?.pause();
          try {
            await once(this.writer, 'drain', { signal: this.abort.signal });
          } finally {
            watch?.resume();
          }
        }
      }
    } finally {
      watch?.stop();
      discard(body);
    }
    if (this.size !== null && this.received < this.size) {
      // The body ended early without an error (a proxy closed it cleanly): resume like a reset.
      const err = new Error(`upstream body ended at ${this.received} of ${this.size} bytes`) as NodeJS.ErrnoException;
      err.code = 'ERR_STREAM_PREMATURE_CLOSE';
      throw err;
    }
  }

  /** Clients reading this download now. */
  get followerCount(): number {
    return this.followers;
  }

  /** Stops the download (its followers fail); `keepFile`: the temp file is not ours to delete. */
  cancel(reason: Error, opts: { keepFile?: boolean } = {}): void {
    if (opts.keepFile) this.writer.keepFileOnAbort = true;
    this.abort.abort(reason);
  }

  /** Bytes [start, end] of the blob as they arrive. */
  createReader(start?: number, end?: number): Readable {
    const reader = this.writer.createReader(start ?? 0, end);
    this.followers++;
    reader.once('close', () => this.unfollow());
    return reader;
  }

  /** Sends bytes [start, end] (inclusive) to `dest` as they arrive, and ends it (the HTTP fast path). */
  async sendTo(dest: Writable, start?: number, end?: number): Promise<void> {
    this.followers++;
    try {
      await this.writer.sendTo(dest, start ?? 0, end);
    } finally {
      this.unfollow();
    }
  }

  private unfollow(): void {
    this.followers--;
    if (this.followers === 0 && !this.opts.finishAbandoned && this.writer.state === 'writing') {
      this.abort.abort(new Error('every client went away (cache.finishAbandonedDownloads is off)'));
    }
  }
}
