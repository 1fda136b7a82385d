/**
 * Tag TTL tiers (config `cache.tagTTLPolicies`): how long a stored tag → digest answer is trusted
 * before the upstream is asked again (one HEAD). Policies are tried in order and the first whose
 * repository and tag both match decides; when none does, the upstream's `tagTTL` (itself
 * `cache.tagTTL` unless the upstream overrides it) applies, as before tiers existed.
 *
 *   repository  `<upstream>/<name>`, e.g. docker.io/library/alpine, in the auth rules' grammar
 *               (`*` within one component, `**` any number of them): compilePattern is reused
 *   tag         a glob (`*` any characters; tags have no "/"), or `semver`: v1.2.3, 1.2.3,
 *               1.2.3-rc1, 1.2.3-rc.1 (three numbers; `1.2` and `1` move, so they are not semver)
 *   ttl         milliseconds, or `forever`: once stored, the answer is never revalidated
 *
 * Manifests by digest need no tier: a digest names its bytes, so they are never revalidated.
 */
import type { TagTTLPolicy, UpstreamConfig } from '../config/config.js';
// The auth rules' glob, reused so that both read patterns alike (a pure function; it belongs in
// lib/oci, where both could import it without cache/ reaching into server/).
import { compilePattern } from '../oci/repository-pattern.js';

export type TagTTL = number | 'forever';

/**
 * Semantic versions as tags: an optional `v`, MAJOR.MINOR.PATCH without leading zeros, an optional
 * pre-release (`-rc1`, `-rc.1`, `-beta.2`, `-alpine` alike, as semver 2.0.0 writes them). No build
 * metadata: `+` cannot appear in a tag.
 */
const IDENT = '(?:0|[1-9]\\d*|\\d*[A-Za-z-][0-9A-Za-z-]*)';
const SEMVER_RE = new RegExp(`^v?(?:0|[1-9]\\d*)\\.(?:0|[1-9]\\d*)\\.(?:0|[1-9]\\d*)(?:-${IDENT}(?:\\.${IDENT})*)?$`);

export function isSemverTag(tag: string): boolean {
  return SEMVER_RE.test(tag);
}

interface CompiledPolicy {
  repository: RegExp;
  tag: (tag: string) => boolean;
  ttl: TagTTL;
}

function compileTag(pattern: string): (tag: string) => boolean {
  if (pattern === 'semver') return isSemverTag;
  const re = new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.\\+?^${}()|[\]]/g, '\\$&')).join('.*')}$`);
  return (tag) => re.test(tag);
}

/** Compiled once per policy list: the configuration is frozen, so its arrays are stable keys. */
const compiled = new WeakMap<readonly TagTTLPolicy[], CompiledPolicy[]>();

function compile(policies: readonly TagTTLPolicy[]): CompiledPolicy[] {
  let out = compiled.get(policies);
  if (!out) {
    out = policies.map((p) => ({ repository: compilePattern(p.repository), tag: compileTag(p.tag), ttl: p.ttl }));
    compiled.set(policies, out);
  }
  return out;
}

/**
 * The TTL of `tag` in repository `name` (as the upstream knows it, `library/` added) of
 * `upstream`: the first matching policy's, else the upstream's tagTTL.
 */
export function tagTTLFor(upstream: Pick<UpstreamConfig, 'name' | 'tagTTL' | 'tagTTLPolicies'>, name: string, tag: string): TagTTL {
  const repository = `${upstream.name}/${name}`;
  for (const p of compile(upstream.tagTTLPolicies)) {
    if (p.tag(tag) && p.repository.test(repository)) return p.ttl;
  }
  return upstream.tagTTL;
}
