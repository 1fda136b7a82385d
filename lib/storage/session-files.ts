/**
 * Where push sessions keep their bytes: part of a storage backend (backend.ts `sessions`).
 * upload-store.ts decides everything else (limits, locks, hashing, ids); blob-store.ts records the
 * committed content in the index. The filesystem backend keeps one directory per session under
 * `uploads/` (fs/fs-session-files.ts); the S3 backend objects in the bucket, so that any replica
 * can continue a session another opened (s3/s3-session-files.ts).
 */
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';

/** What a session records about itself (info.json). */
export interface SessionDoc {
  namespace?: unknown;
  name?: unknown;
  startedAt?: unknown;
  owner?: unknown;
}

export interface SessionEntry {
  uuid: string;
  /** null: creation was interrupted (no info yet). */
  doc: SessionDoc | null;
  bytes: number;
  /** Last write (or creation), ms since epoch. */
  lastActive: number;
}

export interface SessionFiles {
  init(): Promise<void>;
  /** Every session, including ones whose id is not ours (`uuid` unchecked: the caller removes those). */
  list(): Promise<SessionEntry[]>;
  create(uuid: string, doc: SessionDoc, now: number): Promise<void>;
  /** The session's info and size; null when it does not exist. `doc` null: unreadable info. */
  read(uuid: string): Promise<{ doc: SessionDoc | null; size: number } | null>;
  /** Appends `source` at `offset`, all or nothing: when it fails, the session is left at `offset`. */
  append(uuid: string, offset: number, source: Readable): Promise<void>;
  /** Records activity (a chunk arrived). */
  touch(uuid: string, now: number): Promise<void>;
  /** Bytes [0, size) of the session, to hash them again. Throws UploadInvalidError when it holds fewer. */
  bytes(uuid: string, size: number): AsyncIterable<Buffer>;
  /**
   * Puts the session's bytes [0, size), already verified against `digest`, in the backend's
   * storage as that content (a rename, or an upload that completes only if they still hash to
   * it: DigestMismatchError otherwise). The index is the caller's (blob-store.ts commitSession).
   */
  publish(uuid: string, size: number, digest: Digest): Promise<void>;
  remove(uuid: string): Promise<void>;
}
