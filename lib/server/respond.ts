/** Writing answers: the one place OCI error JSON is produced, and stream piping that never fakes success. */
import type { ServerResponse } from 'node:http';
import { OciError } from '../oci/errors.js';

export const API_VERSION_HEADER = { 'Docker-Distribution-API-Version': 'registry/2.0' } as const;

export function toOciError(err: unknown): OciError {
  if (err instanceof OciError) return err;
  return new OciError('UNKNOWN', 'internal error', { cause: err });
}

/**
 * Sends `{"errors":[...]}` with the error's status. Once headers are out an error body would look
 * like part of the content: the response is destroyed instead, so the client sees a failed transfer.
 */
export function sendError(res: ServerResponse, err: OciError, head = false): void {
  if (res.headersSent) {
    res.destroy(err);
    return;
  }
  const body = Buffer.from(JSON.stringify(err.toJSON()));
  res.writeHead(err.status, {
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
