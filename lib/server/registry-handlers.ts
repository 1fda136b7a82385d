/**
 * HTTP handlers of the push side and of hosted repositories: upload sessions, mounts, manifest
 * PUT, deletes, hosted reads, referrers and the catalog. Each turns a request into one call of
 * lib/registry and writes the headers the distribution spec asks for.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parseDigest, type Digest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import { MediaType } from '../oci/media-types.js';
import { parseReadReference, parseReference } from '../oci/name.js';
import { referrersIndex, type ReferrerDescriptor } from '../oci/referrers.js';
import { manifestTooLarge, parseChunkRange, type Registry, type StoredManifest } from '../registry/registry.js';
import type { RepoRef } from '../storage/repo-store.js';
import { API_VERSION_HEADER, sendJson, sendManifest } from './respond.js';
import { checkRangeSyntax, sendBlob } from './blob-response.js';
import { hasBody } from './connection-guard.js';

/** What the access log says about a request (a subset of create-server's Outcome). */
export interface HandlerOutcome {
  bytes?: number;
  aborted?: boolean;
  err?: unknown;
}

/** One repository of a request that may push: where it lives and how the client names it. */
export interface PushContext {
  registry: Registry;
  repo: RepoRef;
  /** `/v2/<name as the client wrote it>`: Location headers start with it. */
  base: string;
  /** `?ns=<ns>` when the client sent one (kept on every Location), else ''. */
  nsQuery: string;
  /** Headers every answer carries (API version, OCI-Namespace). */
  headers: Record<string, string>;
  manifestMaxSize: number;
  /** Who pushes: the user, or `anonymous` (upload sessions and quotas are counted per owner). */
  owner: string;
  /** Resolves a mount's `from` to a repository of this registry; null when it names none. */
  resolveFrom(name: string): RepoRef | null;
  /** Seeded namespaces: whether the upstream has content a pushed manifest names but the push skipped. */
  isKnown?: (d: Digest, isManifest: boolean) => Promise<boolean>;
}

function send(res: ServerResponse, status: number, headers: Record<string, string>): void {
  res.writeHead(status, { ...API_VERSION_HEADER, ...headers, 'Content-Length': '0' });
  res.end();
}

/** Content-Length of the request, or null when it has none (chunked). */
function requestLength(req: IncomingMessage): number | null {
  const v = req.headers['content-length'];
  if (v === undefined) return null;
  if (!/^\d{1,15}$/.test(v)) throw new OciError('SIZE_INVALID', 'invalid Content-Length');
  return Number(v);
}

/** `Range: 0-<last byte>` of an upload holding `size` bytes (`0-0` when empty, as registries answer). */
function uploadRange(size: number): string {
  return `0-${Math.max(0, size - 1)}`;
}

function digestParam(query: URLSearchParams): Digest {
  const d = query.get('digest');
  if (d === null) throw new OciError('DIGEST_INVALID', 'the digest query parameter is required to close an upload');
  return parseDigest(d);
}

// ---- uploads (end-4a, end-4b, end-5, end-6, end-11, end-13, end-14) -------------------------

/** Resolves with the blob a mount mounted (and from where), else null. */
export async function handleUpload(
  ctx: PushContext,
  session: string | undefined,
  method: string,
  query: URLSearchParams,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<{ mounted: string; from: RepoRef } | null> {
  const { registry, repo } = ctx;
  const blobLocation = (d: string): string => `${ctx.base}/blobs/${d}${ctx.nsQuery}`;
  const sessionHeaders = (uuid: string, size: number): Record<string, string> => ({
    ...ctx.headers,
    Location: `${ctx.base}/blobs/uploads/${uuid}${ctx.nsQuery}`,
    Range: uploadRange(size),
    'Docker-Upload-UUID': uuid,
  });
  if (session === undefined) {
    // POST: mount, monolithic upload, or a new session.
    const mount = query.get('mount');
    if (mount !== null) {
      const d = parseDigest(mount);
      const fromName = query.get('from');
      const from = fromName !== null ? ctx.resolveFrom(fromName) : null;
      if (from && (await registry.mount(repo, d, from))) {
        send(res, 201, { ...ctx.headers, Location: blobLocation(d.value), 'Docker-Content-Digest': d.value });
        return { mounted: d.value, from };
      }
      // Not mountable: a normal session (spec: 202), the client uploads the bytes.
    }
    const digest = query.get('digest');
    if (digest !== null && mount === null) {
      const d = parseDigest(digest);
      await registry.uploadWhole(repo, d, req, requestLength(req), ctx.owner);
      send(res, 201, { ...ctx.headers, Location: blobLocation(d.value), 'Docker-Content-Digest': d.value });
      return null;
    }
    const s = await registry.startUpload(repo, ctx.owner);
    send(res, 202, sessionHeaders(s.uuid, s.size));
    return null;
  }
  switch (method) {
    case 'GET': {
      const s = await registry.uploadStatus(repo, session);
      send(res, 204, sessionHeaders(s.uuid, s.size));
      return null;
    }
    case 'DELETE':
      await registry.cancelUpload(repo, session);
      send(res, 204, { ...ctx.headers });
      return null;
    case 'PATCH': {
      const cr = req.headers['content-range'];
      const range = cr !== undefined ? parseChunkRange(cr) : null;
      try {
        const s = await registry.appendChunk(repo, session, req, range, requestLength(req));
        send(res, 202, sessionHeaders(s.uuid, s.size));
      } catch (err) {
        throw withUploadRange(err, (size) => sessionHeaders(session, size));
      }
      return null;
    }
    case 'PUT': {
      const d = digestParam(query);
      const cr = req.headers['content-range'];
      const range = cr !== undefined ? parseChunkRange(cr) : null;
      const body = hasBody(req) ? req : null;
      try {
        await registry.finishUpload(repo, session, d, body, range, requestLength(req));
      } catch (err) {
        throw withUploadRange(err, (size) => sessionHeaders(session, size));
      }
      send(res, 201, { ...ctx.headers, Location: blobLocation(d.value), 'Docker-Content-Digest': d.value });
      return null;
    }
  }
  throw new OciError('UNSUPPORTED', `${method} is not supported on an upload`);
}

/** A 416 for an out-of-order chunk carries the upload's Range and Location (spec: end-5, end-13). */
function withUploadRange(err: unknown, headers: (size: number) => Record<string, string>): unknown {
  if (!(err instanceof OciError) || err.code !== 'RANGE_INVALID') return err;
  const size = (err.detail as { size?: number } | undefined)?.size ?? 0;
  return new OciError('RANGE_INVALID', err.message, { headers: headers(size), detail: { size } });
}

// ---- manifests (end-7, end-9) ---------------------------------------------------------------

/** Reads a manifest body, refusing (413) what is larger than the cap before reading it all. */
async function readManifestBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = requestLength(req);
  if (declared !== null && declared > max) throw manifestTooLarge(declared, max);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > max) throw manifestTooLarge(`more than ${max}`, max);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * `beforeAnswer` runs once the manifest is stored, before the client is answered, with the tag the
 * push set (none by digest): what must be true when the client's next request arrives (the pull
 * path's answer for it forgotten on every worker and replica).
 */
export async function handleManifestPut(
  ctx: PushContext,
  reference: string,
  req: IncomingMessage,
  res: ServerResponse,
  beforeAnswer?: (tags: string[]) => Promise<void>,
): Promise<{ tag: string | null; digest: string; previousDigest: string | null; fromElsewhere: Array<{ digest: Digest; isManifest: boolean }> }> {
  const ref = parseReference(reference);
  const bytes = await readManifestBody(req, ctx.manifestMaxSize);
  const contentType = req.headers['content-type'];
  const put = await ctx.registry.putManifest(ctx.repo, ref, bytes, contentType, ctx.isKnown ? { isKnown: ctx.isKnown } : {});
  const headers: Record<string, string> = {
    ...ctx.headers,
    Location: `${ctx.base}/manifests/${put.digest}${ctx.nsQuery}`,
    'Docker-Content-Digest': put.digest,
  };
  if (put.subject) headers['OCI-Subject'] = put.subject;
  const tag = ref.kind === 'tag' ? ref.tag : null;
  await beforeAnswer?.(tag === null ? [] : [tag]);
  send(res, 201, headers);
  return { tag, digest: put.digest, previousDigest: put.previousDigest, fromElsewhere: put.fromElsewhere };
}

/**
 * Resolves with the tags the delete removed (the tag deleted, or every tag that named the manifest
 * deleted by digest); `beforeAnswer` gets them before the client is answered (handleManifestPut).
 */
export async function handleManifestDelete(ctx: PushContext, reference: string, res: ServerResponse, beforeAnswer?: (tags: string[]) => Promise<void>): Promise<string[]> {
  const tags = await ctx.registry.deleteManifest(ctx.repo, parseReadReference(reference));
  await beforeAnswer?.(tags);
  send(res, 202, { ...ctx.headers });
  return tags;
}

export async function handleBlobDelete(ctx: PushContext, digest: string, res: ServerResponse): Promise<void> {
  await ctx.registry.deleteBlob(ctx.repo, parseDigest(digest));
  send(res, 202, { ...ctx.headers });
}

// ---- hosted reads (end-2, end-3, end-8a, end-8b) ------------------------------------------

export async function serveHostedManifest(
  registry: Registry,
  repo: RepoRef,
  reference: string,
  req: IncomingMessage,
  res: ServerResponse,
  headers: Record<string, string>,
  outcome: HandlerOutcome,
  head: boolean,
  /** Checked before anything is sent (signature policy, lib/verify); throws to refuse. */
  gate?: (m: StoredManifest) => Promise<void>,
): Promise<void> {
  const m = await registry.getManifest(repo, parseReadReference(reference));
  if (gate) await gate(m);
  outcome.bytes = sendManifest(res, req.headers['if-none-match'], headers, m, head);
}

export async function serveHostedBlob(
  registry: Registry,
  repo: RepoRef,
  digestText: string,
  req: IncomingMessage,
  res: ServerResponse,
  headers: Record<string, string>,
  outcome: HandlerOutcome,
  head: boolean,
): Promise<void> {
  const d = parseDigest(digestText);
  const h: Record<string, string> = {
    ...headers,
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': d.value,
    ETag: `"${d.value}"`,
    'Accept-Ranges': 'bytes',
  };
  if (head) {
    const st = await registry.statBlob(repo, d);
    res.writeHead(200, { ...h, 'Content-Length': String(st.size) });
    res.end();
    return;
  }
  checkRangeSyntax(req.headers.range);
  const blob = await registry.openBlob(repo, d);
  await sendBlob(res, req.headers.range, h, blob, outcome);
}

/** `n` and `last` of a paginated list (tags, catalog): the page, and the `Link` to the next one. */
export function paginate(
  sorted: string[],
  query: URLSearchParams,
  nextPath: string,
  extra: Record<string, string> = {},
): { page: string[]; link: string | null } {
  const nText = query.get('n');
  const last = query.get('last');
  let n: number | null = null;
  if (nText !== null) {
    if (!/^\d{1,9}$/.test(nText)) throw new OciError('PAGINATION_NUMBER_INVALID', `invalid n=${JSON.stringify(nText.slice(0, 50))}`);
    n = Number(nText);
  }
  let page = last !== null ? sorted.filter((x) => x > last) : sorted;
  if (n === 0) return { page: [], link: null };
  if (n !== null && page.length > n) {
    page = page.slice(0, n);
    const next = new URLSearchParams({ n: String(n), last: page[page.length - 1]!, ...extra });
    return { page, link: `<${nextPath}?${next.toString()}>; rel="next"` };
  }
  return { page, link: null };
}

export async function serveHostedTags(
  registry: Registry,
  repo: RepoRef,
  clientName: string,
  query: URLSearchParams,
  res: ServerResponse,
  headers: Record<string, string>,
  head: boolean,
): Promise<void> {
  const tags = await registry.listTags(repo);
  const { page, link } = paginate(tags, query, `/v2/${clientName}/tags/list`);
  sendJson(res, 200, { name: clientName, tags: page }, link ? { ...headers, Link: link } : headers, head);
}

// ---- discovery (end-12a, end-12b, catalog) ---------------------------------------------------

export function sendReferrers(
  res: ServerResponse,
  descriptors: ReferrerDescriptor[],
  query: URLSearchParams,
  headers: Record<string, string>,
  head: boolean,
): void {
  const artifactType = query.get('artifactType');
  const h: Record<string, string> = { ...headers };
  if (artifactType !== null) h['OCI-Filters-Applied'] = 'artifactType';
  const body = Buffer.from(JSON.stringify(referrersIndex(descriptors, artifactType)));
  res.writeHead(200, { ...API_VERSION_HEADER, ...h, 'Content-Type': MediaType.OciIndex, 'Content-Length': String(body.length) });
  res.end(head ? undefined : body);
}

/** `mayPull`: whether the client may pull a repository (by canonical name); only those are listed, and paginated. */
export async function serveCatalog(registry: Registry, query: URLSearchParams, res: ServerResponse, head: boolean, mayPull: (name: string) => boolean): Promise<void> {
  const { page, link } = paginate((await registry.catalog()).filter(mayPull), query, '/v2/_catalog');
  sendJson(res, 200, { repositories: page }, link ? { Link: link } : {}, head);
}
