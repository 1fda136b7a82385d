/**
 * Tag lists of proxied repositories: the complete list from the upstream (stored as the last one
 * seen), else the last complete one stored, marked stale, when the upstream cannot answer; the
 * tags pushed here (seeded) are listed either way.
 */
import type { Store } from '../storage/store.js';
import type { RepoRef } from '../storage/repo-store.js';
import { isTransient } from '../upstream/errors.js';
import { repoOf, type CacheResult, type Clock, type PullLimits, type Target } from './pull-types.js';

export class TagLists {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly limits: Pick<PullLimits, 'tagsListMaxTags' | 'tagsListMaxBytes'>,
  ) {}

  /**
   * The complete tags list: from the upstream, else the last complete one stored (stale). Fetching
   * stops when `signal` aborts (the client went away).
   */
  async list(t: Target, signal?: AbortSignal): Promise<{ tags: string[]; cache: CacheResult; staleReason?: string }> {
    const repo = repoOf(t);
    // Tags pushed here (seeded) are served by getManifestByTag whatever the upstream says: list them too.
    const seeded = await this.seededTags(repo);
    try {
      const tags = await t.client.listTags(t.name, { maxTags: this.limits.tagsListMaxTags, maxBytes: this.limits.tagsListMaxBytes }, signal);
      await this.store.repos.setTagsList(repo, tags, this.clock.now());
      return { tags: [...new Set([...tags, ...seeded])], cache: 'miss' };
    } catch (err) {
      if (isTransient(err)) {
        const stored = await this.store.repos.getTagsList(repo);
        if (stored || seeded.length) return { tags: [...new Set([...(stored?.tags ?? []), ...seeded])], cache: 'stale', staleReason: err.message };
      }
      throw err;
    }
  }

  /** Stored tags whose manifest is pinned: pushed into this upstream's namespace (or prefetched with --pin). */
  private async seededTags(repo: RepoRef): Promise<string[]> {
    const out: string[] = [];
    for (const tag of await this.store.repos.listStoredTags(repo)) {
      const link = await this.store.repos.getTag(repo, tag).catch(() => null);
      if (link && this.store.blobs.isPinned(link.digest)) out.push(tag);
    }
    return out;
  }
}
