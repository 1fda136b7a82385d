/** The store a configuration asks for: the backend registered as `storage.backend` (backends.ts). */
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { createBackend } from './backend.js';
import './backends.js';
import { BlobStore } from './blob-store.js';
import { Store } from './store.js';

export async function openStore(storage: Config['storage'], opts: { maxSize: number | null; log?: Logger }): Promise<Store> {
  const backend = await createBackend(storage, opts.log ? { log: opts.log } : {});
  return new Store(new BlobStore(backend, { maxSize: opts.maxSize, ...(opts.log ? { log: opts.log } : {}) }));
}

/**
 * The store for a CLI command working beside a running server: temp files (the server's downloads
 * in progress) and unfinished uploads are left alone.
 */
export async function openStoreForCommand(config: Config): Promise<Store> {
  const store = await openStore(config.storage, { maxSize: config.storage.maxSize });
  await store.init({ sweep: false });
  return store;
}
