// Cluster mode on the S3 backend: three `stevedore serve` processes on one bucket of a real Ceph
// RADOS Gateway and one redis-server, each with its own local directory (no shared disk), in front
// of a real registry behind a pacing proxy, all on 127.0.0.1. One upstream fetch per digest; the
// clients of the replicas that do not download stream from the one that does, while it downloads;
// the holder killed -9 is taken over and leaves no unfinished multipart upload behind.
import t from 'tap';
import { makeBlob, pseudoRandom } from '../fixtures/images.js';
import { blobGets, blobUrl, fetchAndHash, MiB, upstreamWith } from '../fixtures/cluster.js';
import { startRedis } from '../fixtures/redis.js';
import { bucketKeys, objectSha256, pendingUploads, s3Storage, type S3TestSettings } from '../fixtures/s3.js';
import { spawnStevedore, type FailableTest, type StevedoreProcess } from '../fixtures/stevedore-process.js';
import { freePort, tmpDir, waitFor } from '../fixtures/util.js';
import { rawRequest } from '../fixtures/http-client.js';

// Several multi-replica runs of large blobs: more than tap's default 300 s per file on a busy 2-core machine.
t.setTimeout(10 * 60_000);

const TOKEN = 'replicas-shared-secret-0123456789';

interface S3Cluster {
  replicas: StevedoreProcess[];
  s3: S3TestSettings;
}

async function startS3Cluster(t: FailableTest, upstreamUrl: string, cluster: Record<string, unknown> = {}): Promise<S3Cluster> {
  const redis = await startRedis(t);
  const s3 = await s3Storage();
  const replicas: StevedoreProcess[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    replicas.push(
      await spawnStevedore(t, {
        listen: `127.0.0.1:${port}`,
        upstreams: { 'docker.io': { url: upstreamUrl } },
        // Each replica its own local directory: only the bucket is shared.
        storage: { path: await tmpDir(t, `stevedore-s3-replica-${i}-`), backend: 's3', s3: { ...s3, partSize: '8MiB' } },
        metadata: { redis: redis.url },
        registry: { hosted: ['lab/**'] },
        auth: { rules: [{ repository: '**', users: ['anonymous', '*'], actions: ['pull', 'push', 'delete'] }] },
        cluster: { leaseTTL: '2s', pollInterval: '50ms', replicaId: `replica-${i}`, advertise: `http://127.0.0.1:${port}`, token: TOKEN, ...cluster },
      }),
    );
  }
  return { replicas, s3 };
}

function holderOf(replicas: StevedoreProcess[], skip: StevedoreProcess[] = []): StevedoreProcess | undefined {
  return replicas.find((r) => !skip.includes(r) && r.logs.some((l) => l.msg === 'downloading a blob for the cluster (holding its lease)'));
}

function blobKey(digest: string): string {
  return `blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`;
}

t.test('30 clients spread over 3 replicas on one bucket, one cold 64 MiB blob: every body right, one upstream GET, first bytes before the download ends', async (t) => {
  // Above readThreshold (32 MiB): the clients served from the bucket read it by the large-blob path (storage/s3/ranged-reader.ts; readConcurrency auto: one GET received into pooled memory).
  const blob = makeBlob(pseudoRandom('s3-cluster-64', 64 * MiB), 'application/octet-stream');
  // ~4 s on the wire: every client arrives while the download runs, also on a loaded machine (at
  // 32 MiB/s cluster-downloads.test.ts once saw a follower's first byte after the 2 s download).
  const reg = await upstreamWith(t, blob, 16 * MiB);
  const c = await startS3Cluster(t, reg.url, { leaseTTL: '10s' });
  const results = await Promise.all(Array.from({ length: 30 }, (_, i) => fetchAndHash(blobUrl(c.replicas[i % 3]!, blob.digest))));
  const gets = blobGets(reg, blob.digest);
  t.equal(gets.length, 1, 'one upstream GET for the whole cluster');
  t.same(
    results.filter((r) => r.status !== 200 || r.digest !== blob.digest || r.bytes !== blob.size).map((r) => r.error ?? r.status),
    [],
    'every client got 200 and the right bytes',
  );
  const downloadEnd = reg.requests.find((q) => q.method === 'GET' && q.path.includes(blob.digest))!.finishedAt!;
  const holder = c.replicas.indexOf(holderOf(c.replicas)!);
  t.ok(holder >= 0, 'one replica held the download');
  const followers = results.filter((_, i) => i % 3 !== holder);
  t.equal(followers.length, 20, 'two thirds of the clients were on replicas that did not download');
  t.ok(
    followers.every((r) => r.firstByteAt > 0 && r.firstByteAt < downloadEnd),
    'clients of the other replicas got their first bytes before the download ended',
  );
  await waitFor('the object', async () => (await bucketKeys(c.s3)).includes(blobKey(blob.digest)), 10_000);
  t.equal(`sha256:${await objectSha256(c.s3, blobKey(blob.digest))}`, blob.digest, 'the object verifies');
  t.same(await pendingUploads(c.s3), [], 'no unfinished multipart upload');
  for (const r of c.replicas) t.same(r.defects, [], `${r.url}: no defect`);
});

t.test('the holder killed -9 mid-blob: the clients of the others go on from another holder, the object is stored, no unfinished upload is left', async (t) => {
  const blob = makeBlob(pseudoRandom('s3-cluster-kill', 64 * MiB), 'application/octet-stream');
  // ~4 s on the wire: the kill lands mid-body, after parts went up.
  const reg = await upstreamWith(t, blob, 16 * MiB);
  const c = await startS3Cluster(t, reg.url);
  // The first request decides the holder; the clients of the others stream from it.
  const first = fetchAndHash(blobUrl(c.replicas[0]!, blob.digest));
  await waitFor('the download to start', async () => blobGets(reg, blob.digest).length === 1, 10_000);
  const holder = holderOf(c.replicas)!;
  const others = c.replicas.filter((r) => r !== holder);
  const clients = Array.from({ length: 6 }, (_, i) => fetchAndHash(blobUrl(others[i % 2]!, blob.digest)));
  await waitFor("a part of the holder's upload", async () => (await pendingUploads(c.s3)).length === 1, 10_000);
  await holder.kill('SIGKILL');
  const results = await Promise.all(clients);
  await first;
  t.same(
    results.filter((r) => r.status !== 200 || r.digest !== blob.digest || r.bytes !== blob.size).map((r) => r.error ?? r.status),
    [],
    'every client of the surviving replicas got the whole blob, right',
  );
  const taker = holderOf(c.replicas, [holder]);
  t.ok(taker?.logs.some((l) => l.msg === 'the replica downloading this blob is gone; taking its download over'), 'a surviving replica took the download over');
  t.equal(blobGets(reg, blob.digest).length, 2, 'two upstream GETs: the dead holder\'s and the taker\'s');
  await waitFor('the object', async () => (await bucketKeys(c.s3)).includes(blobKey(blob.digest)), 20_000);
  await waitFor('the orphan to be aborted', async () => (await pendingUploads(c.s3)).length === 0, 10_000).catch(() => undefined);
  t.same(await pendingUploads(c.s3), [], "the dead holder's unfinished upload was aborted: none is left");
  t.equal(`sha256:${await objectSha256(c.s3, blobKey(blob.digest))}`, blob.digest, 'the object verifies');
  for (const r of others) t.same(r.defects, [], `${r.url}: no defect`);
});

t.test('a push whose requests land on three replicas in turn completes: its session lives in the bucket', async (t) => {
  const c = await startS3Cluster(t, 'http://127.0.0.1:1', {});
  const data = pseudoRandom('s3-cluster-push', 3 * MiB + 123);
  const digest = makeBlob(data, 'application/octet-stream').digest;
  const [a, b, d] = c.replicas as [StevedoreProcess, StevedoreProcess, StevedoreProcess];
  const t0 = Date.now();
  const open = await rawRequest(`${a.url}/v2/lab/app/blobs/uploads/`, { method: 'POST', headers: { 'content-length': '0' } });
  t.equal(open.status, 202, open.body.toString());
  const location = String(open.headers.location);
  const first = await rawRequest(`${b.url}${location}`, { method: 'PATCH', body: data.subarray(0, MiB), headers: { 'content-range': `0-${MiB - 1}`, 'content-type': 'application/octet-stream' } });
  t.equal(first.status, 202, `the first chunk, on another replica: ${first.body.toString()}`);
  const second = await rawRequest(`${d.url}${location}`, { method: 'PATCH', body: data.subarray(MiB), headers: { 'content-range': `${MiB}-${data.length - 1}`, 'content-type': 'application/octet-stream' } });
  t.equal(second.status, 202, `the second, on the third: ${second.body.toString()}`);
  t.equal(second.headers.range, `0-${data.length - 1}`);
  const put = await rawRequest(`${a.url}${location}${location.includes('?') ? '&' : '?'}digest=${digest}`, { method: 'PUT', headers: { 'content-length': '0' } });
  t.equal(put.status, 201, `closed on the first: ${put.body.toString()}`);
  t.comment(`push took ${Date.now() - t0} ms`);
  const got = await rawRequest(`${b.url}/v2/lab/app/blobs/${digest}`);
  t.equal(got.status, 200);
  t.ok(got.body.equals(data), 'every replica serves the pushed blob');
  t.ok((await bucketKeys(c.s3)).includes(blobKey(digest)), 'stored in the bucket');
  t.same((await bucketKeys(c.s3)).filter((k) => k.startsWith('uploads/')), [], 'the session is gone');
  t.same(await pendingUploads(c.s3), [], 'no unfinished multipart upload');
});

t.test('cluster mode on the S3 backend without cluster.advertise and cluster.token does not start', async (t) => {
  const redis = await startRedis(t);
  const s3 = await s3Storage();
  const p = await spawnStevedore(
    t,
    { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, storage: { path: await tmpDir(t), backend: 's3', s3 }, metadata: { redis: redis.url } },
    { expectDefects: true },
  ).catch((err: Error) => err);
  t.ok(p instanceof Error, 'start-up failed');
  t.match((p as Error).message, /cluster\.advertise/);
});
