/**
 * The route table of the OCI API (pull, push, discovery), and the choice of upstream for a request. Works on the raw
 * request path (never decoded): a "%" or ".." can only fail the name grammar, never reach a path.
 *
 * Upstream choice, in order:
 *   1. `?ns=<registry>` (containerd): must name a configured upstream.
 *   2. A path prefix naming a configured upstream: `/v2/ghcr.io/org/app/...` (podman, CRI-O).
 *   3. A first segment that looks like a registry host (has "." or ":" or is "localhost") but is
 *      not configured: refused — the proxy never connects to a host a client names.
 *   4. The default upstream (Docker's registry-mirrors sends `library/alpine`), if configured.
 * Docker Hub's rule then applies where the upstream has `library: true`: `alpine` → `library/alpine`.
 */
import type { Config, UpstreamConfig } from '../config/config.js';
import { OciError } from '../oci/errors.js';
import { parseName } from '../oci/name.js';

export type Route =
  | { kind: 'base' }
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'upload'; name: string; session?: string }
  | { kind: 'tags'; name: string }
  | { kind: 'referrers'; name: string; digest: string }
  | { kind: 'catalog' }
  | { kind: 'healthz' }
  | { kind: 'readyz' };

const MANIFEST_RE = /^\/v2\/(.+)\/manifests\/([^/]+)$/;
const BLOB_RE = /^\/v2\/(.+)\/blobs\/([^/]+)$/;
const UPLOAD_RE = /^\/v2\/(.+)\/blobs\/uploads(?:\/([^/]*))?$/;
const TAGS_RE = /^\/v2\/(.+)\/tags\/list$/;
const REFERRERS_RE = /^\/v2\/(.+)\/referrers\/([^/]+)$/;

/** Returns null for a path that is no endpoint at all. */
export function matchRoute(pathname: string): Route | null {
  if (pathname === '/v2/' || pathname === '/v2') return { kind: 'base' };
  if (pathname === '/healthz') return { kind: 'healthz' };
  if (pathname === '/readyz') return { kind: 'readyz' };
  if (!pathname.startsWith('/v2/')) return null;
  if (pathname === '/v2/_catalog') return { kind: 'catalog' };
  let m = UPLOAD_RE.exec(pathname);
  if (m) return m[2] ? { kind: 'upload', name: m[1]!, session: m[2] } : { kind: 'upload', name: m[1]! };
  m = MANIFEST_RE.exec(pathname);
  if (m) return { kind: 'manifest', name: m[1]!, reference: m[2]! };
  m = BLOB_RE.exec(pathname);
  if (m) return { kind: 'blob', name: m[1]!, digest: m[2]! };
  m = TAGS_RE.exec(pathname);
  if (m) return { kind: 'tags', name: m[1]! };
  m = REFERRERS_RE.exec(pathname);
  if (m) return { kind: 'referrers', name: m[1]!, digest: m[2]! };
  return null;
}

export interface ResolvedRepo {
  upstream: UpstreamConfig;
  /** The repository name as the upstream knows it. */
  name: string;
  /** The name as the client wrote it (echoed in tags/list answers and Link headers). */
  clientName: string;
}

const HOSTLIKE_RE = /[.:]|^localhost$/;
const NS_RE = /^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?(?::\d{1,5})?$/;

export function resolveRepo(rawName: string, ns: string | null, config: Pick<Config, 'upstreams' | 'defaultUpstream'>): ResolvedRepo {
  let upstream: UpstreamConfig | undefined;
  let name = rawName;
  if (ns !== null) {
    if (!NS_RE.test(ns)) throw new OciError('NAME_INVALID', `invalid ns parameter ${JSON.stringify(ns.slice(0, 100))}`);
    upstream = config.upstreams.get(ns);
    if (!upstream) throw new OciError('NAME_UNKNOWN', `upstream ${ns} is not configured on this proxy`);
  } else {
    const slash = rawName.indexOf('/');
    const first = slash === -1 ? rawName : rawName.slice(0, slash);
    if (slash !== -1 && config.upstreams.has(first)) {
      upstream = config.upstreams.get(first)!;
      name = rawName.slice(slash + 1);
    } else if (slash !== -1 && HOSTLIKE_RE.test(first)) {
      if (!NS_RE.test(first)) throw new OciError('NAME_INVALID', `invalid repository name ${JSON.stringify(rawName.slice(0, 300))}`);
      throw new OciError('NAME_UNKNOWN', `registry ${first} is not configured on this proxy`);
    } else if (config.defaultUpstream !== null) {
      upstream = config.upstreams.get(config.defaultUpstream)!;
    } else {
      throw new OciError('NAME_UNKNOWN', `no upstream for ${JSON.stringify(rawName.slice(0, 300))}: use ?ns= or a registry prefix`);
    }
  }
  // A stripped prefix matched a configured upstream exactly; the rest must be a valid name.
  parseName(name);
  if (upstream.library && !name.includes('/')) name = `library/${name}`;
  return { upstream, name: parseName(name), clientName: rawName };
}
