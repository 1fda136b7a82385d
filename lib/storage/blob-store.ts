/**
 * Content-addressed files: read, stat, write-verify-commit, and the start-up sweep of temp files.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { BlobWriter } from './blob-writer.js';
import { StorePaths } from './paths.js';

/** Large reads keep syscalls per GiB low on warm hits. */
const READ_HIGH_WATER_MARK = 512 * 1024;

export interface BlobInfo {
  size: number;
  path: string;
}

export class BlobStore {
  readonly paths: StorePaths;

  constructor(root: string) {
    this.paths = new StorePaths(root);
  }

  /** Creates the layout and deletes temp files left by an interrupted run. */
  async init(): Promise<{ sweptTempFiles: number }> {
    await fsp.mkdir(this.paths.blobs, { recursive: true });
    await fsp.mkdir(this.paths.repositories, { recursive: true });
    let swept = 0;
    try {
      swept = (await fsp.readdir(this.paths.tmp)).length;
    } catch {
      // no tmp dir yet
    }
    await fsp.rm(this.paths.tmp, { recursive: true, force: true });
    await fsp.mkdir(this.paths.tmp, { recursive: true });
    return { sweptTempFiles: swept };
  }

  async stat(d: Digest): Promise<BlobInfo | null> {
    const p = this.paths.blob(d);
    try {
      const st = await fsp.stat(p);
      return st.isFile() ? { size: st.size, path: p } : null;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** Streams stored bytes [start, end] (inclusive). The caller has checked the blob exists. */
  createReadStream(d: Digest, range?: { start: number; end: number }): Readable {
    return createReadStream(this.paths.blob(d), {
      highWaterMark: READ_HIGH_WATER_MARK,
      ...(range ? { start: range.start, end: range.end } : {}),
    });
  }

  /** Small content (manifests) read whole. */
  async readSmall(d: Digest): Promise<Buffer | null> {
    try {
      return await fsp.readFile(this.paths.blob(d));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** A writer into a new temp file; `expected` null means "whatever digest the bytes have" (manifests by tag). */
  createWriter(expected: Digest | null, opts: { maxSize?: number } = {}): BlobWriter {
    const tmpPath = path.join(this.paths.tmp, `${randomBytes(12).toString('hex')}.part`);
    return new BlobWriter({
      tmpPath,
      expected,
      ...(opts.maxSize !== undefined ? { maxSize: opts.maxSize } : {}),
      resolveFinal: (d) => this.paths.blob(d),
    });
  }

  /** Writes small verified content (a manifest already in memory). Returns the digest it was stored under. */
  async putSmall(data: Buffer, expected: Digest | null): Promise<string> {
    const w = this.createWriter(expected);
    await new Promise<void>((resolve, reject) => {
      w.once('error', reject);
      w.end(data, resolve);
    });
    const { digest } = await w.commit(data.length);
    return digest;
  }

  async delete(d: Digest): Promise<void> {
    await fsp.rm(this.paths.blob(d), { force: true });
  }
}
