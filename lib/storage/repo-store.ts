/**
 * Per-repository records on disk: tag → digest links, which digests a repository has, and the last
 * complete tags list. Written atomically (temp file + rename) so a crash never leaves half a record.
 */
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
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
    try {
      await fsp.access(this.paths.link(repo.upstream, repo.name, d));
      return true;
    } catch {
      return false;
    }
  }

  async link(repo: RepoRef, d: Digest): Promise<void> {
    const file = this.paths.link(repo.upstream, repo.name, d);
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(file, '');
  }

  async getTagsList(repo: RepoRef): Promise<{ tags: string[]; fetchedAt: number } | null> {
    const rec = await readJson<{ tags: string[]; fetchedAt: number }>(this.paths.tagsList(repo.upstream, repo.name));
    if (!rec || !Array.isArray(rec.tags)) return null;
    return rec;
  }

  async setTagsList(repo: RepoRef, tags: string[], fetchedAt: number): Promise<void> {
    await writeAtomic(this.paths, this.paths.tagsList(repo.upstream, repo.name), JSON.stringify({ tags, fetchedAt }));
  }
}
