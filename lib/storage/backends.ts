/**
 * The storage backends this build knows, by the name `storage.backend` gives. Adding one: a
 * folder implementing BlobBackend (backend.ts) and one line here (docs/ARCHITECTURE.md section 6).
 * Each line loads its backend's module only when a configuration names it: a filesystem store
 * never loads the AWS SDK.
 */
import { registerBackend } from './backend.js';

registerBackend('filesystem', async () => (await import('./fs/fs-backend.js')).filesystemBackend);
registerBackend('s3', async () => (await import('./s3/s3-backend.js')).s3Backend);
// For tests of the layers above (test/storage/memory-backend.test.ts); the configuration schema
// does not accept it: a store that forgets everything at exit is no cache.
registerBackend('memory', async () => (await import('./memory/memory-backend.js')).memoryBackend);
