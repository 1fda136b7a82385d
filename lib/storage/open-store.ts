/** The store a configuration asks for: files under storage.path, or objects in an S3 bucket. */
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { Store } from './store.js';
import { S3BlobStore } from './s3/s3-blob-store.js';

export function openStore(storage: Config['storage'], opts: { maxSize: number | null; log?: Logger }): Store {
  if (storage.backend === 's3' && storage.s3) {
    const { reconcileInterval, ...settings } = storage.s3;
    return new Store(new S3BlobStore(storage.path, settings, { maxSize: opts.maxSize, reconcileIntervalMs: reconcileInterval, ...(opts.log ? { log: opts.log } : {}) }));
  }
  return new Store(storage.path, { maxSize: opts.maxSize, ...(opts.log ? { log: opts.log } : {}) });
}

/**
 * The store for a CLI command working beside a running server: temp files (the server's downloads
 * in progress) and unfinished uploads are left alone.
 */
export async function openStoreForCommand(config: Config): Promise<Store> {
  const store = openStore(config.storage, { maxSize: config.storage.maxSize });
  await store.init({ sweep: false });
  return store;
}
