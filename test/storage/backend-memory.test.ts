// The in-memory backend (the one unit tests of the layers above use) passes the backend contract.
import t from 'tap';
import { MemoryBackend } from '../../lib/storage/memory/memory-backend.js';
import { backendContract } from './backend-contract.js';

backendContract(t, { name: 'memory', make: async () => new MemoryBackend() });
