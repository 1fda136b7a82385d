/**
 * Writes a browser was made to send (cross-site request forgery). A browser that logged in to the
 * dashboard keeps the user's Basic credentials for this origin and attaches them to requests other
 * sites make it send: a form on https://evil.example can POST to `/v2/<name>/blobs/uploads/?mount=`
 * as the user. Registry clients (docker, containerd, podman, skopeo, crane, ...) never send what a
 * browser sends, so a write (any method but GET, HEAD, OPTIONS) on `/v2/...`, `/token` or
 * `/_stevedore/preheat` is refused
 * when it carries:
 *
 *   Origin                 that is not this server's own (`null` included): a page elsewhere sent it
 *   Sec-Fetch-Site         `cross-site` or `same-site` (another port or subdomain is another origin)
 *   Content-Type           a form's: application/x-www-form-urlencoded, multipart/form-data,
 *                          text/plain (the only ones a cross-site form may send without asking
 *                          first); not on `/token`, whose POST is the OAuth2 form containerd sends
 *
 * Blob uploads are application/octet-stream or carry no type, manifests their media type: nothing a
 * registry client does is refused. The dashboard itself writes nothing.
 */
import type { IncomingMessage } from 'node:http';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const FORM_TYPES = new Set(['application/x-www-form-urlencoded', 'multipart/form-data', 'text/plain']);
const FOREIGN_FETCH_SITES = new Set(['cross-site', 'same-site']);

/** What gave a browser's write away, for the log. */
export interface CrossSiteSigns {
  origin?: string;
  secFetchSite?: string;
  contentType?: string;
}

/** Whether `method` on `pathname` is a write the check covers; `form`: whether form content types are refused too. */
export function guardedWrite(method: string | undefined, pathname: string, tokenPath: string): { form: boolean } | null {
  if (SAFE_METHODS.has(method ?? 'GET')) return null;
  if (pathname === tokenPath) return { form: false };
  return pathname === '/v2' || pathname.startsWith('/v2/') || pathname.startsWith('/_stevedore/preheat') ? { form: true } : null;
}

/**
 * Why the write `req` looks sent by a browser for another site, or null when it does not.
 * `ownOrigins`: the origins this server is reached at (`http://host:port`, as the request names it).
 */
export function crossSiteRefusal(req: IncomingMessage, ownOrigins: readonly string[], opts: { form: boolean }): { why: string; signs: CrossSiteSigns } | null {
  const origin = header(req, 'origin');
  const site = header(req, 'sec-fetch-site')?.toLowerCase();
  const type = header(req, 'content-type')?.split(';')[0]!.trim().toLowerCase();
  const signs: CrossSiteSigns = {
    ...(origin !== undefined ? { origin: origin.slice(0, 200) } : {}),
    ...(site !== undefined ? { secFetchSite: site.slice(0, 40) } : {}),
    ...(type !== undefined && type !== '' ? { contentType: type.slice(0, 100) } : {}),
  };
  if (origin !== undefined && !ownOrigins.includes(origin.toLowerCase())) {
    return { why: `a write from a web page of another origin (Origin ${signs.origin}) is refused: registry clients send no Origin`, signs };
  }
  if (site !== undefined && FOREIGN_FETCH_SITES.has(site)) {
    return { why: `a write a browser sent for another site (Sec-Fetch-Site: ${signs.secFetchSite}) is refused`, signs };
  }
  if (opts.form && type !== undefined && FORM_TYPES.has(type)) {
    return { why: `a write with a form's content type (${type}) is refused: upload blobs as application/octet-stream, manifests with their media type`, signs };
  }
  return null;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}
