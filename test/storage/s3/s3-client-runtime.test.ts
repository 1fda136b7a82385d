// The AWS SDK warns that its releases after early January 2027 need Node >= 22. On Node 24 it has
// nothing to say, and stevedore no longer silences it: a client built the way stevedore builds
// one emits no Node-version warning, and the SDK's switch to mute it is left alone.
import t from 'tap';
import { createS3Client } from '../../../lib/storage/s3/s3-client.js';

t.test('building the S3 client on this runtime draws no Node-version warning from the SDK, and nothing silences one', async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  t.teardown(() => void process.off('warning', onWarning));
  const client = createS3Client({
    bucket: 'b', prefix: '', endpoint: 'http://127.0.0.1:1', region: 'us-east-1', forcePathStyle: true,
    accessKeyId: 'k', secretAccessKey: 's', accessKeyIdFile: null, secretAccessKeyFile: null,
    sse: null, sseKmsKeyId: null, redirect: false, redirectTTL: 60, partSize: 8 * 1024 * 1024,
    readThreshold: null, readPartSize: 8 * 1024 * 1024, readConcurrency: 4, readMemory: 64 * 1024 * 1024,
  });
  t.teardown(() => client.destroy());
  await new Promise((r) => setImmediate(r));
  t.equal(process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED, undefined, "the SDK's Node-version warning is not switched off");
  t.same(warnings.filter((w) => /node/i.test(w)), [], 'no warning about the Node version');
});
