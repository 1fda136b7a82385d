/**
 * The S3 backend: verified content as objects `<prefix>blobs/<alg>/<ab>/<hex>` in a bucket (S3,
 * Ceph RGW, MinIO, R2, GCS's S3 API; the filesystem store's layout), pins and the repositories'
 * records as small objects beside them (paths.ts `recordKeys`). The local directory
 * (`storage.path`) keeps only working space: the temp files of downloads being written (which
 * their clients follow while the bytes arrive), push chunks being received, and the index
 * snapshot.
 *
 * Writes (multipart-sink.ts): a download streams into a multipart upload on the final key while it
 * is hashed; CompleteMultipartUpload only after the digest verified, AbortMultipartUpload
 * otherwise. So the bucket never holds an unverified object under a digest's name, and no copy
 * or rename is needed (S3 has none that is cheap). Uploads a crash left unfinished are invisible
 * and aborted: at start (all of them; in cluster mode those older than an hour), hourly (those
 * older than a day), and, for one digest, as soon as its object is complete (a taken-over
 * download's). Push sessions live in the bucket too (s3-session-files.ts).
 *
 * The index (blob-store.ts, above every backend): listing a bucket is slow and paid, so this
 * backend declares `reconcileIntervalMs`: the index is loaded from the local snapshot or, without
 * one, from one listing at start, and a listing reconciles it in the background every
 * `reconcileInterval`. A miss asks S3 with one HEAD before going upstream (another replica, or a
 * CLI command, may have stored it).
 *
 * Reads are GETs streamed to the client (ranged for Range requests), never buffered: memory stays
 * bounded whatever the blob size. Optionally (`redirect`) blob GETs are answered with a 307 to a
 * presigned URL, as distribution does.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  type GetObjectCommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { Logger } from 'pino';
import { tryParseDigest, type Digest } from '../../oci/digest.js';
import { DestinationClosedError } from '../../util/destination-closed.js';
import { endAnswer, pump } from '../../util/pump.js';
import type { BackendCoordination, ByteRange, BackendFactory, BackendInfo, BlobBackend, StoredBody, BlobStat, ListedBlob, WriterOptions } from '../backend.js';
import { BlobWriter } from '../blob-writer.js';
import { DIR_MODE } from '../modes.js';
import { StorePaths } from '../paths.js';
import { readSnapshotFile, writeSnapshotFile } from '../snapshot-file.js';
import { MultipartSink } from './multipart-sink.js';
import { S3Bucket } from './s3-bucket.js';
import { pooledGet, SlabPool, type PooledAnswer } from './pooled-get.js';
import { destroyFirst, ObjectChangedError, ReadBudget, writeRanged, type FirstAnswer, type PartSource } from './ranged-reader.js';
import { createS3Client, describeS3Error, isNotFound, s3Status, type S3Settings } from './s3-client.js';
import { S3Records } from './s3-records.js';
import { S3SessionFiles } from './s3-session-files.js';

/** How many times a failed ranged GET of a large blob is asked again before its client is cut. */
const PART_RETRIES = 2;

/** Whether a ranged GET failed because the object is no longer the version read (If-Match: 412). */
function objectChanged(err: unknown): boolean {
  return s3Status(err) === 412;
}

/** readConcurrency 'auto' through the SDK (pooled reads: 1). */
const AUTO_READ_CONCURRENCY = 4;

/** Pooled slabs kept for reuse at most (pooled-get.ts's SlabPool; those in use are bounded by readMemory). */
const SLAB_POOL_KEEP = 16 * 1024 * 1024;

/** The object's size from a Content-Range answer (`bytes 0-8388607/209715200`). */
function totalOf(contentRange: string | undefined): number | null {
  const m = /\/(\d+)$/.exec(contentRange ?? '');
  return m ? Number(m[1]) : null;
}

/** A committed download's temp file stays at most this long (it is deleted once its download is released). */
const SPOOL_LINGER_MS = 30_000;
/** Unfinished multipart uploads older than this are aborted whoever started them. */
const ORPHAN_MAX_AGE_MS = 24 * 3_600_000;
const ORPHAN_SWEEP_INTERVAL_MS = 3_600_000;

export interface S3BackendOptions {
  /** How often the index is reconciled with a listing of the bucket. */
  reconcileIntervalMs?: number;
  /** An existing client (tests); default: one built from the settings. */
  client?: S3Client;
  log?: Logger;
  now?: () => number;
  /** Told of each ranged GET sent through pooled-get.ts (tests count them as they count the SDK's). */
  onPooledGet?: (g: { range: string; ifMatch: string }) => void;
}

export class S3Backend implements BlobBackend {
  readonly bucket: S3Bucket;
  readonly records: S3Records;
  readonly sessions: S3SessionFiles;
  readonly reconcileIntervalMs: number;
  /** Replicas share no disk: a download in progress is streamed from the replica holding it. */
  readonly shared = null;
  /** The local working directory: downloads being written, push chunks being received, the index snapshot. */
  readonly paths: StorePaths;
  private readonly log: Logger | undefined;
  private readonly now: () => number;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly spoolTimers = new Set<NodeJS.Timeout>();
  /** Memory that parallel reads of large blobs hold for parts read ahead, shared by all of them (readMemory). */
  readonly readBudget: ReadBudget;
  /**
   * Memory that pooled ranged GETs read into (pooled-get.ts): slabs given back are kept for reuse up
   * to 16 MiB (or readMemory if less; the parts in flight hold theirs under readMemory anyway),
   * all released after 10 s unused.
   */
  readonly slabs: SlabPool;
  private readonly onPooledGet: S3BackendOptions['onPooledGet'];
  /** Parts of parallel reads are received into pooled memory (pooledReads, an http:// endpoint). */
  private readonly pooledEndpoint: boolean;
  /** Ranged GETs in flight per parallel read: readConcurrency ('auto': 1 with pooled reads, else 4). */
  readonly readConcurrency: number;
  /** Tells whether a digest is being downloaded by some replica (cluster mode: its lease). */
  private downloadingElsewhere: ((digest: string) => Promise<boolean>) | null = null;

  constructor(workDir: string, settings: S3Settings, opts: S3BackendOptions = {}) {
    const s3 = opts.client ?? createS3Client(settings);
    this.bucket = new S3Bucket(s3, settings);
    this.records = new S3Records(s3, settings);
    this.paths = new StorePaths(workDir);
    this.sessions = new S3SessionFiles(this.bucket, this.paths.tmp);
    this.log = opts.log;
    this.now = opts.now ?? Date.now;
    this.reconcileIntervalMs = opts.reconcileIntervalMs ?? 3_600_000;
    this.readBudget = new ReadBudget(settings.readMemory);
    this.slabs = new SlabPool(Math.min(settings.readMemory, SLAB_POOL_KEEP));
    this.onPooledGet = opts.onPooledGet;
    this.pooledEndpoint = settings.pooledReads !== false && settings.endpoint?.startsWith('http://') === true;
    const c = settings.readConcurrency ?? 'auto';
    this.readConcurrency = c === 'auto' ? (this.pooledEndpoint ? 1 : AUTO_READ_CONCURRENCY) : c;
  }

  private get s3(): S3Client {
    return this.bucket.s3;
  }

  private get settings(): S3Settings {
    return this.bucket.settings;
  }

  info(): BackendInfo {
    return { kind: 's3', location: `s3://${this.settings.bucket}/${this.settings.prefix}` };
  }

  get tmpDir(): string {
    return this.paths.tmp;
  }

  readAheadStats(): { inUse: number; limit: number; waiting: number } {
    return this.readBudget.stats();
  }

  describeError(err: unknown): string {
    return describeS3Error(err);
  }

  coordinate(c: BackendCoordination): void {
    // Orphan sweeps leave alone the uploads of digests a replica holds the lease of.
    this.downloadingElsewhere = (digest) => c.downloadingElsewhere(digest);
  }

  async open(opts: { sweep?: boolean; sweepOlderThanMs?: number }): Promise<{ swept: number }> {
    try {
      await this.s3.send(new HeadBucketCommand({ Bucket: this.settings.bucket }));
    } catch (err) {
      throw new Error(`storage.s3: cannot use bucket "${this.settings.bucket}"${this.settings.endpoint ? ` at ${this.settings.endpoint}` : ''}: ${describeS3Error(err)}`);
    }
    await fsp.mkdir(this.paths.root, { recursive: true, mode: DIR_MODE });
    let swept = 0;
    if (opts.sweep !== false) {
      // The local directory is this process's alone (the bucket is what replicas share).
      swept = (await fsp.readdir(this.paths.tmp).catch(() => [] as string[])).length;
      await fsp.rm(this.paths.tmp, { recursive: true, force: true });
      swept += await this.abortOrphans(opts.sweepOlderThanMs ?? 0);
    }
    await fsp.mkdir(this.paths.tmp, { recursive: true, mode: DIR_MODE });
    await fsp.mkdir(this.paths.uploads, { recursive: true, mode: DIR_MODE });
    if (opts.sweep !== false) {
      const orphans = setInterval(() => void this.abortOrphans(ORPHAN_MAX_AGE_MS).catch((err: unknown) => this.log?.warn({ err: describeS3Error(err) }, 'orphan sweep failed')), ORPHAN_SWEEP_INTERVAL_MS);
      orphans.unref();
      this.timers.push(orphans);
    }
    return { swept };
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    for (const t of this.spoolTimers) clearTimeout(t);
    this.spoolTimers.clear();
    await Promise.allSettled([...this.bucket.deleting.values()]);
    this.s3.destroy();
  }

  async sweepTemp(): Promise<number> {
    return 0; // the local directory is swept whole at start
  }

  /**
   * Aborts unfinished multipart uploads under blobs/ that are not this process's, started more
   * than `olderThanMs` ago (0: all), and whose digest no replica is downloading. Returns how many.
   */
  async abortOrphans(olderThanMs: number): Promise<number> {
    const cutoff = this.now() - olderThanMs;
    const prefix = this.bucket.key('blobs/');
    let aborted = 0;
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    for (;;) {
      const r = await this.s3.send(new ListMultipartUploadsCommand({ Bucket: this.settings.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: idMarker }));
      for (const u of r.Uploads ?? []) {
        if (!u.Key || !u.UploadId || this.bucket.ownUploads.has(u.UploadId)) continue;
        if (olderThanMs > 0 && (u.Initiated?.getTime() ?? 0) > cutoff) continue;
        const [alg, , hex] = u.Key.slice(prefix.length).split('/');
        const digest = `${alg}:${hex}`;
        if (olderThanMs > 0 && olderThanMs < ORPHAN_MAX_AGE_MS && (await this.downloadingElsewhere?.(digest).catch(() => true))) continue;
        await this.s3.send(new AbortMultipartUploadCommand({ Bucket: this.settings.bucket, Key: u.Key, UploadId: u.UploadId })).catch(() => undefined);
        this.log?.info({ key: u.Key, initiated: u.Initiated }, 'aborted an unfinished multipart upload (left by a process that stopped)');
        aborted++;
      }
      if (!r.IsTruncated) break;
      keyMarker = r.NextKeyMarker;
      idMarker = r.NextUploadIdMarker;
    }
    return aborted;
  }

  /** Other replicas' unfinished uploads of this one digest: orphans once this replica holds its lease. */
  async abortOthersOf(d: Digest): Promise<number> {
    const key = this.bucket.blobKey(d);
    const r = await this.s3.send(new ListMultipartUploadsCommand({ Bucket: this.settings.bucket, Prefix: key }));
    let n = 0;
    for (const u of r.Uploads ?? []) {
      if (u.Key !== key || !u.UploadId || this.bucket.ownUploads.has(u.UploadId)) continue;
      await this.s3.send(new AbortMultipartUploadCommand({ Bucket: this.settings.bucket, Key: key, UploadId: u.UploadId })).catch(() => undefined);
      this.log?.info({ key, uploadId: u.UploadId }, 'aborted the unfinished upload of a download taken over');
      n++;
    }
    return n;
  }

  async *list(): AsyncGenerator<ListedBlob> {
    const prefix = this.bucket.key('blobs/');
    let token: string | undefined;
    do {
      const r = await this.s3.send(new ListObjectsV2Command({ Bucket: this.settings.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of r.Contents ?? []) {
        // blobs/<alg>/<two hex>/<hex>
        const [alg, fan, hex, ...more] = (o.Key?.slice(prefix.length) ?? '').split('/');
        const d = alg && hex && more.length === 0 && hex.startsWith(fan ?? '-') ? tryParseDigest(`${alg}:${hex}`) : null;
        if (!d || o.Size === undefined) continue;
        yield { digest: d.value, size: o.Size, mtime: o.LastModified?.getTime() ?? 0 };
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
  }

  async stat(d: Digest): Promise<BlobStat | null> {
    try {
      const h = await this.s3.send(new HeadObjectCommand({ Bucket: this.settings.bucket, Key: this.bucket.blobKey(d) }));
      if (h.ContentLength === undefined) return null;
      return { size: h.ContentLength, mtime: h.LastModified?.getTime() ?? 0 };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async probe(d: Digest): Promise<BlobStat | null> {
    try {
      return await this.stat(d);
    } catch (err) {
      this.log?.warn({ digest: d.value, err: describeS3Error(err) }, 'S3 HEAD failed; treating the content as not stored');
      return null;
    }
  }

  /** A stored object the bucket no longer has (removed behind the store's back): not stored. */
  private vanished(d: Digest): null {
    this.log?.warn({ digest: d.value }, 'stored object vanished from the bucket; forgetting it');
    return null;
  }

  async read(d: Digest, indexedSize: number, done: () => void): Promise<StoredBody | null> {
    // The GET is sent now: its answer says the object exists before the client is answered.
    // With redirects the client fetches it from S3 itself: no GET here unless asked to stream.
    // A large blob's first GET asks for its first part only (with readConcurrency 1: all of it).
    // Received into pooled memory with one GET per read (readConcurrency 1), a blob of any size goes
    // that way, below readThreshold too (64 clients on 1 MiB blobs: ~1.5× the rate of one SDK GET
    // each, bench/RESULTS.md, 2026-12-08); an empty one not (a ranged GET of it is refused).
    const pooledWhole = this.pooledEndpoint && this.readConcurrency === 1 && indexedSize > 0;
    const large = this.settings.readThreshold !== null && indexedSize >= this.settings.readThreshold;
    const parallel = !this.settings.redirect && (pooledWhole || large);
    // One GET in flight (readConcurrency 1): the read is one GET of its whole range.
    const partSize = this.readConcurrency === 1 ? Math.max(indexedSize, 1) : this.settings.readPartSize;
    const firstEnd = partSize - 1;
    const key = this.bucket.blobKey(d);
    const pooled = parallel ? this.pooledSource(key) : null;
    if (pooled) {
      // The first part received into pooled memory as the others are; anything but a 404 from it
      // (a gateway answering otherwise than expected) is asked again through the SDK below.
      try {
        const got = await pooled.getFirst(firstEnd);
        const size = got.total ?? indexedSize;
        return this.readParallel(d, { etag: got.etag, size, first: { pooled: got.body, end: Math.min(firstEnd, size - 1) } }, partSize, done, pooled);
      } catch (err) {
        if (isNotFound(err)) return this.vanished(d);
        this.log?.warn({ digest: d.value, err: describeS3Error(err) }, 'the first ranged GET of a blob into pooled memory failed; asking through the SDK');
      }
    }
    let first: GetObjectCommandOutput | null = null;
    if (!this.settings.redirect) {
      try {
        first = await this.s3.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: key, ...(parallel ? { Range: `bytes=0-${firstEnd}` } : {}) }));
      } catch (err) {
        if (isNotFound(err)) return this.vanished(d);
        throw err;
      }
    }
    if (parallel && first) {
      const size = totalOf(first.ContentRange) ?? (first.ContentLength !== undefined && first.ContentLength <= firstEnd ? first.ContentLength : indexedSize);
      const body = first.Body as Readable | undefined;
      return this.readParallel(d, { etag: first.ETag ?? null, size, first: body ? { body, end: Math.min(firstEnd, size - 1) } : null }, partSize, done, this.pooledSource(key));
    }
    const size = first?.ContentLength ?? indexedSize;
    let firstBody: Readable | null = (first?.Body as Readable | undefined) ?? null;
    const body = async (range?: { start: number; end: number }): Promise<Readable> => {
      const whole = !range || (range.start === 0 && range.end >= size - 1);
      const b = firstBody;
      firstBody = null;
      if (whole && b) return b;
      b?.destroy();
      const r = await this.s3.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.bucket.blobKey(d), ...(whole ? {} : { Range: `bytes=${range.start}-${range.end}` }) }));
      return r.Body as Readable;
    };
    return {
      size,
      open: (range) => {
        const out = new PassThrough({ highWaterMark: 512 * 1024 });
        out.once('close', done);
        body(range).then(
          (b) => pipeline(b, out).catch((err: unknown) => out.destroy(err as Error)),
          (err: unknown) => out.destroy(err as Error),
        );
        return out;
      },
      sendTo: async (dest, range) => {
        try {
          await pump(await body(range), dest);
        } finally {
          done();
        }
      },
      release: async () => {
        firstBody?.destroy();
        firstBody = null;
        done();
      },
      ...(this.settings.redirect
        ? {
            redirect: async () => {
              done();
              return this.presignedUrl(d);
            },
          }
        : {}),
    };
  }

  /**
   * A large blob read by parallel ranged GETs (ranged-reader.ts): `found.first` is the answer to
   * the GET of its first part (bytes 0-firstEnd), which gave its size and ETag; `pooled`, parts
   * received into pooled memory (sendTo() only), else the SDK's.
   */
  private readParallel(d: Digest, found: { etag: string | null; size: number; first: FirstAnswer | null }, partSize: number, done: () => void, pooled: PartSource | null): StoredBody {
    const key = this.bucket.blobKey(d);
    const { etag, size } = found;
    let firstBody = found.first;
    const sdkSource: PartSource = {
      get: async (start, end, ifMatch, signal) => {
        const r = await this.s3.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: key, Range: `bytes=${start}-${end}`, ...(ifMatch ? { IfMatch: ifMatch } : {}) }), { abortSignal: signal });
        return { body: r.Body as Readable };
      },
      changed: objectChanged,
    };
    const write = async (dest: Writable, range: ByteRange | undefined, source: PartSource, copyPooled: boolean): Promise<void> => {
      const b = firstBody;
      firstBody = null;
      const start = range?.start ?? 0;
      const end = range?.end ?? size - 1;
      try {
        await writeRanged(dest, {
          source,
          budget: this.readBudget,
          start,
          end,
          partSize,
          concurrency: this.readConcurrency,
          retries: PART_RETRIES,
          etag,
          first: b,
          copyPooled,
          onRetry: (err, part) => this.log?.warn({ digest: d.value, part, err: describeS3Error(err) }, 'a ranged GET of a blob failed; asking again from the byte reached'),
        });
      } catch (err) {
        if (err instanceof ObjectChangedError) this.log?.error({ digest: d.value, err: describeS3Error(err.cause) }, 'the object changed while it was being read (its ETag no longer matches); the client is cut');
        else if (!(err instanceof DestinationClosedError)) this.log?.warn({ digest: d.value, err: describeS3Error(err) }, 'reading a blob by ranged GETs failed; the client is cut');
        throw err;
      }
    };
    return {
      size,
      open: (range) => {
        // Each chunk is a buffer of its own (never reused): a PassThrough may keep them.
        const out = new PassThrough({ highWaterMark: 512 * 1024 });
        out.once('close', done);
        write(out, range, sdkSource, true).then(
          () => out.end(),
          (err: unknown) => out.destroy(err as Error),
        );
        return out;
      },
      sendTo: async (dest, range) => {
        try {
          // A socket's writes are called back once the bytes left the buffer: pooled memory can be
          // used (open()'s PassThrough keeps its chunks: it gets buffers of their own).
          await write(dest, range, pooled ?? sdkSource, false);
          await endAnswer(dest);
        } finally {
          done();
        }
      },
      release: async () => {
        if (firstBody) destroyFirst(firstBody);
        firstBody = null;
        done();
      },
    };
  }

  /**
   * Parts received straight into pooled memory (pooled-get.ts) when the endpoint is plain HTTP and
   * `pooledReads` is on; null: the SDK's client reads them. One presigned URL per read, signed again
   * after 5 minutes (a slow client's read can outlast one); Range and If-Match go unsigned.
   * `getFirst`: the GET that finds the object (bytes 0-end, any version), with its ETag and size.
   */
  private pooledSource(key: string): (PartSource & { getFirst(end: number): Promise<PooledAnswer> }) | null {
    if (!this.pooledEndpoint) return null;
    let signed: { url: Promise<URL>; at: number } | null = null;
    const url = (): Promise<URL> => {
      if (!signed || this.now() - signed.at > 5 * 60_000) {
        const at = this.now();
        const p = getSignedUrl(this.s3, new GetObjectCommand({ Bucket: this.settings.bucket, Key: key }), { expiresIn: 15 * 60 }).then((u) => new URL(u));
        p.catch(() => {
          if (signed?.url === p) signed = null; // asked again next time
        });
        signed = { url: p, at };
      }
      return signed.url;
    };
    const get = async (start: number, end: number, ifMatch: string | null, signal: AbortSignal, clip = false): Promise<PooledAnswer> => {
      this.onPooledGet?.({ range: `bytes=${start}-${end}`, ifMatch: ifMatch ?? '' });
      return pooledGet({ url: await url(), start, end, ifMatch, clip, pool: this.slabs, signal, connectTimeoutMs: 5_000, idleTimeoutMs: 60_000 });
    };
    return {
      get: async (start, end, ifMatch, signal) => ({ pooled: (await get(start, end, ifMatch, signal)).body }),
      // The object may be smaller than a part (readPartSize above readThreshold, or an index that was wrong).
      getFirst: (end) => get(0, end, null, new AbortController().signal, true),
      changed: objectChanged,
    };
  }

  async readSmall(d: Digest): Promise<Buffer | null> {
    try {
      const r = await this.s3.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.bucket.blobKey(d) }));
      return Buffer.from(await r.Body!.transformToByteArray());
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  /** A URL the client may GET the object from for `redirectTTL` (redirects: storage.s3.redirect). */
  async presignedUrl(d: Digest): Promise<string> {
    return getSignedUrl(this.s3, new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.bucket.blobKey(d) }), { expiresIn: Math.max(1, Math.round(this.settings.redirectTTL / 1000)) });
  }

  createWriter(expected: Digest | null, opts: WriterOptions, committed: (d: Digest, size: number) => void): BlobWriter {
    // Never a shared temp file: the local directory is this replica's alone (other replicas
    // follow through the peer endpoint, lib/cache/remote-blob.ts).
    const tmpPath = path.join(this.paths.tmp, `${randomBytes(12).toString('hex')}.part`);
    let sink: MultipartSink | null = null;
    const writer: BlobWriter = new BlobWriter({
      tmpPath,
      expected,
      ...(opts.maxSize !== undefined ? { maxSize: opts.maxSize } : {}),
      ...(opts.keepRecent !== undefined ? { keepRecent: opts.keepRecent } : {}),
      resolveFinal: () => tmpPath,
      publish: async (actual, size) => {
        // Content by tag (digest unknown until now) is small: one PUT.
        sink ??= this.sinkFor(actual, writer);
        await sink.complete(size);
      },
      onCommitted: (d, size) => {
        committed(d, size);
        // A download's temp file serves followers that join until it is released (then they read
        // the object); anything else has no followers.
        if (opts.keepRecent === undefined) void fsp.rm(tmpPath, { force: true });
        else this.dropSpoolLater(tmpPath, writer);
      },
    });
    if (expected) sink = this.sinkFor(expected, writer);
    return writer;
  }

  private sinkFor(d: Digest, writer: BlobWriter): MultipartSink {
    return new MultipartSink(
      this.s3,
      this.settings,
      this.bucket.blobKey(d),
      writer,
      {
        started: (id) => this.bucket.ownUploads.add(id),
        settled: (id) => this.bucket.ownUploads.delete(id),
        deletionDone: (key) => this.bucket.deletionDone(key),
        // A replica that held this digest's lease and died left its upload: the object is
        // complete now (the same bytes, by digest), so that upload can only be an orphan.
        completed: () => {
          this.abortOthersOf(d).catch((err: unknown) => this.log?.warn({ digest: d.value, err: describeS3Error(err) }, 'could not look for orphaned uploads of a stored blob'));
        },
      },
      this.log,
    );
  }

  /**
   * The temp file of a committed download: deleted when the download is released (no follower
   * will join any more), or after SPOOL_LINGER_MS at the latest. Followers reading it keep their
   * descriptor.
   */
  private dropSpoolLater(file: string, writer: BlobWriter): void {
    const drop = (): void => {
      clearTimeout(t);
      this.spoolTimers.delete(t);
      writer.events.off('released', drop);
      void fsp.rm(file, { force: true });
    };
    const t = setTimeout(drop, SPOOL_LINGER_MS);
    t.unref();
    this.spoolTimers.add(t);
    writer.events.once('released', drop);
  }

  async importFile(file: string, d: Digest, size: number): Promise<void> {
    await this.bucket.uploadVerified(
      async () => {
        const fh = await fsp.open(file, 'r');
        return createReadStream('', { fd: fh, autoClose: true });
      },
      d,
      size,
    );
    await fsp.rm(file, { force: true });
  }

  async remove(d: Digest): Promise<void> {
    const key = this.bucket.blobKey(d);
    await this.bucket.deletionDone(key);
    await this.s3.send(new DeleteObjectCommand({ Bucket: this.settings.bucket, Key: key }));
  }

  evict(d: Digest): void {
    // Recorded at once, before any await: a re-download of the same digest completes its upload
    // only after this DELETE (multipart-sink.ts), so the new object is never deleted.
    const key = this.bucket.blobKey(d);
    const deleting = this.bucket.deleting;
    const prev = deleting.get(key) ?? Promise.resolve();
    const p = prev
      .catch(() => undefined)
      .then(async () => {
        await this.s3.send(new DeleteObjectCommand({ Bucket: this.settings.bucket, Key: key }));
      })
      .catch((err: unknown) => this.log?.error({ digest: d.value, err: describeS3Error(err) }, 'eviction failed to delete an object'))
      .finally(() => {
        if (deleting.get(key) === p) deleting.delete(key);
      });
    deleting.set(key, p);
  }

  async evictionsSettled(): Promise<void> {
    while (this.bucket.deleting.size > 0) await Promise.allSettled([...this.bucket.deleting.values()]);
  }

  /** Replicas on the same bucket and prefix are one store: the id follows from where it is. */
  async storeId(): Promise<string> {
    return createHash('sha256')
      .update(`s3\n${this.settings.endpoint ?? 'aws'}\n${this.settings.bucket}\n${this.settings.prefix}`)
      .digest('hex')
      .slice(0, 32);
  }

  readSnapshot(): Promise<Buffer | null> {
    return readSnapshotFile(this.paths.indexSnapshot);
  }

  writeSnapshot(chunks: readonly string[]): Promise<void> {
    return writeSnapshotFile(this.paths.indexSnapshot, this.paths.tmp, chunks);
  }
}

/** `storage.backend: s3`: objects in `storage.s3.bucket`, with `storage.path` as the local working directory. */
export const s3Backend: BackendFactory = (storage, opts) => {
  if (!storage.s3) throw new Error('storage.backend s3 needs storage.s3 (bucket, region, …)');
  const { reconcileInterval, ...settings } = storage.s3;
  return new S3Backend(storage.path, settings, { reconcileIntervalMs: reconcileInterval, ...(opts.log ? { log: opts.log } : {}) });
};
