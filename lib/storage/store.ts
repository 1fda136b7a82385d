/**
 * The store: content-addressed blobs plus per-repository records, above one storage backend
 * (a directory, an S3 bucket, memory: backend.ts; open-store.ts picks it from the configuration).
 */
import type { BlobBackend } from './backend.js';
import { BlobStore, type BlobStoreOptions, type InitOptions } from './blob-store.js';
import { RepoStore } from './repo-store.js';

export class Store {
  readonly blobs: BlobStore;
  readonly repos: RepoStore;

  constructor(blobs: BlobStore | BlobBackend, opts: BlobStoreOptions = { maxSize: null }) {
    this.blobs = blobs instanceof BlobStore ? blobs : new BlobStore(blobs, opts);
    this.repos = new RepoStore(this.blobs.records);
  }

  async init(opts: InitOptions = {}): ReturnType<BlobStore['init']> {
    return this.blobs.init(opts);
  }
}
