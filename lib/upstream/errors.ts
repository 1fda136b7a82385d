/**
 * Upstream failures, mapped once here from undici's error codes and the upstream's answers, and
 * turned into the OCI error a client sees. Raw upstream bodies are never passed through.
 */
import { OciError, OCI_ERRORS, type OciErrorCode } from '../oci/errors.js';

export type UpstreamErrorKind =
  | 'not_found' // 404
  | 'denied' // 401/403 after authenticating
  | 'rate_limited' // 429
  | 'unavailable' // 5xx, refused, reset, DNS failure
  | 'timeout' // connect / first byte / idle body
  | 'offline' // offline mode: never contacted
  | 'bad_response'; // anything else we cannot use

/** The `failure` of a 206 whose Content-Range is not the range asked for (source-client.ts, getBlob). */
export const BAD_CONTENT_RANGE = 'unusable Content-Range';

export class UpstreamError extends Error {
  readonly kind: UpstreamErrorKind;
  readonly upstream: string;
  readonly status: number | undefined;
  /** The OCI code the upstream answered with, if it was one of the spec's. */
  readonly upstreamCode: OciErrorCode | undefined;
  /**
   * The upstream's own error text (its body's `message`): never part of `message`, which may go
   * to a status line; an answer's body quotes it, marked as the upstream's words.
   */
  readonly upstreamMessage: string | undefined;
  /** Seconds, from Retry-After on a 429. */
  readonly retryAfter: number | undefined;
  /**
   * The failure's class, without what was asked or who asked it (`unreachable (ECONNREFUSED)`,
   * `answered 503`): what a circuit breaker keeps as its cause, since its answer goes to every
   * client of the upstream, not only to the one whose request failed.
   */
  readonly failure: string;

  constructor(
    kind: UpstreamErrorKind,
    upstream: string,
    message: string,
    opts: { status?: number; upstreamCode?: OciErrorCode; upstreamMessage?: string; retryAfter?: number; cause?: unknown; failure?: string } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'UpstreamError';
    this.kind = kind;
    this.upstream = upstream;
    this.status = opts.status;
    this.upstreamCode = opts.upstreamCode;
    this.upstreamMessage = opts.upstreamMessage;
    this.retryAfter = opts.retryAfter;
    this.failure = opts.failure ?? (opts.status !== undefined ? `answered ${opts.status}` : KIND_FAILURE[kind]);
  }

  /** The error a client of the proxy gets. `notFound` names the right *_UNKNOWN code for the request. */
  toOciError(notFound: OciErrorCode): OciError {
    switch (this.kind) {
      case 'not_found':
        // The request's own code, not the one in the upstream's body: a HEAD's answer has none, and
        // a HEAD (a stored digest this repository does not link) and a GET (a digest stored nowhere)
        // must get the same answer (docs/ARCHITECTURE.md rule 9).
        return new OciError(notFound, this.message);
      case 'denied':
        // Docker Hub answers 401 for repositories that do not exist; containerd treats 404 as "try the next host".
        return new OciError('NAME_UNKNOWN', this.message);
      case 'rate_limited':
        return new OciError('TOOMANYREQUESTS', this.message, {
          headers: this.retryAfter !== undefined ? { 'Retry-After': String(this.retryAfter) } : {},
        });
      case 'timeout':
        return new OciError('UPSTREAM_TIMEOUT', this.message);
      case 'unavailable':
        return new OciError('UPSTREAM_UNAVAILABLE', this.message, {
          headers: this.retryAfter !== undefined ? { 'Retry-After': String(this.retryAfter) } : {},
        });
      case 'offline':
        return new OciError('OFFLINE', this.message);
      case 'bad_response':
        if (this.status === 400 && this.upstreamCode && OCI_ERRORS[this.upstreamCode].status === 400) {
          return this.quoting(this.upstreamCode);
        }
        // Content we refused (e.g. an oversized manifest): the code says what, 502 says whose fault.
        if (this.status === undefined && this.upstreamCode === 'MANIFEST_INVALID') {
          return new OciError('MANIFEST_INVALID', this.message, { status: 502 });
        }
        // Also a blob over cache.blobMaxSize. No status would let skopeo or podman show why: for a
        // blob GET, containers/image prints only the code and Go's standard text for it, reading
        // neither the body nor the reason phrase. containerd prints both.
        return this.quoting('UPSTREAM_UNAVAILABLE');
    }
  }

  /**
   * An answer whose body quotes the upstream's own text, marked as its words, while the status
   * line says only ours (which names its status and code): an upstream's text in a status line
   * would read as stevedore's own (`... - Your account is suspended, verify it at ...`).
   */
  private quoting(code: OciErrorCode): OciError {
    if (!this.upstreamMessage) return new OciError(code, this.message);
    return new OciError(code, `${this.message}; the upstream's message: ${JSON.stringify(this.upstreamMessage)}`, { reason: this.message });
  }
}

/**
 * Failures that leave stored content servable (stale-if-error, docs/ARCHITECTURE.md rule 4): the
 * upstream cannot answer now (unavailable, timed out, rate-limited), or must not be asked (offline).
 */
export function isTransient(err: unknown): err is UpstreamError {
  return (
    err instanceof UpstreamError &&
    (err.kind === 'unavailable' || err.kind === 'timeout' || err.kind === 'rate_limited' || err.kind === 'offline')
  );
}

/** A failure's class when nothing more precise was given. */
const KIND_FAILURE: Record<UpstreamErrorKind, string> = {
  not_found: 'did not have it',
  denied: 'denied access',
  rate_limited: 'is rate-limiting',
  unavailable: 'is unavailable',
  timeout: 'timed out',
  offline: 'is offline',
  bad_response: 'gave an unusable answer',
};

const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ETIMEDOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_DESTROYED',
]);
/** undici's timeout codes, each with the upstream timeout setting that decides it. */
const TIMEOUT_KEYS: Record<string, string> = {
  UND_ERR_CONNECT_TIMEOUT: 'timeouts.connect',
  UND_ERR_HEADERS_TIMEOUT: 'timeouts.firstByte',
  UND_ERR_BODY_TIMEOUT: 'timeouts.idle',
};

/**
 * What an OFFLINE answer says: what is missing, why (the setting), and the ways out, since the
 * person reading it is the one who has to act (README, "What clients print for stevedore's errors").
 */
export function offlineMessage(upstream: string, what: string): string {
  return `the proxy is offline for ${upstream} (offline: true) and has no ${what} stored; import it (stevedore import) or push it under ${upstream}/, or set offline: false`;
}

function errCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string') return e.code;
  if (Array.isArray(e.errors) && e.errors.length) return errCode(e.errors[0]); // AggregateError (happy eyeballs)
  return errCode(e.cause);
}

function forbiddenReason(err: unknown): string {
  for (let e: unknown = err, depth = 0; e && depth < 5; depth++) {
    if ((e as { code?: unknown }).code === 'ERR_FORBIDDEN_ADDRESS') return (e as Error).message;
    e = (e as { cause?: unknown }).cause;
  }
  return 'address not allowed';
}

/** An UpstreamError anywhere in the cause chain (a deadline or a stall, as undici reports it). */
function upstreamErrorIn(err: unknown): UpstreamError | null {
  for (let e: unknown = err, depth = 0; e && depth < 5; depth++) {
    if (e instanceof UpstreamError) return e;
    e = (e as { cause?: unknown }).cause;
  }
  return null;
}

/**
 * Maps a thrown transport error (undici or node) to an UpstreamError. `redirectedTo`: the host of
 * a redirect being followed, when the request was one.
 */
export function mapTransportError(err: unknown, upstream: string, what: string, redirectedTo?: string, label = `upstream ${upstream}`): UpstreamError | Error {
  const ours = upstreamErrorIn(err);
  if (ours) return ours;
  if (err instanceof Error && err.name === 'AbortError') return err;
  const code = errCode(err);
  if (code === 'ERR_FORBIDDEN_ADDRESS') {
    // An origin the upstream named (a redirect, a token realm) that stevedore does not connect to.
    const where = redirectedTo ? `redirected ${what} to ${redirectedTo}` : `named an origin for ${what}`;
    return new UpstreamError('bad_response', upstream, `${label} ${where}, not followed: ${forbiddenReason(err)}`, { cause: err });
  }
  if (code && code in TIMEOUT_KEYS) {
    const failure = `timed out (${code}, ${TIMEOUT_KEYS[code]})`;
    return new UpstreamError('timeout', upstream, `${label} ${failure} on ${what}`, { cause: err, failure });
  }
  if (code && UNAVAILABLE_CODES.has(code)) {
    const failure = `unreachable (${code})`;
    return new UpstreamError('unavailable', upstream, `${label} ${failure} on ${what}`, { cause: err, failure });
  }
  return new UpstreamError('unavailable', upstream, `${label} failed on ${what}: ${err instanceof Error ? err.message : String(err)}`, {
    cause: err,
    failure: `failed (${code ?? (err instanceof Error ? err.name : 'error')})`,
  });
}
