/**
 * Upload scratch space: one directory per push session under `uploads/` (see paths.ts). Bytes are
 * streamed to `data` at the session's offset, never buffered; a chunk that fails part-way is cut
 * back off, so a session only ever holds whole chunks. Finishing verifies the digest and renames
 * `data` into blobs/ (one rename: a crash leaves either a session or a verified blob, never half
 * of one in blobs/).
 *
 * Digest state: each session keeps an incremental hash in memory (`Hash.copy()` lets the closing
 * PUT check the digest without finishing it), so a PUT costs no re-read of a multi-GiB file. The
 * hash is only a cache of the file: after a restart, or if it disagrees with the file's size, the
 * file is hashed again from disk. Sessions therefore survive restarts, cost O(1) memory each, and
 * the file stays the single source of truth.
 */
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import path from 'node:path';
import { OciError } from '../oci/errors.js';
import type { Digest, DigestAlgorithm } from '../oci/digest.js';
import type { BlobStore } from './blob-store.js';
import type { RepoRef } from './repo-store.js';

/** Session ids are UUIDs we generated: anything else is refused before it reaches a path. */
export const UPLOAD_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface UploadInfo {
  uuid: string;
  repo: RepoRef;
  startedAt: number;
}

interface HashState {
  algorithm: DigestAlgorithm;
  hash: Hash;
  /** Bytes the hash has seen. */
  offset: number;
}

export class UploadStore {
  private readonly blobs: BlobStore;
  private readonly hashes = new Map<string, HashState>();
  /** One operation at a time per session (chunks are appended in order). */
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly now: () => number;

  constructor(blobs: BlobStore, opts: { now?: () => number } = {}) {
    this.blobs = blobs;
    this.now = opts.now ?? Date.now;
  }

  private dir(uuid: string): string {
    if (!UPLOAD_ID_RE.test(uuid)) throw new OciError('BLOB_UPLOAD_UNKNOWN', 'unknown upload session');
    return this.blobs.paths.upload(uuid);
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.blobs.paths.uploads, { recursive: true });
  }

  async create(repo: RepoRef): Promise<UploadInfo> {
    const uuid = randomUUID();
    const dir = this.dir(uuid);
    await fsp.mkdir(dir, { recursive: true });
    await fsp.writeFile(path.join(dir, 'data'), '');
    const info: UploadInfo = { uuid, repo, startedAt: this.now() };
    // info.json last: a session without it is incomplete and is swept like an abandoned one.
    const tmp = path.join(dir, 'info.json.tmp');
    await fsp.writeFile(tmp, JSON.stringify({ namespace: repo.upstream, name: repo.name, startedAt: info.startedAt }));
    await fsp.rename(tmp, path.join(dir, 'info.json'));
    await touch(path.join(dir, 'info.json'), info.startedAt);
    this.hashes.set(uuid, { algorithm: 'sha256', hash: createHash('sha256'), offset: 0 });
    return info;
  }

  /** The session, if it exists and belongs to `repo`; else BLOB_UPLOAD_UNKNOWN. Returns its size. */
  async get(uuid: string, repo: RepoRef): Promise<{ info: UploadInfo; size: number }> {
    const dir = this.dir(uuid);
    let raw: string;
    let size: number;
    try {
      raw = await fsp.readFile(path.join(dir, 'info.json'), 'utf8');
      size = (await fsp.stat(path.join(dir, 'data'))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new OciError('BLOB_UPLOAD_UNKNOWN', `upload ${uuid} unknown`);
      throw err;
    }
    let doc: { namespace?: unknown; name?: unknown; startedAt?: unknown };
    try {
      doc = JSON.parse(raw) as typeof doc;
    } catch {
      throw new OciError('BLOB_UPLOAD_UNKNOWN', `upload ${uuid} unknown`);
    }
    // Another repository's session is unknown here: its id is no key to someone else's upload.
    if (doc.namespace !== repo.upstream || doc.name !== repo.name) {
      throw new OciError('BLOB_UPLOAD_UNKNOWN', `upload ${uuid} unknown to this repository`);
    }
    return { info: { uuid, repo, startedAt: typeof doc.startedAt === 'number' ? doc.startedAt : 0 }, size };
  }

  /** Runs `fn` alone for this session. */
  async exclusive<T>(uuid: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(uuid) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const settled = run.catch(() => undefined);
    this.locks.set(uuid, settled);
    void settled.then(() => {
      if (this.locks.get(uuid) === settled) this.locks.delete(uuid);
    });
    return run;
  }

  /**
   * Appends `body` at offset `size` (the session's current size). On any failure (client gone,
   * `expectedLength` not met, disk full) the file is cut back to `size`: the chunk left no trace.
   * Returns the new size.
   */
  async append(uuid: string, size: number, body: Readable, expectedLength: number | null): Promise<number> {
    const file = path.join(this.dir(uuid), 'data');
    const state = await this.hashState(uuid, file, size, 'sha256');
    const hash = state.hash.copy();
    let received = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        received += chunk.length;
        if (expectedLength !== null && received > expectedLength) {
          cb(new OciError('SIZE_INVALID', `body is longer than its declared length ${expectedLength}`));
          return;
        }
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(body, meter, createWriteStream(file, { flags: 'r+', start: size }));
      if (expectedLength !== null && received !== expectedLength) {
        throw new OciError('SIZE_INVALID', `received ${received} bytes, declared ${expectedLength}`);
      }
    } catch (err) {
      await fsp.truncate(file, size).catch(() => undefined);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE') {
        // The request body broke off (client gone): the client's failure, not ours; the chunk is dropped.
        throw new OciError('BLOB_UPLOAD_INVALID', `the chunk broke off after ${received} bytes and was discarded`, { cause: err });
      }
      throw err; // OciError from the meter, or a disk failure (a 500)
    }
    this.hashes.set(uuid, { algorithm: 'sha256', hash, offset: size + received });
    await touch(path.join(this.dir(uuid), 'info.json'), this.now());
    return size + received;
  }

  /**
   * Verifies the session's bytes against `digest` and moves them into the store (pinned). On a
   * mismatch the session is deleted (nothing stored) and DIGEST_INVALID thrown.
   */
  async finish(uuid: string, size: number, digest: Digest): Promise<void> {
    const file = path.join(this.dir(uuid), 'data');
    const state = await this.hashState(uuid, file, size, digest.algorithm);
    const actual = state.hash.copy().digest('hex');
    if (actual !== digest.hex) {
      await this.delete(uuid);
      throw new OciError('DIGEST_INVALID', `uploaded content is ${digest.algorithm}:${actual}, not ${digest.value}`);
    }
    await this.blobs.commitVerifiedFile(file, digest, size);
    await this.delete(uuid);
  }

  async delete(uuid: string): Promise<void> {
    this.hashes.delete(uuid);
    await fsp.rm(this.dir(uuid), { recursive: true, force: true });
  }

  /** Sessions idle longer than `maxAgeMs` and the bytes they hold, without removing them (gc's dry run). */
  async listExpired(maxAgeMs: number): Promise<Array<{ uuid: string; bytes: number }>> {
    const out: Array<{ uuid: string; bytes: number }> = [];
    let entries: string[];
    try {
      entries = await fsp.readdir(this.blobs.paths.uploads);
    } catch {
      return out;
    }
    const cutoff = this.now() - maxAgeMs;
    for (const uuid of entries) {
      if (!UPLOAD_ID_RE.test(uuid) || this.locks.has(uuid)) continue;
      const dir = path.join(this.blobs.paths.uploads, uuid);
      const info = await fsp.stat(path.join(dir, 'info.json')).catch(() => null);
      const last = info?.mtimeMs ?? (await fsp.stat(dir).catch(() => null))?.mtimeMs ?? 0;
      if (last > cutoff) continue;
      const data = await fsp.stat(path.join(dir, 'data')).catch(() => null);
      out.push({ uuid, bytes: data?.size ?? 0 });
    }
    return out;
  }

  /** Removes sessions idle longer than `maxAgeMs` (last write or creation). Returns how many. */
  async sweep(maxAgeMs: number): Promise<number> {
    let removed = 0;
    let entries: string[];
    try {
      entries = await fsp.readdir(this.blobs.paths.uploads);
    } catch {
      return 0;
    }
    const cutoff = this.now() - maxAgeMs;
    for (const uuid of entries) {
      const dir = path.join(this.blobs.paths.uploads, uuid);
      if (!UPLOAD_ID_RE.test(uuid)) {
        await fsp.rm(dir, { recursive: true, force: true });
        removed++;
        continue;
      }
      if (this.locks.has(uuid)) continue; // busy right now: not abandoned
      let last: number;
      try {
        last = (await fsp.stat(path.join(dir, 'info.json'))).mtimeMs;
      } catch {
        // No info.json: creation was interrupted. Old enough (by the directory's time)? Remove.
        last = (await fsp.stat(dir).catch(() => null))?.mtimeMs ?? 0;
      }
      if (last <= cutoff) {
        await this.delete(uuid);
        removed++;
      }
    }
    return removed;
  }

  /** The session's hash, re-hashed from the file when memory does not hold it at this offset. */
  private async hashState(uuid: string, file: string, size: number, algorithm: DigestAlgorithm): Promise<HashState> {
    const cached = this.hashes.get(uuid);
    if (cached && cached.offset === size && cached.algorithm === algorithm) return cached;
    const hash = createHash(algorithm);
    if (size > 0) {
      for await (const c of createReadStream(file, { start: 0, end: size - 1, highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
        hash.update(c);
      }
    }
    const state = { algorithm, hash, offset: size };
    if (algorithm === 'sha256') this.hashes.set(uuid, state);
    return state;
  }
}

async function touch(file: string, now: number): Promise<void> {
  const t = new Date(now);
  await fsp.utimes(file, t, t).catch(() => undefined);
}
