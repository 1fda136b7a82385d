/**
 * The storage backends this build knows, by the name `storage.backend` gives. Adding one: a
 * folder implementing BlobBackend (backend.ts) and one line here (docs/ARCHITECTURE.md section 6).
 */
import { registerBackend } from './backend.js';
import { filesystemBackend } from './fs/fs-backend.js';
import { memoryBackend } from './memory/memory-backend.js';
import { s3Backend } from './s3/s3-backend.js';

registerBackend('filesystem', filesystemBackend);
registerBackend('s3', s3Backend);
// For tests of the layers above (test/storage/memory-backend.test.ts); the configuration schema
// does not accept it: a store that forgets everything at exit is no cache.
registerBackend('memory', memoryBackend);
