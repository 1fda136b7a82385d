/** The store: content-addressed files plus per-repository records, under one root. */
import { BlobStore } from './blob-store.js';
import { RepoStore } from './repo-store.js';

export class Store {
  readonly blobs: BlobStore;
  readonly repos: RepoStore;

  constructor(root: string) {
    this.blobs = new BlobStore(root);
    this.repos = new RepoStore(this.blobs.paths);
  }

  async init(): Promise<{ sweptTempFiles: number }> {
    return this.blobs.init();
  }
}
