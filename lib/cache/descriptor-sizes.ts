/**
 * Sizes that manifests fetched upstream give for the blobs they name, by `upstream/name@digest`
 * (a manifest speaks for its own repository only): a download of one is held to that size
 * (download.ts, `expectedSize`). Written by manifests.ts, read by local-downloads.ts.
 */
import { LRUCache } from 'lru-cache';
import { upTo } from '../util/lru-bound.js';
import type { RepoRef } from '../storage/repo-store.js';

/** Descriptor sizes remembered (per repository and digest). */
const DESCRIPTOR_SIZES_MAX = 50_000;

export class DescriptorSizes {
  private readonly sizes = new LRUCache<string, number>(upTo(DESCRIPTOR_SIZES_MAX));

  note(repo: RepoRef, digest: string, size: number): void {
    this.sizes.set(`${repo.upstream}/${repo.name}@${digest}`, size);
  }

  get(repo: RepoRef, digest: string): number | null {
    return this.sizes.get(`${repo.upstream}/${repo.name}@${digest}`) ?? null;
  }
}
