/** Writing answers: the one place OCI error JSON is produced, and stream piping that never fakes success. */
import type { ServerResponse } from 'node:http';
import http from '../util/node-http.js';
import { OciError } from '../oci/errors.js';

export const API_VERSION_HEADER = { 'Docker-Distribution-API-Version': 'registry/2.0' } as const;

// The mapping of domain errors to OCI errors lives one layer down, where a cluster download's failure
// note uses it too; the edge answers with it.
export { toOciError, isMappedError, upstreamAnswer } from '../cache/error-answers.js';

/** Longest reason phrase sent: a status line stays one short line in any client's message. */
const REASON_MAX = 400;

/**
 * The status line's reason phrase for an error answer: the standard phrase, then the message
 * (`503 Service Unavailable - the proxy is offline for ...`), or its `reason` when the message
 * quotes an upstream's words (those are not stevedore's, and stay in the body). The body's `message` reaches only
 * some people: an answer to HEAD has no body (containerd resolves every tag with HEAD), and
 * containers/image (skopeo, podman, CRI-O) and Docker print, for a 5xx, only "received unexpected
 * HTTP status: " and the status line. All of them print the status line as received, so the
 * reason goes there too; the status code, the body and the headers stay what the spec asks,
 * and a client that ignores the phrase (as RFC 9110 allows) loses nothing. Printable ASCII only
 * (Node refuses anything else in a status line), cut at REASON_MAX.
 */
export function reasonPhrase(err: OciError): string {
  const standard = http.STATUS_CODES[err.status] ?? 'Error';
  const message = err.reason.replace(/[^\x20-\x7e]+/g, ' ').trim();
  const phrase = message ? `${standard} - ${message}` : standard;
  return phrase.length > REASON_MAX ? `${phrase.slice(0, REASON_MAX - 3)}...` : phrase;
}

/**
 * Sends `{"errors":[...]}` with the error's status, and its message in the reason phrase (see
 * reasonPhrase). Once headers are out an error body would look like part of the content: the
 * response is destroyed instead, so the client sees a failed transfer.
 */
export function sendError(res: ServerResponse, err: OciError, head = false): void {
  if (res.headersSent) {
    res.destroy(err);
    return;
  }
  const body = Buffer.from(JSON.stringify(err.toJSON()));
  res.writeHead(err.status, reasonPhrase(err), {
    ...API_VERSION_HEADER,
    ...err.headers,
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(body.length),
  });
  res.end(head ? undefined : body);
}

export function sendJson(res: ServerResponse, status: number, doc: unknown, headers: Record<string, string> = {}, head = false): void {
  const body = Buffer.from(JSON.stringify(doc));
  res.writeHead(status, {
    ...API_VERSION_HEADER,
    ...headers,
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(body.length),
  });
  res.end(head ? undefined : body);
}

/**
 * Runs a sender that writes the whole body into `res` and ends it. Resolves null when it did,
 * else the reason it did not; then the response is destroyed, never ended cleanly.
 */
export async function sendBody(res: ServerResponse, send: (res: ServerResponse) => Promise<void>): Promise<Error | null> {
  try {
    await send(res);
    return null;
  } catch (err) {
    if (!res.destroyed) res.destroy();
    return err instanceof Error ? err : new Error(String(err));
  }
}

/**
 * A manifest answer: exact bytes, their media type and digest (also the ETag); 304 when the client
 * already has it; no body for HEAD. `headers` may carry extra ones (X-Cache, Warning, OCI-Namespace).
 */
export function sendManifest(
  res: ServerResponse,
  ifNoneMatch: string | undefined,
  headers: Record<string, string>,
  m: { digest: string; mediaType: string; bytes: Buffer },
  head: boolean,
): number {
  const etag = `"${m.digest}"`;
  const h: Record<string, string> = { ...headers, 'Content-Type': m.mediaType, 'Docker-Content-Digest': m.digest, ETag: etag };
  if (ifNoneMatch === etag) {
    res.writeHead(304, h);
    res.end();
    return 0;
  }
  h['Content-Length'] = String(m.bytes.length);
  res.writeHead(200, h);
  res.end(head ? undefined : m.bytes);
  return head ? 0 : m.bytes.length;
}
