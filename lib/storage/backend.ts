/**
 * The storage backend interface: where blob bytes, records and push sessions live. A backend is
 * one folder (`fs/`, `s3/`, `memory/`) implementing `BlobBackend`, registered by name
 * (`registerBackend`); `storage.backend` in the configuration picks it (open-store.ts). Everything
 * else about the store — the size-bounded LRU index, pins, the index snapshot, start-up recovery,
 * eviction, the repositories' records (repo-store.ts) and push sessions' logic (upload-store.ts) —
 * lives above it (blob-store.ts) and uses only this interface. test/storage/backend-contract.ts is
 * what every backend must pass. docs/ARCHITECTURE.md section 6 has the steps to add one.
 *
 * Backends never update the index: they move bytes and say what exists.
 */
import type { Readable, Writable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { Digest } from '../oci/digest.js';
import type { BlobWriter } from './blob-writer.js';
import type { Follow } from './file-sender.js';
import type { Records } from './records.js';
import type { SessionFiles } from './session-files.js';

/** What a backend says about itself (metrics, the dashboard, `stevedore du`). */
export interface BackendInfo {
  /** The name it is registered under (`filesystem`, `s3`, …). */
  kind: string;
  /** The directory, or `s3://bucket/prefix`. */
  location: string;
}

/** A range of bytes, both ends inclusive. */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * One range as a client sent it, before the blob's size is known: `bytes=S-E` ({start, end}),
 * `bytes=S-` ({start, end: null}) or the suffix `bytes=-N` ({suffix: N}). A cold blob's range is
 * asked of the upstream in this form at once (lib/cache/upstream-ranges.ts).
 */
export type SentRange = { start: number; end: number | null } | { suffix: number };

/**
 * The bytes a sent range means for a blob of `size` bytes, as the answer to the client computes
 * them (RFC 9110 §14.1.2: an end past the blob is clamped, a suffix longer than the blob is all of
 * it); null when not satisfiable.
 */
export function resolveRange(r: SentRange, size: number): ByteRange | null {
  if (size <= 0) return null;
  if ('suffix' in r) return r.suffix > 0 ? { start: Math.max(0, size - r.suffix), end: size - 1 } : null;
  if (r.start >= size) return null;
  return { start: r.start, end: r.end === null ? size - 1 : Math.min(r.end, size - 1) };
}

/** Stored content as the backend found it. */
export interface BlobStat {
  size: number;
  /** When it was stored (or, with `touch`, last used), ms since epoch. */
  mtime: number;
}

/** One stored blob found by a listing. `size`/`mtime` null: not looked at (the caller knows it already). */
export type ListedBlob = { digest: string; size: number; mtime: number } | { digest: string; size: null; mtime: null };

/**
 * Bytes of a blob that can be sent: the one shape every layer passes around. Storage opens it for
 * stored content (`size` known); the pull path answers with it, adding where it came from
 * (`BlobAnswer` in cache/pull-types.ts: a download in progress may not know its size yet); the
 * HTTP edge sends it (server/blob-response.ts). Either open() or sendTo() is called once, or
 * release() when neither will be.
 */
export interface BlobBody {
  /** The content's size; null: not known yet (a download whose upstream sent no Content-Length). */
  size: number | null;
  /** Streams bytes [start, end] or all; never the whole blob in memory. */
  open(range?: ByteRange): Readable;
  /** Sends bytes [start, end] or all to `dest` and ends it (the fast path for HTTP answers). */
  sendTo(dest: Writable, range?: ByteRange): Promise<void>;
  /** Releases what was opened when the caller decides not to read after all. */
  release(): Promise<void>;
  /** A URL the client may fetch the bytes from itself; absent when the bytes are served here. */
  redirect?(): Promise<string>;
}

/** Stored content's bytes: its size is known. */
export interface StoredBody extends BlobBody {
  size: number;
}

/**
 * A backend whose working directory the replicas of a cluster share (a network volume): one temp
 * file per digest being downloaded, followed by every replica's clients and resumed by whichever
 * replica takes the download over. Backends without it stream a download in progress from the
 * replica holding it (the peer endpoint).
 */
export interface SharedDownloads {
  /** Sizes of a shared download's temp file and of the stored content (null: absent), in one look. */
  probe(d: Digest): Promise<{ part: number | null; final: number | null }>;
  /** Sends bytes [start, end] of the shared download of `d` as `follow` says they become available. */
  send(d: Digest, dest: Writable, start: number, end: number, follow: Follow): Promise<void>;
}

/** What a backend asks of the layers above (set in cluster mode). */
export interface BackendCoordination {
  /** Whether some replica is downloading `digest` now (its lease is held). */
  downloadingElsewhere(digest: string): Promise<boolean>;
}

export interface WriterOptions {
  maxSize?: number;
  keepRecent?: number;
  /** A download shared by the replicas (only with `shared`: one temp file per digest). */
  shared?: boolean;
}

export interface BlobBackend {
  info(): BackendInfo;
  /** Pins and the repositories' records. */
  readonly records: Records;
  /** Push sessions' bytes. */
  readonly sessions: SessionFiles;
  /**
   * A local directory for work in progress: downloads being written (BlobWriter's temp files, which
   * followers read while the bytes arrive) and bundles being imported. Swept at start.
   */
  readonly tmpDir: string;
  /**
   * Listing is slow or paid (an object store): the index is loaded from its snapshot and brought in
   * line with a listing in the background, every this many ms. null: a listing at every start is
   * the truth, and cheap enough to be done before serving.
   */
  readonly reconcileIntervalMs: number | null;
  /** Set when the replicas of a cluster share this backend's temp files (see SharedDownloads). */
  readonly shared: SharedDownloads | null;

  /**
   * Creates the layout and checks access. `sweep` (default true) deletes what an interrupted run
   * left (temp files; `sweepOlderThanMs`: only those untouched that long, as other replicas may be
   * writing the rest). Returns how many leftovers were removed.
   */
  open(opts: { sweep?: boolean; sweepOlderThanMs?: number }): Promise<{ swept: number }>;
  /** Stops background work and releases connections. */
  close(): Promise<void>;
  /** Deletes temp files untouched for `olderThanMs` (left by a process that died). Returns how many. */
  sweepTemp(olderThanMs: number): Promise<number>;

  /**
   * Every stored blob. With `known`, content it says the caller knows is listed without a look at
   * its size (size and mtime null), and the rest is looked at synchronously (a start-up before
   * serving); without it, every entry has its size.
   */
  list(known?: (digest: string) => boolean): AsyncIterable<ListedBlob>;
  /** The content's size and time; null when it is not stored. Throws when the backend cannot be asked. */
  stat(d: Digest): Promise<BlobStat | null>;
  /** stat(), but a backend that cannot be asked says so in its log and answers null. */
  probe(d: Digest): Promise<BlobStat | null>;
  /**
   * Opens stored content for reading; null when it is not stored (the backend logs that it vanished).
   * `done` is called once when the read ends (streamed, sent, closed or redirected).
   */
  read(d: Digest, size: number, done: () => void): Promise<StoredBody | null>;
  /** Small content (a manifest) read whole; null when not stored. */
  readSmall(d: Digest): Promise<Buffer | null>;
  /**
   * A writer of new content; `committed` is called once its bytes are verified and stored under
   * their digest. `expected` null: whatever digest the bytes have (manifests by tag).
   */
  createWriter(expected: Digest | null, opts: WriterOptions, committed: (d: Digest, size: number) => void): BlobWriter;
  /**
   * Moves a local file of bytes already verified as `d` (in `tmpDir`: a bundle's staged blob) into
   * storage as that content: a rename, or an upload. The file is gone afterwards.
   */
  importFile(file: string, d: Digest, size: number): Promise<void>;
  /** Deletes the content's bytes (gc, DELETE); absent content is no error. */
  remove(d: Digest): Promise<void>;
  /**
   * Deletes evicted content. Starts at once, before returning: a later write of the same digest
   * must never be deleted by this eviction. Failures are logged.
   */
  evict(d: Digest): void;
  /** Resolves once no eviction is in flight. */
  evictionsSettled(): Promise<void>;
  /**
   * Records recency on the stored bytes (a file's mtime), so that a listing after a restart knows
   * it. Absent: recency lives in the index and its snapshot only.
   */
  touch?(d: Digest, at: number): void;
  /** The store's identity: processes on the same storage share it (and coordinate), others never. */
  storeId(): Promise<string>;
  /** The index snapshot (written by the layer above); null when there is none. */
  readSnapshot(): Promise<Buffer | null>;
  /** Writes the snapshot atomically: the concatenation of `chunks`. */
  writeSnapshot(chunks: readonly string[]): Promise<void>;
  /**
   * Memory its reads hold ahead of their clients (S3: parts of large blobs fetched in parallel),
   * against the process's limit, and how many parts wait for some. Absent: reads hold none.
   */
  readAheadStats?(): { inUse: number; limit: number; waiting: number };
  /** How an error of this backend is written in a log line (an AWS SDK error's name and status). */
  describeError?(err: unknown): unknown;
  /** Hooks from the layers above (cluster mode); a backend that needs none ignores them. */
  coordinate(c: BackendCoordination): void;
}

/** What a backend's factory gets: the `storage` section of the configuration and the logger. */
export type BackendFactory = (storage: Config['storage'], opts: { log?: Logger }) => BlobBackend;

/**
 * Loads a backend's module and returns its factory. Registrations are loaders, not factories: a
 * backend's module (and what it imports: the AWS SDK for `s3`) is loaded only when a
 * configuration names it (docs/ARCHITECTURE.md, rule on lazy loading).
 */
export type BackendLoader = () => Promise<BackendFactory>;

const loaders = new Map<string, BackendLoader>();

/** Makes a backend available under `name` (the value of `storage.backend`). */
export function registerBackend(name: string, load: BackendLoader): void {
  if (loaders.has(name)) throw new Error(`storage backend "${name}" is registered twice`);
  loaders.set(name, load);
}

/** The backend registered as `storage.backend`, its module loaded now. */
export async function createBackend(storage: Config['storage'], opts: { log?: Logger } = {}): Promise<BlobBackend> {
  const load = loaders.get(storage.backend);
  if (!load) throw new Error(`storage.backend: no backend named "${storage.backend}" (known: ${[...loaders.keys()].join(', ')})`);
  return (await load())(storage, opts);
}

/** The names registered (tests, error messages). */
export function registeredBackends(): string[] {
  return [...loaders.keys()];
}
