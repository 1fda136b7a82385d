/**
 * Push sessions in the bucket (the S3 backend), so that any replica continues a session another
 * opened (a load balancer sends each request of a push anywhere):
 *
 *   <prefix>uploads/<uuid>/info.json          the session's repository, owner and start
 *   <prefix>uploads/<uuid>/active             when a chunk last arrived (ms since epoch, the
 *                                             server's clock): idle sessions are swept by it
 *   <prefix>uploads/<uuid>/<offset, 16 digits> one object per chunk received, in order
 *
 * A chunk is received into a local temp file first and PUT once it is complete (in pieces of at
 * most 1 GiB), so a chunk that breaks off leaves nothing in the bucket; the local directory needs
 * room for the largest chunk a client sends (often the whole blob). The session's size is the chunks' contiguous
 * length. Finishing streams the chunks, in order, into a multipart upload on the blob's final key
 * while hashing them once more: the upload is completed only if they hash to the digest (else
 * lib-storage aborts it), then the session's objects are deleted.
 */
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type _Object } from '@aws-sdk/client-s3';
import type { Digest } from '../../oci/digest.js';
import { DigestMismatchError, UploadInvalidError } from '../errors.js';
import type { SessionDoc, SessionEntry, SessionFiles } from '../session-files.js';
import type { S3Bucket } from './s3-bucket.js';
import { sseParams } from './s3-records.js';
import { isNotFound } from './s3-client.js';
import { DIR_MODE, FILE_MODE } from '../modes.js';

const OFFSET_DIGITS = 16;
/** Bytes per chunk object at most: S3 takes at most 5 GiB in one PUT. */
const MAX_PIECE = 1024 * 1024 * 1024;

interface Chunk {
  offset: number;
  size: number;
  key: string;
}

export class S3SessionFiles implements SessionFiles {
  constructor(
    private readonly objects: S3Bucket,
    /** The local directory where a chunk is received before it is PUT. */
    private readonly tmp: string,
  ) {}

  private get bucket(): string {
    return this.objects.name;
  }

  private prefix(uuid?: string): string {
    return this.objects.key(uuid === undefined ? 'uploads/' : `uploads/${uuid}/`);
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.tmp, { recursive: true, mode: DIR_MODE });
  }

  /** Every object under uploads/ (or one session's), listed. */
  private async listObjects(uuid?: string): Promise<_Object[]> {
    const out: _Object[] = [];
    let token: string | undefined;
    do {
      const r = await this.objects.s3.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix(uuid), ContinuationToken: token }));
      out.push(...(r.Contents ?? []));
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /** A session's chunks in order, as far as they are contiguous from byte 0. */
  private chunksOf(objects: _Object[], uuid: string): Chunk[] {
    const base = this.prefix(uuid);
    const chunks: Chunk[] = [];
    for (const o of objects) {
      const name = o.Key?.slice(base.length) ?? '';
      if (!/^\d{16}$/.test(name) || o.Size === undefined) continue;
      chunks.push({ offset: Number(name), size: o.Size, key: o.Key! });
    }
    chunks.sort((a, b) => a.offset - b.offset);
    const contiguous: Chunk[] = [];
    let at = 0;
    for (const c of chunks) {
      if (c.offset !== at) break;
      contiguous.push(c);
      at += c.size;
    }
    return contiguous;
  }

  private async readDoc(uuid: string): Promise<SessionDoc | null | undefined> {
    try {
      const r = await this.objects.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: `${this.prefix(uuid)}info.json` }));
      const text = await r.Body!.transformToString();
      try {
        return JSON.parse(text) as SessionDoc;
      } catch {
        return null;
      }
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async list(): Promise<SessionEntry[]> {
    const byId = new Map<string, _Object[]>();
    const base = this.prefix();
    for (const o of await this.listObjects()) {
      const uuid = o.Key?.slice(base.length).split('/')[0];
      if (!uuid) continue;
      let list = byId.get(uuid);
      if (!list) byId.set(uuid, (list = []));
      list.push(o);
    }
    const out: SessionEntry[] = [];
    for (const [uuid, objects] of byId) {
      const hasInfo = objects.some((o) => o.Key === `${this.prefix(uuid)}info.json`);
      const doc = hasInfo ? ((await this.readDoc(uuid)) ?? null) : null;
      const bytes = this.chunksOf(objects, uuid).reduce((n, c) => n + c.size, 0);
      const marked = objects.some((o) => o.Key === `${this.prefix(uuid)}active`) ? await this.readActive(uuid) : null;
      const lastActive = marked ?? Math.max(0, ...objects.map((o) => o.LastModified?.getTime() ?? 0));
      out.push({ uuid, doc, bytes, lastActive });
    }
    return out;
  }

  async create(uuid: string, doc: SessionDoc, now: number): Promise<void> {
    await this.put(`${this.prefix(uuid)}info.json`, JSON.stringify(doc));
    await this.touch(uuid, now);
  }

  private async put(key: string, body: string): Promise<void> {
    await this.objects.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: Buffer.byteLength(body), ...sseParams(this.objects.settings) }));
  }

  private async readActive(uuid: string): Promise<number | null> {
    try {
      const r = await this.objects.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: `${this.prefix(uuid)}active` }));
      const n = Number(await r.Body!.transformToString());
      return Number.isFinite(n) ? n : null;
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async read(uuid: string): Promise<{ doc: SessionDoc | null; size: number } | null> {
    const doc = await this.readDoc(uuid);
    if (doc === undefined) return null;
    const size = this.chunksOf(await this.listObjects(uuid), uuid).reduce((n, c) => n + c.size, 0);
    return { doc, size };
  }

  async append(uuid: string, offset: number, source: Readable): Promise<void> {
    // Received whole first: a chunk that breaks off never reaches the bucket.
    const file = path.join(this.tmp, `chunk-${randomBytes(8).toString('hex')}`);
    try {
      await pipeline(source, createWriteStream(file, { flags: 'wx', mode: FILE_MODE }));
      const { size } = await fsp.stat(file);
      // One object per piece of at most MAX_PIECE (S3 takes at most 5 GiB in one PUT); a chunk
      // counts only once all its pieces are there (the session's size is the contiguous length).
      for (let at = 0; at < size; at += MAX_PIECE) {
        const len = Math.min(MAX_PIECE, size - at);
        const fh = await fsp.open(file, 'r');
        const body = createReadStream('', { fd: fh, start: at, end: at + len - 1, autoClose: true });
        body.on('error', () => undefined); // reported to the SDK, which reads it
        try {
          await this.objects.s3.send(
            new PutObjectCommand({ Bucket: this.bucket, Key: `${this.prefix(uuid)}${String(offset + at).padStart(OFFSET_DIGITS, '0')}`, Body: body, ContentLength: len, ...sseParams(this.objects.settings) }),
          );
        } finally {
          body.destroy();
        }
      }
    } finally {
      await fsp.rm(file, { force: true });
    }
  }

  async touch(uuid: string, now: number): Promise<void> {
    // The server's clock, not the object store's: sweeping compares it with the same clock.
    await this.put(`${this.prefix(uuid)}active`, String(now));
  }

  async *bytes(uuid: string, size: number): AsyncGenerator<Buffer> {
    let left = size;
    for (const c of this.chunksOf(await this.listObjects(uuid), uuid)) {
      if (left <= 0) break;
      const r = await this.objects.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: c.key }));
      for await (const part of r.Body as AsyncIterable<Buffer>) {
        const take = part.length <= left ? part : part.subarray(0, left);
        left -= take.length;
        yield take;
        if (left <= 0) break;
      }
    }
    if (left > 0) throw new UploadInvalidError(`upload ${uuid} holds fewer bytes than ${size}`);
  }

  /** Streams the chunks, in order, into an upload on the blob's key, hashed once more on the way. */
  async publish(uuid: string, size: number, digest: Digest): Promise<void> {
    await this.objects.uploadVerified(
      async () =>
        Readable.from(
          (async function* (chunks: AsyncIterable<Buffer>) {
            // Hashed once more on the way: bytes that changed in between never complete the upload.
            const hash = createHash(digest.algorithm);
            for await (const c of chunks) {
              hash.update(c);
              yield c;
            }
            if (hash.digest('hex') !== digest.hex) throw new DigestMismatchError(`upload ${uuid} no longer hashes to ${digest.value}`);
          })(this.bytes(uuid, size)),
          { objectMode: false },
        ),
      digest,
      size,
    );
  }

  async remove(uuid: string): Promise<void> {
    const keys = (await this.listObjects(uuid)).map((o) => o.Key).filter((k): k is string => k !== undefined);
    for (let i = 0; i < keys.length; i += 1000) {
      await this.objects.s3.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })), Quiet: true } }));
    }
  }
}
