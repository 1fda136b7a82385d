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
import { LRUCache } from 'lru-cache';
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

/**
 * Distinct (name, ns) pairs memoized. Only names that resolve are kept, and a valid name is at most
 * 255 characters (MAX_NAME_LENGTH), an `ns` a configured upstream's name: a few hundred KiB at most.
 */
const MEMO_ENTRIES = 1_000;

/**
 * resolveTarget for one server's requests, memoized: the configuration and the hosted patterns do
 * not change while it runs, so a name resolves the same way every time. A warm manifest request
 * resolved its name three times (its canonical name for the access rules and the dashboard, then
 * its target), each time checking the name grammar twice. Only names that resolve are memoized
 * (a refusal is thrown again each time), in an LRU of MEMO_ENTRIES.
 */
export class TargetResolver {
  private readonly memo = new LRUCache<string, { target: RepoTarget; canonical: string }>({ max: MEMO_ENTRIES });

  constructor(
    private readonly config: Pick<Config, 'upstreams' | 'defaultUpstream'>,
    private readonly hosted: HostedNames,
  ) {}

  /** Names memoized now (at most MEMO_ENTRIES). */
  get size(): number {
    return this.memo.size;
  }

  resolve(rawName: string, ns: string | null): RepoTarget {
    return this.entry(rawName, ns).target;
  }

  /** The name access rules match (canonicalRepository); throws the routing errors as resolveTarget does. */
  canonical(rawName: string, ns: string | null): string {
    return this.entry(rawName, ns).canonical;
  }

  private entry(rawName: string, ns: string | null): { target: RepoTarget; canonical: string } {
    // A name from a path never holds a newline (the HTTP parser refuses one): the key is unambiguous.
    const key = ns === null ? rawName : `${ns}\n${rawName}`;
    const hit = this.memo.get(key);
    if (hit) return hit;
    const target = resolveTarget(rawName, ns, this.config, this.hosted);
    const e = { target, canonical: target.kind === 'hosted' ? target.name : `${target.repo.upstream.name}/${target.repo.name}` };
    this.memo.set(key, e);
    return e;
  }
}
