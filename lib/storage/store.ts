/** The store: content-addressed blobs plus per-repository records (on disk, or in an S3 bucket: open-store.ts). */
import { BlobStore, type BlobStoreOptions } from './blob-store.js';
import { RepoStore } from './repo-store.js';

export class Store {
  readonly blobs: BlobStore;
  readonly repos: RepoStore;

  constructor(root: string | BlobStore, opts: BlobStoreOptions = { maxSize: null }) {
    this.blobs = typeof root === 'string' ? new BlobStore(root, opts) : root;
    this.repos = new RepoStore(this.blobs.records);
  }

  async init(opts: { sweep?: boolean } = {}): ReturnType<BlobStore['init']> {
    return this.blobs.init(opts);
  }
}
