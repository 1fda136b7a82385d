/**
 * A download or push on its way into the bucket: the bytes a BlobWriter puts in its local temp
 * file are sent on as the parts of one multipart upload on the blob's **final** key, while the
 * writer hashes them. S3 shows an object only once CompleteMultipartUpload is sent, and that is
 * sent only after the writer verified the digest (BlobWriter's `publish`; its followers get the
 * last byte at that moment, without waiting for the completion); a blob that fails is
 * aborted, so nothing unverified ever becomes an object. An upload left by a crash is invisible
 * too, and aborted later (S3Backend.abortOrphans).
 *
 * Parts are read back from the temp file (never held in memory: one file stream per part in
 * flight) once `partSize` bytes are there, one at a time, so the object is complete moments after
 * the last byte arrived rather than after a second full upload.
 */
import { createReadStream, promises as fsp, type ReadStream } from 'node:fs';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { Logger } from 'pino';
import type { BlobWriter } from '../blob-writer.js';
import { sseParams } from './s3-records.js';
import { describeS3Error, type S3Settings } from './s3-client.js';

/** Attempts per part: a streamed body cannot be replayed by the SDK's own retries. */
const PART_ATTEMPTS = 3;

export interface SinkHooks {
  /** An upload started (its id), and settled: the store never aborts its own uploads as orphans. */
  started(uploadId: string): void;
  settled(uploadId: string): void;
  /** Resolves once no deletion of `key` (an eviction) is still in flight. */
  deletionDone(key: string): Promise<void>;
  /** The object exists now: another process's unfinished upload of the same key is an orphan. */
  completed(key: string): void;
}

export class MultipartSink {
  private uploadId: Promise<string> | null = null;
  private parts: CompletedPart[] = [];
  /** Bytes handed to parts so far. */
  private sent = 0;
  /** Parts go one after another. */
  private chain: Promise<void> = Promise.resolve();
  private failure: Error | null = null;
  private finished = false;

  constructor(
    private readonly s3: S3Client,
    private readonly settings: S3Settings,
    private readonly key: string,
    private readonly writer: BlobWriter,
    private readonly hooks: SinkHooks,
    private readonly log: Logger | undefined,
  ) {
    writer.events.on('progress', this.onProgress);
    writer.events.on('rewound', this.onRewound);
    writer.events.once('failed', () => void this.abort());
  }

  private readonly onProgress = (): void => {
    // Bytes from a source trusted by digest only (a peer) may be rewound: sent at commit.
    if (this.writer.withhold || this.finished) return;
    const size = this.settings.partSize;
    while (this.writer.written - this.sent >= size) {
      const start = this.sent;
      this.sent += size;
      this.queuePart(start, start + size);
    }
  };

  private readonly onRewound = (): void => {
    // The temp file starts over: so does the upload (its parts no longer match the file).
    const old = this.uploadId;
    const chain = this.chain;
    this.uploadId = null;
    this.parts = [];
    this.sent = 0;
    this.failure = null;
    this.chain = chain.catch(() => undefined).then(() => (old ? this.abortUpload(old) : undefined));
  };

  private queuePart(start: number, end: number): void {
    const partNumber = this.parts.length + 1;
    const slot: CompletedPart = { PartNumber: partNumber };
    this.parts.push(slot);
    this.chain = this.chain.then(async () => {
      if (this.failure) return;
      try {
        slot.ETag = await this.uploadPart(partNumber, start, end);
      } catch (err) {
        this.failure = err as Error;
      }
    });
  }

  private upload(): Promise<string> {
    this.uploadId ??= this.s3
      .send(new CreateMultipartUploadCommand({ Bucket: this.settings.bucket, Key: this.key, ContentType: 'application/octet-stream', ...sseParams(this.settings) }))
      .then((r) => {
        if (!r.UploadId) throw new Error('S3 answered CreateMultipartUpload without an UploadId');
        this.hooks.started(r.UploadId);
        return r.UploadId;
      });
    return this.uploadId;
  }

  private async uploadPart(partNumber: number, start: number, end: number): Promise<string> {
    const uploadId = await this.upload();
    let last: unknown;
    for (let attempt = 1; attempt <= PART_ATTEMPTS; attempt++) {
      let body: ReadStream | null = null;
      try {
        body = await this.readRange(start, end);
        const r = await this.s3.send(
          new UploadPartCommand({ Bucket: this.settings.bucket, Key: this.key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: end - start }),
        );
        if (!r.ETag) throw new Error(`S3 answered part ${partNumber} without an ETag`);
        return r.ETag;
      } catch (err) {
        last = err;
        if (this.writer.state === 'failed') break;
        await new Promise((r) => setTimeout(r, 200 * attempt));
      } finally {
        body?.destroy();
      }
    }
    throw new Error(`uploading part ${partNumber} of ${this.key} failed: ${describeS3Error(last)}`);
  }

  /**
   * Bytes [start, end) of the temp file as a stream. The file is opened first: if the blob failed
   * meanwhile (its file deleted), that is a rejection here, never an 'error' event on a stream
   * nobody listens to yet.
   */
  private async readRange(start: number, end: number): Promise<ReadStream> {
    const fh = await fsp.open(this.writer.tmpPath, 'r');
    const stream = createReadStream('', { fd: fh, start, end: end - 1, autoClose: true });
    stream.on('error', () => undefined); // reported to the SDK, which reads it
    return stream;
  }

  /**
   * Publishes the verified blob of `size` bytes: the rest as the last part, then
   * CompleteMultipartUpload (a blob smaller than one part: a single PUT instead).
   */
  async complete(size: number): Promise<void> {
    this.finished = true;
    const deletion = this.hooks.deletionDone(this.key);
    if (this.uploadId === null && size <= this.settings.partSize) {
      await deletion;
      const body = size === 0 ? null : await this.readRange(0, size);
      try {
        await this.s3.send(
          new PutObjectCommand({
            Bucket: this.settings.bucket,
            Key: this.key,
            Body: body ?? Buffer.alloc(0),
            ContentLength: size,
            ContentType: 'application/octet-stream',
            ...sseParams(this.settings),
          }),
        );
      } finally {
        body?.destroy();
      }
      this.detach();
      this.hooks.completed(this.key);
      return;
    }
    // Everything not sent yet (also what a peer's withheld bytes left for the end).
    while (size - this.sent > this.settings.partSize) {
      const start = this.sent;
      this.sent += this.settings.partSize;
      this.queuePart(start, start + this.settings.partSize);
    }
    if (size > this.sent) {
      const start = this.sent;
      this.sent = size;
      this.queuePart(start, size);
    }
    await this.chain;
    if (this.failure) throw this.failure;
    const uploadId = await this.upload();
    await deletion;
    await this.s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: this.settings.bucket,
        Key: this.key,
        UploadId: uploadId,
        MultipartUpload: { Parts: this.parts.map((p) => ({ PartNumber: p.PartNumber, ETag: p.ETag })) },
      }),
    );
    this.hooks.settled(uploadId);
    this.detach();
    this.hooks.completed(this.key);
  }

  /** The blob failed (or its publication did): the upload is aborted, no object appears. */
  async abort(): Promise<void> {
    if (this.finished && this.uploadId === null) return;
    this.finished = true;
    this.detach();
    await this.chain.catch(() => undefined);
    const id = this.uploadId;
    this.uploadId = null;
    if (id) await this.abortUpload(id);
  }

  private async abortUpload(idPromise: Promise<string>): Promise<void> {
    let id: string;
    try {
      id = await idPromise;
    } catch {
      return; // never created
    }
    try {
      await this.s3.send(new AbortMultipartUploadCommand({ Bucket: this.settings.bucket, Key: this.key, UploadId: id }));
    } catch (err) {
      // Left for the orphan sweep (at start, and hourly).
      this.log?.warn({ key: this.key, err: describeS3Error(err) }, 'could not abort a multipart upload; the orphan sweep will');
    } finally {
      this.hooks.settled(id);
    }
  }

  private detach(): void {
    this.writer.events.off('progress', this.onProgress);
    this.writer.events.off('rewound', this.onRewound);
  }
}
