// The filesystem backend passes the backend contract (backend-contract.ts), in a temp directory.
import t from 'tap';
import { FsBackend } from '../../lib/storage/fs/fs-backend.js';
import { tmpDir } from '../fixtures/util.js';
import { backendContract } from './backend-contract.js';

backendContract(t, { name: 'filesystem', make: async (t) => new FsBackend(await tmpDir(t, 'stevedore-fs-backend-')) });
