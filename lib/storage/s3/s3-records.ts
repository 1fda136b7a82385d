/**
 * Records (records.ts) as objects under the bucket's prefix: tags, links, pins, referrers, tags
 * lists. A PUT replaces an object whole, so a reader never sees half a record; "directories" are
 * listed with a delimiter.
 */
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Records } from '../records.js';
import { isNotFound, type S3Settings } from './s3-client.js';

export class S3Records implements Records {
  constructor(
    private readonly s3: S3Client,
    private readonly settings: S3Settings,
  ) {}

  key(key: string): string {
    return `${this.settings.prefix}${key}`;
  }

  async read(key: string): Promise<Buffer | null> {
    try {
      const r = await this.s3.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.key(key) }));
      return Buffer.from(await r.Body!.transformToByteArray());
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async write(key: string, data: string | Buffer): Promise<void> {
    await this.s3.send(new PutObjectCommand({ Bucket: this.settings.bucket, Key: this.key(key), Body: data, ...sseParams(this.settings) }));
  }

  async remove(key: string): Promise<boolean> {
    // S3's DELETE succeeds whether or not the key existed: a HEAD says which (deletes are rare).
    const existed = await this.exists(key);
    if (existed) await this.s3.send(new DeleteObjectCommand({ Bucket: this.settings.bucket, Key: this.key(key) }));
    return existed;
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.s3.send(new HeadObjectCommand({ Bucket: this.settings.bucket, Key: this.key(key) }));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async list(dir: string): Promise<string[]> {
    const prefix = this.key(`${dir}/`);
    const out: string[] = [];
    let token: string | undefined;
    do {
      const r = await this.s3.send(new ListObjectsV2Command({ Bucket: this.settings.bucket, Prefix: prefix, Delimiter: '/', ContinuationToken: token }));
      for (const p of r.CommonPrefixes ?? []) if (p.Prefix) out.push(p.Prefix.slice(prefix.length, -1));
      for (const o of r.Contents ?? []) if (o.Key && o.Key.length > prefix.length) out.push(o.Key.slice(prefix.length));
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  }
}

/** The server-side encryption parameters of a PUT or CreateMultipartUpload. */
export function sseParams(s: S3Settings): { ServerSideEncryption?: 'AES256' | 'aws:kms'; SSEKMSKeyId?: string } {
  if (!s.sse) return {};
  return { ServerSideEncryption: s.sse, ...(s.sse === 'aws:kms' && s.sseKmsKeyId ? { SSEKMSKeyId: s.sseKmsKeyId } : {}) };
}
