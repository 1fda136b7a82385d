/**
 * The bucket as the S3 backend's parts share it (s3-backend.ts, s3-session-files.ts): the client,
 * the settings, the keys, the evictions whose DELETE is in flight, the multipart uploads this
 * process is writing, and the upload of verified bytes (a push's).
 */
import type { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Digest } from '../../oci/digest.js';
import { recordKeys } from '../paths.js';
import { sseParams } from './s3-records.js';
import type { S3Settings } from './s3-client.js';

/** Parts of a pushed blob's upload: S3's minimum (the part is held in memory while it is sent). */
const PUSH_PART_MIN = 5 * 1024 * 1024;

export class S3Bucket {
  /** Evictions whose DELETE is in flight, by key: a new upload of the same digest completes after it. */
  readonly deleting = new Map<string, Promise<void>>();
  /** Multipart uploads this process is writing now: never aborted as orphans. */
  readonly ownUploads = new Set<string>();

  constructor(
    readonly s3: S3Client,
    readonly settings: S3Settings,
  ) {}

  get name(): string {
    return this.settings.bucket;
  }

  /** A key relative to the store (records.ts, paths.ts recordKeys) as the object's key. */
  key(key: string): string {
    return `${this.settings.prefix}${key}`;
  }

  blobKey(d: Digest): string {
    return this.key(recordKeys.blob(d));
  }

  /** Resolves once no deletion of `key` (an eviction) is still in flight. */
  async deletionDone(key: string): Promise<void> {
    await this.deleting.get(key)?.catch(() => undefined);
  }

  /**
   * Puts verified bytes (a push) into the bucket under `d`, sent in parts by lib-storage's Upload,
   * which completes the object only once the body ended without error (a body that fails its own
   * check at the end aborts it) and aborts what it started otherwise.
   */
  async uploadVerified(open: () => Promise<Readable>, d: Digest, size: number): Promise<void> {
    const key = this.blobKey(d);
    await this.deletionDone(key);
    const body = await open();
    body.on('error', () => undefined); // reported to lib-storage, which reads it
    const upload = new Upload({
      client: this.s3,
      params: { Bucket: this.name, Key: key, Body: body, ContentLength: size, ContentType: 'application/octet-stream', ...sseParams(this.settings) },
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
  }
}
