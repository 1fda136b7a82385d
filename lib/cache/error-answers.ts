/**
 * The OCI error a client is answered with, for what a layer below threw: the one place domain errors
 * (storage's, upstreams') become protocol errors. The HTTP edge (server/respond.ts) answers with it;
 * a cluster download's holder uses it too, for the failure note that other replicas' clients are
 * answered with (cache/cluster-downloads.ts), so both say the same. It sits here, the highest layer
 * below the edge, because both need it (docs/ARCHITECTURE.md, section 2).
 */
import { OciError, type OciErrorCode } from '../oci/errors.js';
import { DigestMismatchError, isNoSpace, SizeInvalidError, StorageError, StorageFullError, TooManyUploadsError, UploadInvalidError, UploadUnknownError } from '../storage/errors.js';
import { UpstreamError } from '../upstream/errors.js';

/**
 * The request kinds whose answers come from an upstream (proxied repositories), each with the code
 * an upstream's "not found" is answered with: the request's own *_UNKNOWN, whatever the upstream's
 * body said (a HEAD's answer has none; docs/ARCHITECTURE.md rule 9).
 */
const UPSTREAM_NOT_FOUND: Readonly<Record<string, OciErrorCode>> = {
  manifest: 'MANIFEST_UNKNOWN',
  blob: 'BLOB_UNKNOWN',
  tags: 'NAME_UNKNOWN',
  referrers: 'NAME_UNKNOWN',
};

/**
 * An upstream's failure (lib/upstream/errors.ts) as the OCI error a request of `kind` (its route
 * kind: `manifest`, `blob`, `tags`, `referrers`) is answered with; null when `err` is not one, or
 * the request is of no kind an upstream answers.
 */
export function upstreamAnswer(err: unknown, kind: string | undefined): OciError | null {
  if (!(err instanceof UpstreamError) || kind === undefined || !Object.hasOwn(UPSTREAM_NOT_FOUND, kind)) return null;
  return err.toOciError(UPSTREAM_NOT_FOUND[kind]!);
}

/**
 * The OCI error a client is answered with, for whatever a request's handling threw. `kind`: the
 * request's route kind, which decides the code of an upstream's "not found" (upstreamAnswer).
 */
export function toOciError(err: unknown, kind?: string): OciError {
  if (err instanceof OciError) return err;
  // ---- storage (lib/storage/errors.ts) ----
  if (err instanceof StorageError) return storageToOci(err);
  // A write of a record (a tag, a link, a pin) on a full disk: said as such, like a blob's.
  if (isNoSpace(err)) return storageToOci(new StorageFullError("the store's disk is full", { cause: err }));
  // ---- upstream failures: mapped here, once, for the request's kind.
  const upstream = upstreamAnswer(err, kind);
  if (upstream) return upstream;
  return new OciError('UNKNOWN', 'internal error', { cause: err });
}

/** Whether toOciError maps `err` from what it is (a refusal with its own code), not as an internal failure. */
export function isMappedError(err: unknown): boolean {
  return err instanceof OciError || err instanceof StorageError;
}

function storageToOci(err: StorageError): OciError {
  const cause = err.cause === undefined ? {} : { cause: err.cause };
  if (err instanceof DigestMismatchError) return new OciError('DIGEST_INVALID', err.message, cause);
  if (err instanceof SizeInvalidError) return new OciError('SIZE_INVALID', err.message, { ...cause, ...(err.tooLarge ? { status: 413 } : {}) });
  if (err instanceof UploadUnknownError) return new OciError('BLOB_UPLOAD_UNKNOWN', err.message, cause);
  if (err instanceof UploadInvalidError) return new OciError('BLOB_UPLOAD_INVALID', err.message, cause);
  // 507 Insufficient Storage (RFC 4918): the server's side, not the content; nothing partial was kept.
  if (err instanceof StorageFullError) return new OciError('UNKNOWN', err.message, { ...cause, status: 507 });
  if (err instanceof TooManyUploadsError) return new OciError('TOOMANYREQUESTS', err.message, { ...cause, headers: { 'Retry-After': String(err.retryAfterSec) } });
  return new OciError('UNKNOWN', 'internal error', { cause: err });
}
