/**
 * Answering a blob GET, for proxied and hosted repositories alike: the Range header (one range →
 * 206 with Content-Range; several → the whole body, as RFC 9110 allows; unsatisfiable or
 * malformed → 416 OCI error), then the body through the pooled sender; or, for stored content
 * on the S3 backend with `redirect`, a 307 to a presigned URL of the object.
 */
import type { ServerResponse } from 'node:http';
import rangeParser from 'range-parser';
import { OciError } from '../oci/errors.js';
import { sendBody } from './respond.js';
import type { BlobBody, SentRange } from '../storage/backend.js';

// Range units are case-insensitive (RFC 9110 §14.1): `Bytes=0-9` is the bytes unit.
const RANGE_SYNTAX = /^bytes=\s*(\d*-\d*\s*)(,\s*\d*-\d*\s*)*$/i;
/** A suffix range `-N` in a range set (after "=" or ","). */
const SUFFIX_SPEC = /([=,]\s*)-(\d+)/g;

/** What the edge sends: any blob body (storage/backend.ts, BlobBody); open() is not used here. */
export type SendableBlob = Pick<BlobBody, 'size' | 'sendTo' | 'release' | 'redirect'>;

export interface BlobOutcome {
  bytes?: number;
  aborted?: boolean;
  err?: unknown;
}

/** A malformed Range is refused before anything is opened or fetched. */
export function checkRangeSyntax(rangeHeader: string | undefined): void {
  if (rangeHeader !== undefined && !RANGE_SYNTAX.test(rangeHeader)) {
    throw new OciError('RANGE_INVALID', `malformed Range header ${JSON.stringify(rangeHeader.slice(0, 100))}`);
  }
}

/**
 * The one range of a Range header, as sent (`bytes=S-E`, `bytes=S-` or `bytes=-N`), before the
 * blob's size is known: a cold blob's range is asked of the upstream at once
 * (lib/cache/upstream-ranges.ts). Undefined for anything else (several ranges), which waits for the size.
 */
export function sentRange(rangeHeader: string | undefined): SentRange | undefined {
  const m = rangeHeader === undefined ? null : /^bytes=\s*(\d{0,15})-(\d{0,15})\s*$/i.exec(rangeHeader);
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') return { suffix: Number(m[2]) };
  const start = Number(m[1]);
  if (m[2] === '') return { start, end: null };
  const end = Number(m[2]);
  return start <= end ? { start, end } : undefined;
}

export async function sendBlob(
  res: ServerResponse,
  rangeHeader: string | undefined,
  headers: Record<string, string>,
  blob: SendableBlob,
  outcome: BlobOutcome,
): Promise<void> {
  if (blob.redirect) {
    // The client sends its Range (if any) to the object store itself. The URL is a credential
    // for the blob until it expires: no cache along the way may keep it (or hand it to others).
    const location = await blob.redirect();
    res.writeHead(307, { ...headers, Location: location, 'Cache-Control': 'no-store', 'Content-Length': '0' });
    res.end();
    outcome.bytes = 0;
    return;
  }
  let range: { start: number; end: number } | undefined;
  if (rangeHeader !== undefined && blob.size !== null) {
    // A suffix longer than the blob means the whole blob (RFC 9110 §14.1.2); range-parser 1.3
    // calls it unsatisfiable, so it is rewritten as `0-` first.
    const size = blob.size;
    const header = rangeHeader.replace(SUFFIX_SPEC, (spec, lead: string, n: string) => (Number(n) > size ? `${lead}0-` : spec));
    const parsed = rangeParser(size, header, { combine: true });
    if (parsed === -1 || parsed === -2) {
      await blob.release();
      throw new OciError('RANGE_INVALID', `range ${rangeHeader.slice(0, 100)} not satisfiable for ${blob.size} bytes`, {
        headers: { 'Content-Range': `bytes */${blob.size}` },
      });
    }
    if (parsed.length === 1) range = { start: parsed[0]!.start, end: parsed[0]!.end };
  }
  if (range) {
    headers['Content-Range'] = `bytes ${range.start}-${range.end}/${blob.size}`;
    headers['Content-Length'] = String(range.end - range.start + 1);
    res.writeHead(206, headers);
  } else {
    if (blob.size !== null) headers['Content-Length'] = String(blob.size);
    res.writeHead(200, headers);
  }
  // A blob still downloading (a miss): its head goes out now, so that a download failing before
  // the first body byte (a digest mismatch, a full disk) reaches the client as an answer cut
  // short, not as a connection closed with no answer at all.
  if (headers['X-Cache'] === 'miss') res.flushHeaders();
  const failure = await sendBody(res, (dest) => blob.sendTo(dest, range));
  if (failure) {
    outcome.aborted = true;
    outcome.err = failure;
  } else {
    outcome.bytes = range ? range.end - range.start + 1 : (blob.size ?? undefined);
  }
}
