// The S3 backend passes the backend contract (backend-contract.ts) on a real Ceph RADOS Gateway
// (test/fixtures/ceph.ts), a new bucket per case, its large blobs read by parallel ranged GETs. Without Ceph installed this fails, as every S3
// test does: it runs in `npm run test:s3` too.
import t from 'tap';
import { S3Backend } from '../../lib/storage/s3/s3-backend.js';
import { s3Storage } from '../fixtures/s3.js';
import { tmpDir } from '../fixtures/util.js';
import { backendContract } from './backend-contract.js';

backendContract(t, {
  name: 's3',
  make: async (t) => {
    const s = await s3Storage();
    return new S3Backend(await tmpDir(t, 'stevedore-s3-backend-'), {
      bucket: s.bucket,
      prefix: 'store/',
      endpoint: s.endpoint,
      region: s.region,
      forcePathStyle: true,
      accessKeyId: s.accessKeyId,
      secretAccessKey: s.secretAccessKey,
      accessKeyIdFile: null,
      secretAccessKeyFile: null,
      sse: null,
      sseKmsKeyId: null,
      redirect: false,
      redirectTTL: 60_000,
      partSize: 5 * 1024 * 1024,
      // Blobs of 1 MiB and more (the contract's 1 MiB and 6 MiB ones) take the parallel ranged
      // reads (ranged-reader.ts), in parts of 1 MiB, 3 at once, with room for two parts read
      // ahead; smaller ones the single GET.
      readThreshold: 1024 * 1024,
      readPartSize: 1024 * 1024,
      readConcurrency: 3,
      readMemory: 2 * 1024 * 1024,
    });
  },
});
