/**
 * The OCI distribution-spec error table (spec section "Error Codes") and the typed error
 * domain code throws. Only the HTTP edge turns an OciError into a response.
 */

export const OCI_ERRORS = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { status: 404, message: 'manifest references a manifest or blob unknown to registry' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  // Not in the spec's table, but used by registries for a proxy's own failures.
  RANGE_INVALID: { status: 416, message: 'requested range not satisfiable' },
  PAGINATION_NUMBER_INVALID: { status: 400, message: 'invalid number of results requested' },
  NOT_FOUND: { status: 404, message: 'no such endpoint' },
  // The three below stay 5xx although skopeo, podman and Docker print no 5xx body: the message
  // reaches them in the status line instead (server/respond.ts, reasonPhrase). A 404 would say
  // "this content does not exist", which a downstream stevedore or cache would take as an answer;
  // a 4xx would not make containerd fall back any better (it goes on to its next host on any
  // status ≥ 400) nor Docker (on any error from a mirror). README, "What clients print for
  // stevedore's errors", has what each client shows, as tested in test/e2e/client-errors.test.ts.
  UPSTREAM_UNAVAILABLE: { status: 502, message: 'upstream registry unavailable' },
  UPSTREAM_TIMEOUT: { status: 504, message: 'upstream registry timed out' },
  OFFLINE: { status: 503, message: 'the proxy is offline and does not have this content' },
  UNKNOWN: { status: 500, message: 'unknown error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type OciErrorCode = keyof typeof OCI_ERRORS;

export class OciError extends Error {
  readonly code: OciErrorCode;
  readonly status: number;
  readonly detail: unknown;
  /** Extra response headers, e.g. Retry-After on TOOMANYREQUESTS. */
  readonly headers: Record<string, string>;
  /**
   * What the status line may say: the message, unless the message quotes another party's words
   * (an upstream's error text), which stay in the body, marked as theirs, and out of the status
   * line that every client prints as stevedore's.
   */
  readonly reason: string;

  constructor(
    code: OciErrorCode,
    message?: string,
    opts: { detail?: unknown; status?: number; headers?: Record<string, string>; cause?: unknown; reason?: string } = {},
  ) {
    super(message ?? OCI_ERRORS[code].message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'OciError';
    this.code = code;
    this.status = opts.status ?? OCI_ERRORS[code].status;
    this.detail = opts.detail;
    this.headers = opts.headers ?? {};
    this.reason = opts.reason ?? this.message;
  }

  toJSON(): { errors: Array<{ code: string; message: string; detail?: unknown }> } {
    const entry: { code: string; message: string; detail?: unknown } = { code: this.code, message: this.message };
    if (this.detail !== undefined) entry.detail = this.detail;
    return { errors: [entry] };
  }
}

export function isOciError(err: unknown): err is OciError {
  return err instanceof OciError;
}
