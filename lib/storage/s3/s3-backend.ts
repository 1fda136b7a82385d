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
 * The index: listing a bucket is slow and paid, so the in-memory index (blob-index.ts) is the
 * truth for hits, loaded from the local snapshot or, without one, from one listing at start; a
 * listing reconciles it in the background every `reconcileInterval`. A miss asks S3 with one HEAD
 * before going upstream (another replica, or a CLI command, may have stored it).
 *
 * Reads are GETs streamed to the client (ranged for Range requests), never buffered: memory stays
 * bounded whatever the blob size. Optionally (`redirect`) blob GETs are answered with a 307 to a
 * presigned URL, as distribution does.
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { randomBytes } from 'node:crypto';
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
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { tryParseDigest, type Digest } from '../../oci/digest.js';
import { BlobStore, type BackendInfo, type BlobStoreOptions, type StoredBlob } from '../blob-store.js';
import { BlobWriter } from '../blob-writer.js';
import { pump } from '../../util/pump.js';
import type { IndexEntry } from '../blob-index.js';
import { recordKeys } from '../paths.js';
import { MultipartSink } from './multipart-sink.js';
import { S3SessionFiles } from './s3-session-files.js';
import type { SessionFiles } from '../session-files.js';
import { S3Records, sseParams } from './s3-records.js';
import { createS3Client, describeS3Error, isNotFound, type S3Settings } from './s3-client.js';
import { DIR_MODE } from '../modes.js';

/** A committed download's temp file stays at most this long (it is deleted once its download is released). */
const SPOOL_LINGER_MS = 30_000;
/** Unfinished multipart uploads older than this are aborted whoever started them. */
const ORPHAN_MAX_AGE_MS = 24 * 3_600_000;
const ORPHAN_SWEEP_INTERVAL_MS = 3_600_000;
/** Parts of a pushed blob's upload: S3's minimum (the part is held in memory while it is sent). */
const PUSH_PART_MIN = 5 * 1024 * 1024;

export interface S3BlobStoreOptions extends BlobStoreOptions {
  /** How often the index is reconciled with a listing of the bucket. */
  reconcileIntervalMs?: number;
  /** An existing client (tests); default: one built from the settings. */
  client?: S3Client;
}

export class S3BlobStore extends BlobStore {
  readonly s3: S3Client;
  readonly settings: S3Settings;
  private readonly objects: S3Records;
  /** Evictions whose DELETE is in flight, by key: a new upload of the same digest completes after it. */
  private readonly deleting = new Map<string, Promise<void>>();
  /** Multipart uploads this process is writing now: never aborted as orphans. */
  private readonly ownUploads = new Set<string>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly spoolTimers = new Set<NodeJS.Timeout>();
  private readonly reconcileIntervalMs: number;
  /** Tells whether a digest is being downloaded by some replica (cluster mode: its lease). */
  downloadingElsewhere: ((digest: string) => Promise<boolean>) | null = null;
  private reconciling: Promise<void> | null = null;
  /** The snapshot's recency, read once for `lastUsed` (a command's `ls` asks it for every tag). */
  private snapshotRecency: Promise<Map<string, { size: number; mtime: number }>> | null = null;
  /** Reconciliations finished (tests, metrics). */
  reconciliations = 0;

  constructor(workDir: string, settings: S3Settings, opts: S3BlobStoreOptions) {
    const s3 = opts.client ?? createS3Client(settings);
    const records = new S3Records(s3, settings);
    super(workDir, { ...opts, records });
    this.s3 = s3;
    this.settings = settings;
    this.objects = records;
    this.reconcileIntervalMs = opts.reconcileIntervalMs ?? 3_600_000;
  }

  override info(): BackendInfo {
    return { kind: 's3', location: `s3://${this.settings.bucket}/${this.settings.prefix}` };
  }

  blobKey(d: Digest): string {
    return this.objects.key(recordKeys.blob(d));
  }

  override async init(opts: { sweep?: boolean; sweepOlderThanMs?: number } = {}): Promise<{ sweptTempFiles: number; blobs: number; bytes: number; ms: number }> {
    const started = performance.now();
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
    const { blobs, bytes } = await this.loadIndex();
    if (opts.sweep !== false) {
      const reconcile = setInterval(() => void this.reconcile(), this.reconcileIntervalMs);
      const orphans = setInterval(() => void this.abortOrphans(ORPHAN_MAX_AGE_MS).catch((err: unknown) => this.log?.warn({ err: describeS3Error(err) }, 'orphan sweep failed')), ORPHAN_SWEEP_INTERVAL_MS);
      reconcile.unref();
      orphans.unref();
      this.timers.push(reconcile, orphans);
    }
    return { sweptTempFiles: swept, blobs, bytes, ms: Math.round(performance.now() - started) };
  }

  override async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    for (const t of this.spoolTimers) clearTimeout(t);
    this.spoolTimers.clear();
    await this.reconciling?.catch(() => undefined);
    await Promise.allSettled([...this.deleting.values()]);
    this.s3.destroy();
  }

  /**
   * The index at start: the local snapshot's entries, then one listing of the bucket (awaited when
   * there is no snapshot, else in the background) adds what others stored and drops what is gone.
   */
  private async loadIndex(): Promise<{ blobs: number; bytes: number }> {
    const snapshot = await this.readSnapshot();
    if (snapshot.size === 0) {
      await this.reconcile();
    } else {
      const pinned = await this.listPins();
      for (const [digest, k] of snapshot) this.index.add(digest, k.size, k.mtime, pinned.has(digest));
      void this.reconcile();
    }
    const s = this.index.stats();
    return { blobs: s.cachedCount + s.pinnedCount, bytes: s.cachedBytes + s.pinnedBytes };
  }

  /** Lists the bucket and brings the index in line with it. One at a time. */
  reconcile(): Promise<void> {
    this.reconciling ??= this.reconcileNow().finally(() => {
      this.reconciling = null;
    });
    return this.reconciling;
  }

  private async reconcileNow(): Promise<void> {
    const started = this.now();
    const seen = new Set<string>();
    try {
      const found: Array<{ digest: string; size: number; mtime: number; pinned: boolean }> = [];
      for await (const o of this.listStored()) found.push(o);
      found.sort((a, b) => a.mtime - b.mtime);
      for (const o of found) {
        seen.add(o.digest);
        if (!this.index.has(o.digest)) this.index.add(o.digest, o.size, o.mtime, o.pinned);
        else if (o.pinned && !this.index.isPinned(o.digest)) this.index.pin(o.digest, o.size);
      }
      // Gone from the bucket (deleted by another replica or by hand): forgotten, unless stored
      // here after the listing began.
      for (const e of [...this.index.entries()]) {
        if (seen.has(e.digest) || this.reading.has(e.digest)) continue;
        if (e.touchedAt >= started && !this.index.isPinned(e.digest)) continue;
        const d = tryParseDigest(e.digest);
        if (d && (await this.objectSize(d).catch(() => -1)) === null) this.index.remove(e.digest);
      }
      this.reconciliations++;
    } catch (err) {
      this.log?.warn({ err: describeS3Error(err) }, 'listing the bucket to reconcile the index failed; will try again');
    }
  }

  /**
   * Aborts unfinished multipart uploads under blobs/ that are not this process's, started more
   * than `olderThanMs` ago (0: all), and whose digest no replica is downloading. Returns how many.
   */
  async abortOrphans(olderThanMs: number): Promise<number> {
    const cutoff = this.now() - olderThanMs;
    let aborted = 0;
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    for (;;) {
      const r = await this.s3.send(new ListMultipartUploadsCommand({ Bucket: this.settings.bucket, Prefix: this.objects.key('blobs/'), KeyMarker: keyMarker, UploadIdMarker: idMarker }));
      for (const u of r.Uploads ?? []) {
        if (!u.Key || !u.UploadId || this.ownUploads.has(u.UploadId)) continue;
        if (olderThanMs > 0 && (u.Initiated?.getTime() ?? 0) > cutoff) continue;
        const [alg, , hex] = u.Key.slice(this.objects.key('blobs/').length).split('/');
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
    const key = this.blobKey(d);
    const r = await this.s3.send(new ListMultipartUploadsCommand({ Bucket: this.settings.bucket, Prefix: key }));
    let n = 0;
    for (const u of r.Uploads ?? []) {
      if (u.Key !== key || !u.UploadId || this.ownUploads.has(u.UploadId)) continue;
      await this.s3.send(new AbortMultipartUploadCommand({ Bucket: this.settings.bucket, Key: key, UploadId: u.UploadId })).catch(() => undefined);
      this.log?.info({ key, uploadId: u.UploadId }, 'aborted the unfinished upload of a download taken over');
      n++;
    }
    return n;
  }

  private async objectSize(d: Digest): Promise<number | null> {
    try {
      const h = await this.s3.send(new HeadObjectCommand({ Bucket: this.settings.bucket, Key: this.blobKey(d) }));
      return h.ContentLength ?? null;
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  protected override maybeTouch(_d: Digest, e: IndexEntry): void {
    // Objects have no mtime to set: recency lives in the index, its snapshot, and Redis in cluster mode.
    e.touchedAt = this.now();
  }

  /** The recency the index snapshot recorded (written by the server), else when the object was stored. */
  override async lastUsed(d: Digest): Promise<Date | null> {
    this.snapshotRecency ??= this.readSnapshot();
    const known = (await this.snapshotRecency).get(d.value);
    try {
      const h = await this.s3.send(new HeadObjectCommand({ Bucket: this.settings.bucket, Key: this.blobKey(d) }));
      const stored = h.LastModified?.getTime() ?? 0;
      return new Date(Math.max(stored, known?.mtime ?? 0));
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  override async adopt(d: Digest): Promise<boolean> {
    if (this.index.has(d.value)) return true;
    try {
      const size = await this.objectSize(d);
      if (size === null) return false;
      this.index.add(d.value, size, this.now(), await this.pinnedOnDisk(d));
      return this.index.has(d.value);
    } catch (err) {
      this.log?.warn({ digest: d.value, err: describeS3Error(err) }, 'S3 HEAD failed; treating the content as not stored');
      return false;
    }
  }

  override async probeShared(d: Digest): Promise<{ part: number | null; final: number | null }> {
    return { part: null, final: this.index.peek(d.value) ?? (await this.objectSize(d).catch(() => null)) };
  }

  override async open(d: Digest): Promise<StoredBlob | null> {
    if (!this.index.has(d.value)) await this.adopt(d);
    const e = this.index.use(d.value);
    if (!e) return null;
    // The GET is sent now: its answer says the object exists before the client is answered.
    // With redirects the client fetches it from S3 itself: no GET here unless asked to stream.
    let first: GetObjectCommandOutput | null = null;
    if (!this.settings.redirect) {
      try {
        first = await this.s3.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.blobKey(d) }));
      } catch (err) {
        if (isNotFound(err)) {
          this.index.remove(d.value);
          this.log?.warn({ digest: d.value }, 'stored object vanished from the bucket; forgetting it');
          return null;
        }
        throw err;
      }
    }
    this.observer?.used(d.value);
    const size = first?.ContentLength ?? e.size;
    const finished = this.startReading(d.value);
    let firstBody: Readable | null = (first?.Body as Readable | undefined) ?? null;
    const body = async (range?: { start: number; end: number }): Promise<Readable> => {
      const whole = !range || (range.start === 0 && range.end >= size - 1);
      const b = firstBody;
      firstBody = null;
      if (whole && b) return b;
      b?.destroy();
      const r = await this.s3.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.blobKey(d), ...(whole ? {} : { Range: `bytes=${range.start}-${range.end}` }) }));
      return r.Body as Readable;
    };
    return {
      size,
      stream: (range) => {
        const out = new PassThrough({ highWaterMark: 512 * 1024 });
        out.once('close', finished);
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
          finished();
        }
      },
      close: async () => {
        firstBody?.destroy();
        firstBody = null;
        finished();
      },
      ...(this.settings.redirect
        ? {
            redirect: async () => {
              finished();
              return this.presignedUrl(d);
            },
          }
        : {}),
    };
  }

  override async readSmall(d: Digest): Promise<Buffer | null> {
    if (!(await this.present(d))) return null;
    this.observer?.used(d.value);
    try {
      const r = await this.s3.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.blobKey(d) }));
      return Buffer.from(await r.Body!.transformToByteArray());
    } catch (err) {
      if (isNotFound(err)) {
        this.index.remove(d.value);
        return null;
      }
      throw err;
    }
  }

  /** A URL the client may GET the object from for `redirectTTL` (redirects: storage.s3.redirect). */
  async presignedUrl(d: Digest): Promise<string> {
    return getSignedUrl(this.s3, new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.blobKey(d) }), { expiresIn: Math.max(1, Math.round(this.settings.redirectTTL / 1000)) });
  }

  override createWriter(expected: Digest | null, opts: { maxSize?: number; pinned?: boolean; keepRecent?: number; shared?: boolean } = {}): BlobWriter {
    // Never a shared temp file: the local directory is this replica's alone (other replicas
    // follow through the peer endpoint, lib/cache/cluster-download.ts).
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
        this.index.add(d.value, size, this.now(), opts.pinned === true);
        this.observer?.committed(d.value, size, opts.pinned === true);
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
      this.blobKey(d),
      writer,
      {
        started: (id) => this.ownUploads.add(id),
        settled: (id) => this.ownUploads.delete(id),
        deletionDone: async (key) => {
          await this.deleting.get(key)?.catch(() => undefined);
        },
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

  override async commitVerifiedFile(file: string, d: Digest, size: number): Promise<void> {
    await this.commitVerified(
      async () => {
        const fh = await fsp.open(file, 'r');
        return createReadStream('', { fd: fh, autoClose: true });
      },
      d,
      size,
    );
    await fsp.rm(file, { force: true });
  }

  /**
   * Puts verified bytes (a push) into the bucket as pinned content: the pin first, then the
   * object, sent in parts by lib-storage's Upload, which completes it only once the body ended
   * without error (a body that fails its own check at the end aborts it) and aborts what it
   * started otherwise. Already stored: only pinned.
   */
  async commitVerified(open: () => Promise<Readable>, d: Digest, size: number): Promise<void> {
    await this.writePinFile(d);
    if (this.index.has(d.value) || (await this.objectSize(d)) === size) {
      if (!this.index.has(d.value)) this.index.add(d.value, size, this.now(), true);
      this.index.pin(d.value);
      this.observer?.pinChanged(d.value, true, size);
      return;
    }
    const key = this.blobKey(d);
    await this.deleting.get(key)?.catch(() => undefined);
    const body = await open();
    body.on('error', () => undefined); // reported to lib-storage, which reads it
    const upload = new Upload({
      client: this.s3,
      params: { Bucket: this.settings.bucket, Key: key, Body: body, ContentLength: size, ContentType: 'application/octet-stream', ...sseParams(this.settings) },
      // lib-storage holds each part in memory while it is sent: small parts, one at a time, keep a
      // push's memory flat whatever its size (S3 allows 10,000 parts).
      partSize: Math.max(PUSH_PART_MIN, Math.ceil(size / 9_000)),
      queueSize: 1,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } finally {
      body.destroy();
    }
    this.index.add(d.value, size, this.now(), true);
    this.observer?.pinChanged(d.value, true, size);
  }

  override sessionFiles(): SessionFiles {
    return new S3SessionFiles(this, this.objects);
  }

  protected override async removeContent(d: Digest): Promise<void> {
    const key = this.blobKey(d);
    await this.deleting.get(key)?.catch(() => undefined);
    await this.s3.send(new DeleteObjectCommand({ Bucket: this.settings.bucket, Key: key }));
  }

  protected override evict(digest: string, entry: IndexEntry): void {
    const d = tryParseDigest(digest);
    if (!d) return;
    this.log?.info({ digest, size: entry.size }, 'evicted least recently served content');
    this.observer?.evicted?.(digest);
    // Recorded at once, before any await: a re-download of the same digest completes its upload
    // only after this DELETE (multipart-sink.ts), so the new object is never deleted.
    const key = this.blobKey(d);
    const prev = this.deleting.get(key) ?? Promise.resolve();
    const p = prev
      .catch(() => undefined)
      .then(async () => {
        await this.s3.send(new DeleteObjectCommand({ Bucket: this.settings.bucket, Key: key }));
      })
      .catch((err: unknown) => this.log?.error({ digest, err: describeS3Error(err) }, 'eviction failed to delete an object'))
      .finally(() => {
        if (this.deleting.get(key) === p) this.deleting.delete(key);
      });
    this.deleting.set(key, p);
  }

  /** Deletions of evicted objects still in flight (tests wait for them). */
  async evictionsSettled(): Promise<void> {
    while (this.deleting.size > 0) await Promise.allSettled([...this.deleting.values()]);
  }

  override async *listStored(): AsyncGenerator<{ digest: string; size: number; mtime: number; pinned: boolean }> {
    const pinned = await this.listPins();
    const prefix = this.objects.key('blobs/');
    let token: string | undefined;
    do {
      const r = await this.s3.send(new ListObjectsV2Command({ Bucket: this.settings.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of r.Contents ?? []) {
        // blobs/<alg>/<two hex>/<hex>
        const [alg, fan, hex, ...more] = (o.Key?.slice(prefix.length) ?? '').split('/');
        const d = alg && hex && more.length === 0 && hex.startsWith(fan ?? '-') ? tryParseDigest(`${alg}:${hex}`) : null;
        if (!d || o.Size === undefined) continue;
        yield { digest: d.value, size: o.Size, mtime: o.LastModified?.getTime() ?? 0, pinned: pinned.has(d.value) };
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
  }

  /** Replicas on the same bucket and prefix are one store: the id follows from where it is. */
  override async storeId(): Promise<string> {
    return createHash('sha256')
      .update(`s3\n${this.settings.endpoint ?? 'aws'}\n${this.settings.bucket}\n${this.settings.prefix}`)
      .digest('hex')
      .slice(0, 32);
  }

  override async sweepTemp(): Promise<number> {
    return 0; // the local directory is swept whole at start
  }
}
