/**
 * Push sessions: their limits, locks and digests. Their bytes live where the store's backend keeps
 * them (session-files.ts): one directory per session under `uploads/` (the filesystem backend),
 * or objects in the bucket (the S3 backend, so that any replica continues a session). Bytes are
 * streamed, never buffered; a chunk that fails part-way leaves no trace, so a session only ever
 * holds whole chunks. Finishing verifies the digest and puts the bytes in the store (a rename, or
 * a multipart upload completed only once the bytes hashed right): a crash leaves either a
 * session or a verified blob, never half of one.
 *
 * Digest state: each session keeps an incremental hash in memory (`Hash.copy()` lets the closing
 * PUT check the digest without finishing it), so a PUT costs no re-read of a multi-GiB upload. The
 * hash is only a cache of the bytes: after a restart, on another replica, or if it disagrees with
 * the session's size, the bytes are hashed again. Sessions therefore survive restarts, cost O(1)
 * memory each, and the stored bytes stay the single source of truth.
 */
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { finished, Transform, type Readable } from 'node:stream';
import { DigestMismatchError, isNoSpace, SizeInvalidError, TooManyUploadsError, UploadInvalidError, UploadUnknownError } from './errors.js';
import type { Digest, DigestAlgorithm } from '../oci/digest.js';
import type { BlobStore } from './blob-store.js';
import type { SessionFiles } from './session-files.js';
import type { RepoRef } from './repo-store.js';

/** The owner of sessions opened without credentials (an open registry). */
export const ANONYMOUS_OWNER = 'anonymous';

/** Session ids are UUIDs we generated: anything else is refused before it reaches a path. */
export const UPLOAD_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface UploadInfo {
  uuid: string;
  repo: RepoRef;
  startedAt: number;
}

/** What uploads may hold (config registry.*): a client cannot fill the disk or the session table. */
export interface UploadLimits {
  /** Bytes of one upload (one blob) at most. */
  maxSize: number;
  /** Open sessions at most, in all. */
  maxSessions: number;
  /** Open sessions of one owner (a user, or `anonymous`) at most. */
  maxSessionsPerOwner: number;
  /** Bytes in the open sessions of one owner at most. */
  quotaPerOwner: number;
}

/**
 * A lock on a session shared by every process serving the store (cluster mode: a Redis lease), so
 * that two requests of one upload landing on different replicas never write at once.
 */
export interface SessionLocks {
  /** Waits for and takes the session's lock; resolves with its release. */
  acquire(uuid: string): Promise<() => Promise<void>>;
  /** Whether any process holds the session's lock now (the sweep leaves such sessions alone). */
  held(uuid: string): Promise<boolean>;
}

/** Cluster mode: how long the count of open sessions read from the shared disk is trusted. */
const SHARED_COUNT_MS = 2_000;

const NO_LIMITS: UploadLimits = { maxSize: Infinity, maxSessions: Infinity, maxSessionsPerOwner: Infinity, quotaPerOwner: Infinity };

interface HashState {
  algorithm: DigestAlgorithm;
  hash: Hash;
  /** Bytes the hash has seen. */
  offset: number;
}

export class UploadStore {
  private readonly files: SessionFiles;
  private readonly blobs: BlobStore;
  private readonly hashes = new Map<string, HashState>();
  /** One operation at a time per session (chunks are appended in order). */
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly now: () => number;
  private readonly limits: UploadLimits;
  /** Open sessions: who owns each and the bytes it holds (rebuilt from the disk at init). */
  private readonly open = new Map<string, { owner: string; bytes: number }>();
  /** Sessions this process is creating (not on disk yet): kept when the table is read from disk again. */
  private readonly creating = new Set<string>();
  private countedAt = 0;

  private readonly sessionLocks: SessionLocks | null;

  constructor(blobs: BlobStore, opts: { now?: () => number; limits?: Partial<UploadLimits>; locks?: SessionLocks | null } = {}) {
    this.blobs = blobs;
    this.files = blobs.sessionFiles();
    this.sessionLocks = opts.locks ?? null;
    this.now = opts.now ?? Date.now;
    this.limits = { ...NO_LIMITS, ...opts.limits };
  }

  private check(uuid: string): string {
    if (!UPLOAD_ID_RE.test(uuid)) throw new UploadUnknownError('unknown upload session');
    return uuid;
  }

  async init(): Promise<void> {
    await this.files.init();
    // Sessions survive restarts: count what they hold again.
    await this.countFromDisk();
  }

  /** Rebuilds the open-session table from the disk (keeping sessions this process is creating now). */
  private async countFromDisk(): Promise<void> {
    const found = new Map<string, { owner: string; bytes: number }>();
    for (const { uuid, doc, bytes } of await this.files.list()) {
      if (!UPLOAD_ID_RE.test(uuid) || !doc) continue;
      found.set(uuid, { owner: typeof doc.owner === 'string' ? doc.owner : ANONYMOUS_OWNER, bytes });
    }
    for (const uuid of this.creating) {
      const mine = this.open.get(uuid);
      if (mine && !found.has(uuid)) found.set(uuid, mine);
    }
    this.open.clear();
    for (const [uuid, v] of found) this.open.set(uuid, v);
    this.countedAt = this.now();
  }

  /**
   * Shared store (cluster mode): other replicas open, fill and close sessions too, so the limits are
   * checked against the disk: read again for every new session, and for chunks at most every
   * SHARED_COUNT_MS (at once for a session this process has not seen).
   */
  private async recount(force = false): Promise<void> {
    if (!this.sessionLocks) return;
    if (!force && this.now() - this.countedAt < SHARED_COUNT_MS) return;
    await this.countFromDisk();
  }

  /** Open sessions, in all and of one owner, and the bytes that owner's hold. */
  usage(owner: string): { sessions: number; ownerSessions: number; ownerBytes: number } {
    let ownerSessions = 0;
    let ownerBytes = 0;
    for (const s of this.open.values()) {
      if (s.owner !== owner) continue;
      ownerSessions++;
      ownerBytes += s.bytes;
    }
    return { sessions: this.open.size, ownerSessions, ownerBytes };
  }

  /**
   * A new session for `owner` (a user name, or `anonymous`). Refused (TooManyUploadsError) when
   * the registry or the owner has as many open sessions as allowed.
   */
  async create(repo: RepoRef, owner: string = ANONYMOUS_OWNER): Promise<UploadInfo> {
    // Opening a session is rare (one per blob pushed): the count is read from the disk each time.
    await this.recount(true);
    const u = this.usage(owner);
    if (u.sessions >= this.limits.maxSessions) {
      throw new TooManyUploadsError(`too many uploads in progress on this registry (registry.maxUploadSessions: ${this.limits.maxSessions}); finish or cancel some, or wait for idle ones to expire`, { retryAfterSec: 60 });
    }
    if (u.ownerSessions >= this.limits.maxSessionsPerOwner) {
      throw new TooManyUploadsError(`${owner} has too many uploads in progress (registry.maxUploadSessionsPerUser: ${this.limits.maxSessionsPerOwner}); finish or cancel some first`, { retryAfterSec: 60 });
    }
    const uuid = randomUUID();
    // Counted before anything is awaited: concurrent creations see each other.
    this.open.set(uuid, { owner, bytes: 0 });
    this.creating.add(uuid);
    const info: UploadInfo = { uuid, repo, startedAt: this.now() };
    try {
      await this.files.create(uuid, { namespace: repo.upstream, name: repo.name, startedAt: info.startedAt, owner }, info.startedAt);
    } catch (err) {
      this.open.delete(uuid);
      throw this.blobs.noSpace('a new upload session', err);
    } finally {
      this.creating.delete(uuid);
    }
    this.hashes.set(uuid, { algorithm: 'sha256', hash: createHash('sha256'), offset: 0 });
    return info;
  }

  /** The session, if it exists and belongs to `repo`; else UploadUnknownError. Returns its size. */
  async get(uuid: string, repo: RepoRef): Promise<{ info: UploadInfo; size: number }> {
    const found = await this.files.read(this.check(uuid));
    if (!found?.doc) throw new UploadUnknownError(`upload ${uuid} unknown`);
    const { doc, size } = found;
    // Another repository's session is unknown here: its id is no key to someone else's upload.
    if (doc.namespace !== repo.upstream || doc.name !== repo.name) {
      throw new UploadUnknownError(`upload ${uuid} unknown to this repository`);
    }
    return { info: { uuid, repo, startedAt: typeof doc.startedAt === 'number' ? doc.startedAt : 0 }, size };
  }

  /** Runs `fn` alone for this session. */
  async exclusive<T>(uuid: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(uuid) ?? Promise.resolve();
    const shared = this.sessionLocks;
    const alone = shared
      ? async (): Promise<T> => {
          // In this process first (the chain), then across processes.
          const release = await shared.acquire(uuid);
          try {
            return await fn();
          } finally {
            await release();
          }
        }
      : fn;
    const run = prev.then(alone, alone);
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
    this.check(uuid);
    const state = await this.hashState(uuid, size, 'sha256');
    const hash = state.hash.copy();
    let received = 0;
    // Opened on another replica (cluster mode): its owner and bytes are read from the disk.
    if (!this.open.has(uuid)) await this.recount(true);
    else await this.recount();
    const session = this.open.get(uuid);
    // Its size on disk now (another replica may have appended since this one last looked).
    if (session) session.bytes = size;
    const owner = session?.owner ?? ANONYMOUS_OWNER;
    // What this chunk may add: the blob's size limit, and what is left of the owner's quota.
    const room = Math.min(this.limits.maxSize - size, this.limits.quotaPerOwner - this.usage(owner).ownerBytes);
    const limits = this.limits;
    const tooLarge = (declared: boolean): SizeInvalidError =>
      new SizeInvalidError(
        size + received > limits.maxSize || (declared && expectedLength !== null && size + expectedLength > limits.maxSize)
          ? `the upload would exceed registry.uploadMaxSize (${limits.maxSize} bytes)`
          : `${owner}'s uploads in progress would exceed registry.uploadQuotaPerUser (${limits.quotaPerOwner} bytes); finish or cancel some first`,
        { tooLarge: true },
      );
    if (expectedLength !== null && expectedLength > room) throw tooLarge(true);
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        received += chunk.length;
        if (expectedLength !== null && received > expectedLength) {
          cb(new SizeInvalidError(`body is longer than its declared length ${expectedLength}`));
          return;
        }
        if (received > room) {
          cb(tooLarge(false));
          return;
        }
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    // The body is piped, not part of the pipeline: a chunk refused mid-way (too large) must leave
    // the request alive, so that the refusal can still be answered. The body breaking off (the
    // client gone) fails the copy.
    body.pipe(meter);
    const stopWatching = finished(body, (err) => {
      if (err) meter.destroy(err);
    });
    try {
      try {
        await this.files.append(uuid, size, meter);
      } finally {
        stopWatching();
        body.unpipe(meter);
      }
      if (expectedLength !== null && received !== expectedLength) {
        throw new SizeInvalidError(`received ${received} bytes, declared ${expectedLength}`);
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE') {
        // The request body broke off (client gone): the client's failure, not ours; the chunk is dropped.
        throw new UploadInvalidError(`the chunk broke off after ${received} bytes and was discarded`, { cause: err });
      }
      if (isNoSpace(err)) {
        // The disk is full: the whole session goes (nothing partial stays on a full disk; clients
        // start a push over anyway), and room is made for the push tried again (storage.maxSize).
        await this.delete(uuid).catch(() => undefined);
        await this.blobs.makeRoom(size + received).catch(() => false);
        throw this.blobs.noSpace(`an upload (${size + received} bytes)`, err);
      }
      throw err; // SizeInvalidError from the meter, or a disk failure (a 500)
    }
    this.hashes.set(uuid, { algorithm: 'sha256', hash, offset: size + received });
    if (session) session.bytes = size + received;
    await this.files.touch(uuid, this.now());
    return size + received;
  }

  /**
   * Verifies the session's bytes against `digest` and moves them into the store (pinned). On a
   * mismatch the session is deleted (nothing stored) and DigestMismatchError thrown.
   */
  async finish(uuid: string, size: number, digest: Digest): Promise<void> {
    this.check(uuid);
    const state = await this.hashState(uuid, size, digest.algorithm);
    const actual = state.hash.copy().digest('hex');
    if (actual !== digest.hex) {
      await this.delete(uuid);
      throw new DigestMismatchError(`uploaded content is ${digest.algorithm}:${actual}, not ${digest.value}`);
    }
    try {
      await this.blobs.commitSession(uuid, size, digest);
    } catch (err) {
      if (!isNoSpace(err)) throw err;
      await this.delete(uuid).catch(() => undefined);
      throw this.blobs.noSpace(digest.value, err);
    }
    await this.delete(uuid);
  }

  async delete(uuid: string): Promise<void> {
    this.hashes.delete(uuid);
    this.open.delete(uuid);
    await this.files.remove(uuid);
  }

  /** Sessions idle longer than `maxAgeMs` and the bytes they hold, without removing them (gc's dry run). */
  async listExpired(maxAgeMs: number): Promise<Array<{ uuid: string; bytes: number }>> {
    const cutoff = this.now() - maxAgeMs;
    const out: Array<{ uuid: string; bytes: number }> = [];
    for (const e of await this.files.list()) {
      if (!UPLOAD_ID_RE.test(e.uuid) || this.locks.has(e.uuid) || e.lastActive > cutoff) continue;
      out.push({ uuid: e.uuid, bytes: e.bytes });
    }
    return out;
  }

  /** Removes sessions idle longer than `maxAgeMs` (last write or creation). Returns how many. */
  async sweep(maxAgeMs: number): Promise<number> {
    let removed = 0;
    const cutoff = this.now() - maxAgeMs;
    for (const e of await this.files.list()) {
      if (!UPLOAD_ID_RE.test(e.uuid)) {
        await this.files.remove(e.uuid);
        removed++;
        continue;
      }
      if (this.locks.has(e.uuid)) continue; // busy right now: not abandoned
      if (this.sessionLocks && (await this.sessionLocks.held(e.uuid).catch(() => false))) continue; // busy on another replica
      // No info (creation was interrupted) counts from its last trace too.
      if (e.lastActive <= cutoff) {
        await this.delete(e.uuid);
        removed++;
      }
    }
    return removed;
  }

  /** The session's hash, hashed again from its bytes when memory does not hold it at this offset. */
  private async hashState(uuid: string, size: number, algorithm: DigestAlgorithm): Promise<HashState> {
    const cached = this.hashes.get(uuid);
    if (cached && cached.offset === size && cached.algorithm === algorithm) return cached;
    const hash = createHash(algorithm);
    for await (const c of this.files.bytes(uuid, size)) hash.update(c);
    const state = { algorithm, hash, offset: size };
    if (algorithm === 'sha256') this.hashes.set(uuid, state);
    return state;
  }
}
