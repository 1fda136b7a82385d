/**
 * What a repository may read of the content held here (docs/ARCHITECTURE.md rule 9: a repository
 * serves only what it links). Content held here (stored, or being downloaded) that this repository
 * does not link is served under this name only once the upstream confirms that the repository has
 * it (HEAD, no quota), and linked then. A digest is no key: content pushed to a private hosted
 * repository, or fetched for another repository with the upstream's credentials, never leaks into
 * a name that does not hold it. When the upstream cannot answer (rate-limited, breaker open,
 * unreachable, offline) the content is unknown here, as if it were not stored: a failed check is
 * never "known" (its UpstreamError reaches the HTTP edge, which answers the request's *_UNKNOWN).
 */
import type { Digest } from '../oci/digest.js';
import type { Store } from '../storage/store.js';
import { repoKey, repoOf, type Target } from './pull-types.js';

export class RepositoryAccess {
  constructor(private readonly store: Store) {}

  /** Passes when the repository links `d`, or its upstream confirms it has it (then linked); throws otherwise. */
  async authorizeStored(t: Target, d: Digest): Promise<void> {
    const repo = repoOf(t);
    if (await this.store.repos.hasLink(repo, d)) return;
    await t.client.headBlob(t.name, d.value);
    await this.store.repos.link(repo, d);
  }

  /** Whether the repository is known (in memory, no syscall) to link `d`: authorizeStored would pass at once. */
  knownToLink(t: Target, d: Digest): boolean {
    return this.store.repos.knownLink(repoOf(t), d);
  }

  /**
   * A download this repository asks to join: its own (`startedFor`, the repository it was started
   * for, is this one), or one it is allowed to read (authorizeStored).
   */
  async authorizeJoin(t: Target, d: Digest, startedFor: string): Promise<void> {
    if (startedFor !== repoKey(t)) await this.authorizeStored(t, d);
  }
}
