/**
 * Per-repository records: tag → digest links, which digests a repository has, and the last
 * complete tags list (layout: paths.ts). Each is written whole (records.ts: a temp file and a
 * rename, or one PUT of an object), so a crash never leaves half a record.
 */
import { LRUCache } from 'lru-cache';
import { upTo } from '../util/lru-bound.js';
import type { Digest } from '../oci/digest.js';
import { readJsonRecord, type Records } from './records.js';
import { recordKeys as k } from './paths.js';

export interface TagLink {
  digest: string;
  mediaType: string;
  size: number;
}

export interface RepoRef {
  upstream: string;
  name: string;
}

export class RepoStore {
  /** Links known to exist: a hit on the hot path costs no syscall. unlink() forgets them. */
  private readonly knownLinks = new LRUCache<string, true>(upTo(200_000));

  constructor(private readonly records: Records) {}

  async getTag(repo: RepoRef, tag: string): Promise<TagLink | null> {
    const link = await readJsonRecord<TagLink>(this.records, k.tag(repo, tag));
    if (!link || typeof link.digest !== 'string' || typeof link.mediaType !== 'string' || typeof link.size !== 'number') {
      return null;
    }
    return link;
  }

  async setTag(repo: RepoRef, tag: string, link: TagLink): Promise<void> {
    await this.records.write(k.tag(repo, tag), JSON.stringify(link));
  }

  /** Whether the link is known to exist without a look at the store (hasLink found or wrote it, and no unlink since). */
  knownLink(repo: RepoRef, d: Digest): boolean {
    return this.knownLinks.get(`${repo.upstream}/${repo.name}@${d.value}`) === true;
  }

  async hasLink(repo: RepoRef, d: Digest): Promise<boolean> {
    const key = `${repo.upstream}/${repo.name}@${d.value}`;
    if (this.knownLinks.get(key)) return true;
    if (!(await this.records.exists(k.link(repo, d)))) return false;
    this.knownLinks.set(key, true);
    return true;
  }

  async link(repo: RepoRef, d: Digest): Promise<void> {
    const key = `${repo.upstream}/${repo.name}@${d.value}`;
    if (this.knownLinks.get(key)) return;
    await this.records.write(k.link(repo, d), '');
    this.knownLinks.set(key, true);
  }

  async getTagsList(repo: RepoRef): Promise<{ tags: string[]; fetchedAt: number } | null> {
    const rec = await readJsonRecord<{ tags: string[]; fetchedAt: number }>(this.records, k.tagsList(repo));
    if (!rec || !Array.isArray(rec.tags)) return null;
    return rec;
  }

  async setTagsList(repo: RepoRef, tags: string[], fetchedAt: number): Promise<void> {
    await this.records.write(k.tagsList(repo), JSON.stringify({ tags, fetchedAt }));
  }

  // ---- hosted and seeded repositories (pushes) ---------------------------------------------

  /** Tags stored for a repository (pushed, or cached from pulls), unsorted. */
  async listStoredTags(repo: RepoRef): Promise<string[]> {
    return this.records.list(`${k.repo(repo)}/_tags`);
  }

  async deleteTag(repo: RepoRef, tag: string): Promise<boolean> {
    return this.records.remove(k.tag(repo, tag));
  }

  /** Forgets that the repository has this digest (the bytes stay: other repositories may share them). */
  async unlink(repo: RepoRef, d: Digest): Promise<boolean> {
    this.knownLinks.delete(`${repo.upstream}/${repo.name}@${d.value}`);
    return this.records.remove(k.link(repo, d));
  }

  /** Every digest this repository links (blobs and manifests). */
  async listLinks(repo: RepoRef): Promise<string[]> {
    const dir = `${k.repo(repo)}/_links`;
    const out: string[] = [];
    for (const alg of await this.records.list(dir)) for (const hex of await this.records.list(`${dir}/${alg}`)) out.push(`${alg}:${hex}`);
    return out;
  }

  /** Whether any repository (hosted, cached or seeded) still links this digest. */
  async linkedAnywhere(d: Digest): Promise<boolean> {
    for (const repo of await this.listRepositories()) if (await this.hasLink(repo, d)) return true;
    return false;
  }

  /** Whether anything was ever stored for this repository (a tag or a link). */
  async exists(repo: RepoRef): Promise<boolean> {
    return (await this.records.list(k.repo(repo))).some((e) => e === '_tags' || e === '_links');
  }

  /** Records that manifest `referrer` names `subject` as its subject. */
  async addReferrer(repo: RepoRef, subject: Digest, referrer: Digest): Promise<void> {
    await this.records.write(`${k.referrers(repo, subject)}/${referrer.algorithm}/${referrer.hex}`, '');
  }

  async removeReferrer(repo: RepoRef, subject: Digest, referrer: Digest): Promise<void> {
    await this.records.remove(`${k.referrers(repo, subject)}/${referrer.algorithm}/${referrer.hex}`);
  }

  /** Digests of the manifests pushed into this repository with `subject` as their subject. */
  async listReferrers(repo: RepoRef, subject: Digest): Promise<string[]> {
    const dir = k.referrers(repo, subject);
    const out: string[] = [];
    for (const alg of await this.records.list(dir)) {
      for (const hex of await this.records.list(`${dir}/${alg}`)) out.push(`${alg}:${hex}`);
    }
    return out;
  }

  /** The upstream's last referrers answer for `subject`: the descriptors of its index. */
  async getCachedReferrers(repo: RepoRef, subject: Digest): Promise<{ manifests: unknown[]; fetchedAt: number } | null> {
    const rec = await readJsonRecord<{ manifests: unknown[]; fetchedAt: number }>(this.records, k.referrersCache(repo, subject));
    if (!rec || !Array.isArray(rec.manifests)) return null;
    return rec;
  }

  async setCachedReferrers(repo: RepoRef, subject: Digest, manifests: unknown[], fetchedAt: number): Promise<void> {
    await this.records.write(k.referrersCache(repo, subject), JSON.stringify({ manifests, fetchedAt }));
  }

  /**
   * Every repository with a tag or a link, as `{ upstream, name }` (upstream `_hosted` for hosted
   * ones). Walks repositories/ and stops at the first `_` directory of each repository.
   */
  async listRepositories(): Promise<RepoRef[]> {
    const out: RepoRef[] = [];
    const walk = async (upstream: string, parts: string[]): Promise<void> => {
      const entries = await this.records.list([k.repositories, upstream, ...parts].join('/'));
      if (parts.length > 0 && entries.some((e) => e === '_tags' || e === '_links')) out.push({ upstream, name: parts.join('/') });
      for (const e of entries) if (!e.startsWith('_')) await walk(upstream, [...parts, e]);
    };
    for (const upstream of await this.records.list(k.repositories)) await walk(upstream, []);
    return out;
  }
}
