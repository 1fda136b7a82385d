// server.workers on the S3 backend without Redis (the default `workers: auto` on a multi-core host):
// the workers share no disk, so the clients of the workers that do not download stream the blob from
// the one that does, over its own loopback peer endpoint, signed with the supervisor's secret. Real
// Ceph RADOS Gateway, real registry behind a pacing proxy, all on 127.0.0.1.
import path from 'node:path';
import t from 'tap';
import { makeBlob, pseudoRandom } from '../fixtures/images.js';
import { blobGets, blobUrl, fetchAndHash, MiB, upstreamWith } from '../fixtures/cluster.js';
import { bucketKeys, objectSha256, pendingUploads, s3Storage } from '../fixtures/s3.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { tmpDir, waitFor } from '../fixtures/util.js';

t.setTimeout(5 * 60_000);

const PEER_PATH = '/_stevedore/peer/v1/blobs/';

t.test('two workers on one bucket, no Redis: they start, one upstream GET, every body right, the non-holder streams from the holder', async (t) => {
  const blob = makeBlob(pseudoRandom('s3-workers-64', 64 * MiB), 'application/octet-stream');
  // ~2 s on the wire: every client arrives while the download runs.
  const reg = await upstreamWith(t, blob, 32 * MiB);
  const s3 = await s3Storage();
  const dir = await tmpDir(t, 'stevedore-s3-workers-');
  const p = await spawnStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    storage: { path: path.join(dir, 'store'), backend: 's3', s3: { ...s3, partSize: '8MiB' } },
    server: { workers: 2 },
  });
  const results = await Promise.all(Array.from({ length: 16 }, () => fetchAndHash(blobUrl(p, blob.digest))));
  t.equal(blobGets(reg, blob.digest).length, 1, 'one upstream GET for the host');
  t.same(
    results.filter((r) => r.status !== 200 || r.digest !== blob.digest || r.bytes !== blob.size).map((r) => r.error ?? r.status),
    [],
    'every client got 200 and the right bytes',
  );
  const holders = new Set(p.logs.filter((l) => l.msg === 'downloading a blob for the cluster (holding its lease)').map((l) => l.worker));
  t.equal(holders.size, 1, 'one worker held the download');
  const streamed = p.logs.filter((l) => l.msg === 'request' && typeof l.path === 'string' && l.path.startsWith(PEER_PATH) && l.status === 200 && holders.has(l.worker));
  t.ok(streamed.length >= 1, 'the holder served the other worker over its peer endpoint');
  await waitFor('the object', async () => (await bucketKeys(s3)).includes(`blobs/sha256/${blob.digest.slice(7, 9)}/${blob.digest.slice(7)}`), 10_000);
  t.equal(`sha256:${await objectSha256(s3, `blobs/sha256/${blob.digest.slice(7, 9)}/${blob.digest.slice(7)}`)}`, blob.digest, 'the object verifies');
  t.same(await pendingUploads(s3), [], 'no unfinished multipart upload');
});

t.test('the peer endpoint is not on the shared port, and refuses an unsigned request on its own', async (t) => {
  const s3 = await s3Storage();
  const dir = await tmpDir(t, 'stevedore-s3-workers-');
  const p = await spawnStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:9' } },
    storage: { path: path.join(dir, 'store'), backend: 's3', s3 },
    server: { workers: 2 },
  });
  const digest = `sha256:${'0'.repeat(64)}`;
  const onMain = await fetch(`${p.url}${PEER_PATH}${digest}`);
  await onMain.arrayBuffer();
  t.equal(onMain.status, 404, 'the shared port does not serve it');
  const listening = p.logs.find((l) => typeof l.peerEndpoint === 'string');
  t.ok(listening, 'each worker logs its loopback peer endpoint');
  const own = await fetch(`${String(listening!.peerEndpoint)}${PEER_PATH}${digest}`);
  await own.arrayBuffer();
  t.equal(own.status, 401, 'unsigned: refused');
});
