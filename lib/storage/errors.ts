/**
 * What storage throws when bytes or sessions are refused: its own kinds, independent of the
 * protocol. The HTTP edge maps each to the OCI error a client sees, in one place
 * (lib/server/respond.ts, toOciError); storage never imports lib/oci/errors.
 */

export class StorageError extends Error {
  constructor(message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
  }
}

/** The bytes do not hash to the digest they were given under. */
export class DigestMismatchError extends StorageError {}

/**
 * More or fewer bytes than declared, or more than allowed. `tooLarge`: refused by a configured
 * limit on what may be stored (an upload's size, an owner's quota), not a mismatch.
 */
export class SizeInvalidError extends StorageError {
  readonly tooLarge: boolean;
  constructor(message: string, opts: { tooLarge?: boolean; cause?: unknown } = {}) {
    super(message, opts);
    this.tooLarge = opts.tooLarge === true;
  }
}

/** No such upload session (never opened, finished, expired, or another repository's). */
export class UploadUnknownError extends StorageError {}

/** An upload session's bytes are unusable: a chunk broke off, or the session holds fewer bytes than it says. */
export class UploadInvalidError extends StorageError {}

/** Too many upload sessions open (on the registry, or of one owner): try again later. */
export class TooManyUploadsError extends StorageError {
  /** Seconds after which trying again makes sense. */
  readonly retryAfterSec: number;
  constructor(message: string, opts: { retryAfterSec?: number } = {}) {
    super(message);
    this.retryAfterSec = opts.retryAfterSec ?? 60;
  }
}

/** Whether `err` says the disk (or the quota) has no room left: ENOSPC, EDQUOT. */
export function isNoSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/**
 * The store's disk is full (ENOSPC, EDQUOT) and no room could be made: what was being written was
 * removed, nothing partial is left. Clients are told the disk is full (507), not "internal error".
 */
export class StorageFullError extends StorageError {}
