/**
 * Per-repository records on disk: tag → digest links, which digests a repository has, and the last
 * complete tags list. Written atomically (temp file + rename) so a crash never leaves half a record.
 */
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import type { Digest } from '../oci/digest.js';
import type { StorePaths } from './paths.js';

export interface TagLink {
  digest: string;
  mediaType: string;
  size: number;
}

export interface RepoRef {
  upstream: string;
  name: string;
}

async function writeAtomic(paths: StorePaths, file: string, data: string): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const tmp = path.join(paths.tmp, `${randomBytes(12).toString('hex')}.rec`);
  await fsp.writeFile(tmp, data);
  await fsp.rename(tmp, file);
}

async function readJson<T>(file: string): Promise<T | null> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    return null; // a torn record is treated as absent; it is rewritten on the next fetch
  }
}

export class RepoStore {
  /** Links known to exist: a hit on the hot path costs no syscall. unlink() forgets them. */
  private readonly knownLinks = new LRUCache<string, true>({ max: 200_000 });

  constructor(private readonly paths: StorePaths) {}

  async getTag(repo: RepoRef, tag: string): Promise<TagLink | null> {
    const link = await readJson<TagLink>(this.paths.tag(repo.upstream, repo.name, tag));
    if (!link || typeof link.digest !== 'string' || typeof link.mediaType !== 'string' || typeof link.size !== 'number') {
      return null;
    }
    return link;
  }

  async setTag(repo: RepoRef, tag: string, link: TagLink): Promise<void> {
    await writeAtomic(this.paths, this.paths.tag(repo.upstream, repo.name, tag), JSON.stringify(link));
  }

  async hasLink(repo: RepoRef, d: Digest): Promise<boolean> {
    const key = `${repo.upstream}/${repo.name}@${d.value}`;
    if (this.knownLinks.get(key)) return true;
    try {
      await fsp.access(this.paths.link(repo.upstream, repo.name, d));
      this.knownLinks.set(key, true);
      return true;
    } catch {
      return false;
    }
  }

  async link(repo: RepoRef, d: Digest): Promise<void> {
    const key = `${repo.upstream}/${repo.name}@${d.value}`;
    if (this.knownLinks.get(key)) return;
    const file = this.paths.link(repo.upstream, repo.name, d);
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(file, '');
    this.knownLinks.set(key, true);
  }

  async getTagsList(repo: RepoRef): Promise<{ tags: string[]; fetchedAt: number } | null> {
    const rec = await readJson<{ tags: string[]; fetchedAt: number }>(this.paths.tagsList(repo.upstream, repo.name));
    if (!rec || !Array.isArray(rec.tags)) return null;
    return rec;
  }

  async setTagsList(repo: RepoRef, tags: string[], fetchedAt: number): Promise<void> {
    await writeAtomic(this.paths, this.paths.tagsList(repo.upstream, repo.name), JSON.stringify({ tags, fetchedAt }));
  }

  // ---- hosted and seeded repositories (pushes) ---------------------------------------------

  /** Tags stored for a repository (pushed, or cached from pulls), unsorted. */
  async listStoredTags(repo: RepoRef): Promise<string[]> {
    return readdirOrEmpty(path.join(this.paths.repo(repo.upstream, repo.name), '_tags'));
  }

  async deleteTag(repo: RepoRef, tag: string): Promise<boolean> {
    return removeFile(this.paths.tag(repo.upstream, repo.name, tag));
  }

  /** Forgets that the repository has this digest (the bytes stay: other repositories may share them). */
  async unlink(repo: RepoRef, d: Digest): Promise<boolean> {
    this.knownLinks.delete(`${repo.upstream}/${repo.name}@${d.value}`);
    return removeFile(this.paths.link(repo.upstream, repo.name, d));
  }

  /** Whether any repository (hosted, cached or seeded) still links this digest. */
  async linkedAnywhere(d: Digest): Promise<boolean> {
    for (const repo of await this.listRepositories()) if (await this.hasLink(repo, d)) return true;
    return false;
  }

  /** Whether anything was ever stored for this repository (a tag or a link). */
  async exists(repo: RepoRef): Promise<boolean> {
    const dir = this.paths.repo(repo.upstream, repo.name);
    return (await readdirOrEmpty(dir)).some((e) => e === '_tags' || e === '_links');
  }

  /** Records that manifest `referrer` names `subject` as its subject. */
  async addReferrer(repo: RepoRef, subject: Digest, referrer: Digest): Promise<void> {
    const file = path.join(this.paths.referrers(repo.upstream, repo.name, subject), referrer.algorithm, referrer.hex);
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(file, '');
  }

  async removeReferrer(repo: RepoRef, subject: Digest, referrer: Digest): Promise<void> {
    await removeFile(path.join(this.paths.referrers(repo.upstream, repo.name, subject), referrer.algorithm, referrer.hex));
  }

  /** Digests of the manifests pushed into this repository with `subject` as their subject. */
  async listReferrers(repo: RepoRef, subject: Digest): Promise<string[]> {
    const dir = this.paths.referrers(repo.upstream, repo.name, subject);
    const out: string[] = [];
    for (const alg of await readdirOrEmpty(dir)) {
      for (const hex of await readdirOrEmpty(path.join(dir, alg))) out.push(`${alg}:${hex}`);
    }
    return out;
  }

  /** The upstream's last referrers answer for `subject`: the descriptors of its index. */
  async getCachedReferrers(repo: RepoRef, subject: Digest): Promise<{ manifests: unknown[]; fetchedAt: number } | null> {
    const rec = await readJson<{ manifests: unknown[]; fetchedAt: number }>(this.paths.referrersCache(repo.upstream, repo.name, subject));
    if (!rec || !Array.isArray(rec.manifests)) return null;
    return rec;
  }

  async setCachedReferrers(repo: RepoRef, subject: Digest, manifests: unknown[], fetchedAt: number): Promise<void> {
    await writeAtomic(this.paths, this.paths.referrersCache(repo.upstream, repo.name, subject), JSON.stringify({ manifests, fetchedAt }));
  }

  /**
   * Every repository with a tag or a link, as `{ upstream, name }` (upstream `_hosted` for hosted
   * ones). Walks repositories/ and stops at the first `_` directory of each repository.
   */
  async listRepositories(): Promise<RepoRef[]> {
    const out: RepoRef[] = [];
    const walk = async (upstream: string, parts: string[]): Promise<void> => {
      const entries = await readdirOrEmpty(path.join(this.paths.repositories, upstream, ...parts));
      if (parts.length > 0 && entries.some((e) => e === '_tags' || e === '_links')) out.push({ upstream, name: parts.join('/') });
      for (const e of entries) if (!e.startsWith('_')) await walk(upstream, [...parts, e]);
    };
    for (const upstream of await readdirOrEmpty(this.paths.repositories)) await walk(upstream, []);
    return out;
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fsp.readdir(dir);
  } catch {
    return [];
  }
}

async function removeFile(file: string): Promise<boolean> {
  try {
    await fsp.unlink(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
