/**
 * The edge's one auth call: given a routed request and its action (lib/server/actions.ts), who is
 * asking and are they allowed. Repository rules match canonical names (`canonicalRepository`):
 * proxied repositories as `<upstream>/<name>` however the client addressed them (`?ns=`, a path
 * prefix, the default upstream, `library/` added), hosted ones by their name.
 *
 *   probes (/healthz, /readyz)  nobody is asked anything
 *   /v2/                        Auth.checkBase (200, or 401 with the challenge so clients log in)
 *   /v2/_catalog                Auth.authorizeCatalog
 *   pull                        pull on the repository
 *   push (uploads, manifest PUT) pull and push, as distribution asks (clients request both)
 *   delete                      delete
 *   mount (?mount=&from=)       also pull on `from`; without it the mount becomes a plain upload
 */
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { Config } from '../../config/config.js';
import type { Action as RuleAction } from '../../config/auth-schema.js';
import type { HostedNames } from '../../registry/hosted.js';
import { mountSource, type Action } from '../actions.js';
import type { Route } from '../route.js';
import { resolveTarget } from '../target.js';
import { OciError } from '../../oci/errors.js';
import type { Auth, AuthContext, Identity } from './auth.js';

const ANONYMOUS: Identity = { user: null, via: 'anonymous' };

/** The name rules match for a repository as a request names it; throws the routing errors (NAME_INVALID, NAME_UNKNOWN). */
export function canonicalRepository(rawName: string, ns: string | null, config: Pick<Config, 'upstreams' | 'defaultUpstream'>, hosted: HostedNames): string {
  const target = resolveTarget(rawName, ns, config, hosted);
  return target.kind === 'hosted' ? target.name : `${target.repo.upstream.name}/${target.repo.name}`;
}

/**
 * The repository name a challenge's scope carries. A token request has no `ns`, so with one
 * (containerd) the scope says `<ns>/<name>`: that resolves, like a path prefix, to the same
 * upstream. containerd asks for the challenge's scope besides its own `repository:<name>`.
 */
function scopeName(rawName: string, ns: string | null): string {
  return ns === null ? rawName : `${ns}/${rawName}`;
}

export async function authorizeRoute(
  auth: Auth,
  canonical: (rawName: string, ns: string | null) => string,
  route: Route,
  action: Action,
  req: IncomingMessage,
  query: URLSearchParams,
  ctx: AuthContext,
): Promise<Identity> {
  switch (route.kind) {
    case 'healthz':
    case 'readyz':
      return ANONYMOUS;
    case 'base':
      return auth.checkBase(req, ctx);
    case 'catalog':
      return auth.authorizeCatalog(req, ctx);
  }
  if (action === 'none') return ANONYMOUS;
  const ns = query.get('ns');
  const actions: RuleAction[] = action === 'push' ? ['pull', 'push'] : [action];
  const from = mountSource(route, req.method, query);
  let who: Identity;
  try {
    who = await auth.authorize(req, { repository: canonical(route.name, ns), name: scopeName(route.name, ns), actions }, ctx);
  } catch (err) {
    // A mount's challenge asks for the source's pull scope too (as distribution's does): a client
    // that follows it gets one token for both and can mount, instead of uploading the blob again.
    if (from !== null) throw withScope(err, `repository:${scopeName(from, ns)}:pull`);
    throw err;
  }
  if (from !== null && !(await mayPull(auth, canonical, from, ns, req, ctx.log))) {
    // Not allowed to read the source: no mount. The spec's answer for a mount that cannot be done
    // is a plain upload session (202), so the client uploads the blob instead; nothing leaks.
    query.delete('mount');
    query.delete('from');
  }
  return who;
}

/** A 401's Bearer challenge with one more scope in its `scope` parameter (space-separated). */
function withScope(err: unknown, scope: string): unknown {
  if (!(err instanceof OciError) || err.status !== 401) return err;
  const challenge = err.headers['WWW-Authenticate'];
  if (challenge === undefined || !/^Bearer /i.test(challenge) || /[\\"]/.test(scope)) return err;
  const next = /scope="[^"]*"/.test(challenge) ? challenge.replace(/scope="([^"]*)"/, (_m, s: string) => `scope="${s} ${scope}"`) : `${challenge},scope="${scope}"`;
  return new OciError(err.code, err.message, { status: err.status, headers: { ...err.headers, 'WWW-Authenticate': next }, detail: err.detail, cause: err });
}

async function mayPull(
  auth: Auth,
  canonical: (rawName: string, ns: string | null) => string,
  name: string,
  ns: string | null,
  req: IncomingMessage,
  log: Logger | undefined,
): Promise<boolean> {
  try {
    await auth.authorize(req, { repository: canonical(name, ns), name: scopeName(name, ns), actions: ['pull'] }, log ? { log } : {});
    return true;
  } catch {
    return false;
  }
}
