/** The store: content-addressed files plus per-repository records, under one root. */
import { BlobStore, type BlobStoreOptions } from './blob-store.js';
import { RepoStore } from './repo-store.js';

export class Store {
  readonly blobs: BlobStore;
  readonly repos: RepoStore;

  constructor(root: string, opts: BlobStoreOptions = { maxSize: null }) {
    this.blobs = new BlobStore(root, opts);
    this.repos = new RepoStore(this.blobs.paths);
  }

  async init(opts: { sweep?: boolean } = {}): ReturnType<BlobStore['init']> {
    return this.blobs.init(opts);
  }
}
