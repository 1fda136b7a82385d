/**
 * Which repositories of an upstream this proxy serves (config `upstreams.<name>.allow` / `deny`).
 * Patterns are names within the upstream, as it knows them (`library/alpine` on Docker Hub, also
 * when the client wrote `alpine`), in the auth rules' grammar: `*` within one component, `**` any
 * number of them.
 *
 *   deny   the first matching entry refuses the repository, with its reason (checked first)
 *   allow  when given, a repository no pattern matches is refused; absent: every repository
 *
 * A refused repository is refused for every endpoint and action, and before the store is looked
 * at: what was cached under it before the policy changed is not served either.
 */
import type { UpstreamConfig } from '../config/config.js';
import { OciError } from '../oci/errors.js';
// See lib/cache/tag-policy.ts: the auth rules' glob, reused.
import { compilePattern } from '../oci/repository-pattern.js';

export interface Refusal {
  list: 'deny' | 'allow';
  /** The deny pattern that matched; null for a repository outside `allow`. */
  pattern: string | null;
  reason: string | null;
}

interface Compiled {
  deny: Array<{ re: RegExp; pattern: string; reason: string | null }>;
  allow: RegExp[] | null;
}

/** Compiled once per upstream: the configuration is frozen, so its objects are stable keys. */
const compiled = new WeakMap<Pick<UpstreamConfig, 'allow' | 'deny'>, Compiled>();

function compile(u: Pick<UpstreamConfig, 'allow' | 'deny'>): Compiled {
  let c = compiled.get(u);
  if (!c) {
    c = {
      deny: u.deny.map((d) => ({ re: compilePattern(d.repository), pattern: d.repository, reason: d.reason })),
      allow: u.allow === null ? null : u.allow.map((p) => compilePattern(p)),
    };
    compiled.set(u, c);
  }
  return c;
}

/** Why repository `name` of `upstream` is not proxied, or null when it is. */
export function refusal(upstream: Pick<UpstreamConfig, 'allow' | 'deny'>, name: string): Refusal | null {
  const c = compile(upstream);
  const denied = c.deny.find((d) => d.re.test(name));
  if (denied) return { list: 'deny', pattern: denied.pattern, reason: denied.reason };
  if (c.allow !== null && !c.allow.some((re) => re.test(name))) return { list: 'allow', pattern: null, reason: null };
  return null;
}

/** Throws `DENIED` (403) naming the repository and the reason when it is not proxied. */
export function assertProxied(upstream: Pick<UpstreamConfig, 'name' | 'allow' | 'deny'>, name: string): void {
  const r = refusal(upstream, name);
  if (!r) return;
  const repo = `${upstream.name}/${name}`;
  const message =
    r.list === 'allow'
      ? `${repo} is not proxied here: upstreams.${upstream.name}.allow does not include it`
      : `${repo} is denied on this proxy: ${r.reason ?? `upstreams.${upstream.name}.deny includes it`}`;
  throw new OciError('DENIED', message);
}
