/**
 * Hosted or proxied: which kind of repository a request names.
 *
 *   1. No `ns`, and the name as written matches `registry.hosted`: a hosted repository. It is
 *      served from the store only and never proxied, whatever its first segment looks like.
 *   2. Otherwise the upstream rules of route.ts (`resolveRepo`) apply. A repository named with an
 *      explicit upstream (`?ns=` or a registry prefix) may be pushed to: that seeds the mirror.
 *      One reached through `defaultUpstream` only is read-only (a push there is 405): seeding
 *      Docker Hub's namespace should never happen by accident.
 */
import type { Config } from '../config/config.js';
import { parseName } from '../oci/name.js';
import type { HostedNames } from '../registry/hosted.js';
import { resolveRepo, type ResolvedRepo } from './route.js';

export type RepoTarget =
  | { kind: 'hosted'; name: string; clientName: string }
  | { kind: 'proxied'; repo: ResolvedRepo; explicit: boolean };

export function resolveTarget(
  rawName: string,
  ns: string | null,
  config: Pick<Config, 'upstreams' | 'defaultUpstream'>,
  hosted: HostedNames,
): RepoTarget {
  if (ns === null && hosted.has(rawName)) {
    const name = parseName(rawName);
    return { kind: 'hosted', name, clientName: rawName };
  }
  const repo = resolveRepo(rawName, ns, config);
  const explicit = ns !== null || rawName.startsWith(`${repo.upstream.name}/`);
  return { kind: 'proxied', repo, explicit };
}
