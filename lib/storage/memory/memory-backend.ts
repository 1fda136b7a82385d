/**
 * The in-memory backend: blobs, records and push sessions in maps, for unit tests of the layers
 * above (the index, uploads, repositories, pull-through). It passes the same contract suite as the
 * filesystem and S3 backends (test/storage/backend-contract.ts). Registered as `memory`
 * (backends.ts), but the configuration schema does not accept it: a store that forgets everything
 * at exit is no cache. Downloads in progress are written to a temp directory of its own, as on
 * every backend (BlobWriter's followers read the growing file), and kept in memory once verified.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { tryParseDigest, type Digest } from '../../oci/digest.js';
import { pump } from '../../util/pump.js';
import type { BackendFactory, BackendInfo, BlobBackend, StoredBody, BlobStat, ByteRange, ListedBlob, WriterOptions } from '../backend.js';
import { BlobWriter } from '../blob-writer.js';
import { DigestMismatchError, UploadInvalidError } from '../errors.js';
import { DIR_MODE } from '../modes.js';
import type { Records } from '../records.js';
import type { SessionDoc, SessionEntry, SessionFiles } from '../session-files.js';

/** Bytes per chunk a stored blob is streamed in. */
const CHUNK = 64 * 1024;

interface MemoryBlob {
  data: Buffer;
  mtime: number;
}

/** Records in a map; a "directory" is every key under `dir/`. */
export class MemoryRecords implements Records {
  private readonly map = new Map<string, Buffer>();

  async read(key: string): Promise<Buffer | null> {
    const b = this.map.get(key);
    return b ? Buffer.from(b) : null;
  }

  async write(key: string, data: string | Buffer): Promise<void> {
    this.map.set(key, Buffer.from(data));
  }

  async remove(key: string): Promise<boolean> {
    return this.map.delete(key);
  }

  async exists(key: string): Promise<boolean> {
    return this.map.has(key);
  }

  async list(dir: string): Promise<string[]> {
    const prefix = `${dir}/`;
    const names = new Set<string>();
    for (const key of this.map.keys()) if (key.startsWith(prefix)) names.add(key.slice(prefix.length).split('/')[0]!);
    return [...names];
  }
}

interface MemorySession {
  doc: string;
  chunks: Buffer[];
  size: number;
  lastActive: number;
}

/** Push sessions in a map: a chunk is collected whole, then added (all or nothing). */
export class MemorySessionFiles implements SessionFiles {
  private readonly sessions = new Map<string, MemorySession>();

  constructor(private readonly blobs: Map<string, MemoryBlob>, private readonly now: () => number) {}

  async init(): Promise<void> {}

  async list(): Promise<SessionEntry[]> {
    return [...this.sessions].map(([uuid, s]) => ({ uuid, doc: parseDoc(s.doc), bytes: s.size, lastActive: s.lastActive }));
  }

  async create(uuid: string, doc: SessionDoc, now: number): Promise<void> {
    this.sessions.set(uuid, { doc: JSON.stringify(doc), chunks: [], size: 0, lastActive: now });
  }

  async read(uuid: string): Promise<{ doc: SessionDoc | null; size: number } | null> {
    const s = this.sessions.get(uuid);
    return s ? { doc: parseDoc(s.doc), size: s.size } : null;
  }

  async append(uuid: string, offset: number, source: Readable): Promise<void> {
    const s = this.sessions.get(uuid);
    if (!s) throw new UploadInvalidError(`upload ${uuid} does not exist`);
    const received: Buffer[] = [];
    for await (const c of source as AsyncIterable<Buffer>) received.push(Buffer.from(c));
    // Whole chunks only: what was past `offset` is cut off first, as a file is truncated.
    if (offset < s.size) {
      const kept = Buffer.concat(s.chunks).subarray(0, offset);
      s.chunks = [kept];
      s.size = offset;
    }
    for (const c of received) {
      s.chunks.push(c);
      s.size += c.length;
    }
  }

  async touch(uuid: string, now: number): Promise<void> {
    const s = this.sessions.get(uuid);
    if (s) s.lastActive = now;
  }

  async *bytes(uuid: string, size: number): AsyncGenerator<Buffer> {
    const s = this.sessions.get(uuid);
    let left = size;
    for (const c of s?.chunks ?? []) {
      if (left <= 0) break;
      const take = c.length <= left ? c : c.subarray(0, left);
      left -= take.length;
      yield take;
    }
    if (left > 0) throw new UploadInvalidError(`upload ${uuid} holds fewer bytes than ${size}`);
  }

  async publish(uuid: string, size: number, digest: Digest): Promise<void> {
    const parts: Buffer[] = [];
    for await (const c of this.bytes(uuid, size)) parts.push(c);
    const data = Buffer.concat(parts);
    if (createHash(digest.algorithm).update(data).digest('hex') !== digest.hex) throw new DigestMismatchError(`upload ${uuid} no longer hashes to ${digest.value}`);
    this.blobs.set(digest.value, { data, mtime: this.now() });
  }

  async remove(uuid: string): Promise<void> {
    this.sessions.delete(uuid);
  }
}

function parseDoc(text: string): SessionDoc | null {
  try {
    return JSON.parse(text) as SessionDoc;
  } catch {
    return null;
  }
}

export class MemoryBackend implements BlobBackend {
  readonly records = new MemoryRecords();
  readonly sessions: MemorySessionFiles;
  readonly reconcileIntervalMs = null;
  readonly shared = null;
  readonly tmpDir: string;
  private readonly blobs = new Map<string, MemoryBlob>();
  private readonly id = randomBytes(16).toString('hex');
  private snapshot: Buffer | null = null;
  private readonly now: () => number;
  private readonly lingering = new Set<NodeJS.Timeout>();

  constructor(opts: { now?: () => number } = {}) {
    this.now = opts.now ?? Date.now;
    this.tmpDir = path.join(os.tmpdir(), `stevedore-memory-${this.id}`);
    this.sessions = new MemorySessionFiles(this.blobs, this.now);
  }

  info(): BackendInfo {
    return { kind: 'memory', location: `memory:${this.id}` };
  }

  async open(opts: { sweep?: boolean }): Promise<{ swept: number }> {
    let swept = 0;
    if (opts.sweep !== false) {
      swept = (await fsp.readdir(this.tmpDir).catch(() => [] as string[])).length;
      await fsp.rm(this.tmpDir, { recursive: true, force: true });
    }
    await fsp.mkdir(this.tmpDir, { recursive: true, mode: DIR_MODE });
    return { swept };
  }

  async close(): Promise<void> {
    for (const t of this.lingering) clearTimeout(t);
    this.lingering.clear();
    await fsp.rm(this.tmpDir, { recursive: true, force: true });
  }

  async sweepTemp(): Promise<number> {
    return 0;
  }

  async *list(known?: (digest: string) => boolean): AsyncGenerator<ListedBlob> {
    for (const [digest, b] of [...this.blobs]) {
      if (known?.(digest)) yield { digest, size: null, mtime: null };
      else yield { digest, size: b.data.length, mtime: b.mtime };
    }
  }

  async stat(d: Digest): Promise<BlobStat | null> {
    const b = this.blobs.get(d.value);
    return b ? { size: b.data.length, mtime: b.mtime } : null;
  }

  probe(d: Digest): Promise<BlobStat | null> {
    return this.stat(d);
  }

  touch(d: Digest, at: number): void {
    const b = this.blobs.get(d.value);
    if (b) b.mtime = at;
  }

  async read(d: Digest, _size: number, done: () => void): Promise<StoredBody | null> {
    const b = this.blobs.get(d.value);
    if (!b) return null;
    // The bytes as they are now: an eviction or a deletion afterwards does not cut this read.
    const data = b.data;
    const slice = (range?: ByteRange): Readable => Readable.from(chunks(range ? data.subarray(range.start, range.end + 1) : data), { objectMode: false });
    return {
      size: data.length,
      open: (range) => {
        const r = slice(range);
        r.once('close', done);
        return r;
      },
      sendTo: async (dest, range) => {
        try {
          await pump(slice(range), dest);
        } finally {
          done();
        }
      },
      release: async () => done(),
    };
  }

  async readSmall(d: Digest): Promise<Buffer | null> {
    const b = this.blobs.get(d.value);
    return b ? Buffer.from(b.data) : null;
  }

  createWriter(expected: Digest | null, opts: WriterOptions, committed: (d: Digest, size: number) => void): BlobWriter {
    const tmpPath = path.join(this.tmpDir, `${randomBytes(12).toString('hex')}.part`);
    const writer: BlobWriter = new BlobWriter({
      tmpPath,
      expected,
      ...(opts.maxSize !== undefined ? { maxSize: opts.maxSize } : {}),
      ...(opts.keepRecent !== undefined ? { keepRecent: opts.keepRecent } : {}),
      resolveFinal: () => tmpPath,
      publish: async (actual) => {
        this.blobs.set(actual.value, { data: await fsp.readFile(tmpPath), mtime: this.now() });
      },
      onCommitted: (d, size) => {
        committed(d, size);
        // Followers that joined keep reading the temp file until its download is released.
        if (opts.keepRecent === undefined) {
          void fsp.rm(tmpPath, { force: true });
          return;
        }
        const drop = (): void => {
          clearTimeout(t);
          this.lingering.delete(t);
          void fsp.rm(tmpPath, { force: true });
        };
        const t = setTimeout(drop, 30_000);
        t.unref();
        this.lingering.add(t);
        writer.events.once('released', drop);
      },
    });
    return writer;
  }

  async importFile(file: string, d: Digest): Promise<void> {
    this.blobs.set(d.value, { data: await fsp.readFile(file), mtime: this.now() });
    await fsp.rm(file, { force: true });
  }

  async remove(d: Digest): Promise<void> {
    this.blobs.delete(d.value);
  }

  evict(d: Digest): void {
    this.blobs.delete(d.value);
  }

  async evictionsSettled(): Promise<void> {}

  async storeId(): Promise<string> {
    return this.id;
  }

  async readSnapshot(): Promise<Buffer | null> {
    return this.snapshot;
  }

  async writeSnapshot(chunks: readonly string[]): Promise<void> {
    this.snapshot = Buffer.from(chunks.join(''), 'latin1');
  }

  coordinate(): void {}

  /** Puts bytes in as if another process had stored them (tests: adoption, reconciliation). */
  putBehindTheIndex(data: Buffer, mtime = this.now()): Digest {
    const hex = createHash('sha256').update(data).digest('hex');
    const d = tryParseDigest(`sha256:${hex}`)!;
    this.blobs.set(d.value, { data: Buffer.from(data), mtime });
    return d;
  }
}

function* chunks(data: Buffer): Generator<Buffer> {
  for (let at = 0; at < data.length; at += CHUNK) yield data.subarray(at, Math.min(data.length, at + CHUNK));
}

/** `storage.backend: memory` (tests only: the configuration schema refuses it). */
export const memoryBackend: BackendFactory = () => new MemoryBackend();
