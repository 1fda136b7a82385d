// The S3 backend (storage.backend: s3) on a real Ceph RADOS Gateway (test/fixtures/ceph.ts), in
// front of the real distribution registry or, for faults, a programmable upstream: what lands in
// the bucket, what never does (unverified bytes, unfinished uploads), reads by range and by
// redirect, eviction, and a restart on an empty local directory.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { RGW_TEST_KMS_KEY } from '../fixtures/ceph.js';
import { parseDigest } from '../../lib/oci/digest.js';
import t from 'tap';
import { buildDockerImage, pseudoRandom, pushImage, sha256 } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { readDirImage, skopeoCopy } from '../fixtures/skopeo.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { notFound, sleep, startFake, writeAndWait } from '../fixtures/fake-upstream.js';
import { rawRequest } from '../fixtures/http-client.js';
import { bucketKeys, pendingUploads, s3Client, s3Storage } from '../fixtures/s3.js';
import { tmpDir } from '../fixtures/util.js';

const MiB = 1024 * 1024;

function blobKey(digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return `blobs/sha256/${hex.slice(0, 2)}/${hex}`;
}

async function objectBytes(s: Awaited<ReturnType<typeof s3Storage>>, key: string): Promise<Buffer> {
  const r = await s3Client(s).send(new GetObjectCommand({ Bucket: s.bucket, Key: key }));
  return Buffer.from(await r.Body!.transformToByteArray());
}

async function waitFor(what: string, cond: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

t.test('a pull through the S3 backend stores every blob and manifest as an object under its digest, byte for byte', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  // Layers above one part (5 MiB) so they go up as multipart uploads.
  const img = buildDockerImage('s3-backend/pull', { layers: 2, layerSize: 12 * MiB });
  await pushImage(reg.url, 'library/app', 'v1', img);
  const s3 = await s3Storage();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { storage: { backend: 's3', s3: { ...s3, partSize: '5MiB' } } } });

  const dir = path.join(await tmpDir(t), 'img');
  const r = await skopeoCopy(`docker://${sd.host}/docker.io/library/app:v1`, `dir:${dir}`);
  t.equal(r.code, 0, r.stderr);
  const got = readDirImage(dir);
  for (const l of img.layers) t.ok(got.blobs.get(l.digest)?.equals(l.data), `layer ${l.digest.slice(0, 19)}: the upstream's bytes`);
  await sd.app.pull.drain();

  const keys = await bucketKeys(s3);
  for (const b of [img.manifest, img.config, ...img.layers]) {
    t.ok(keys.includes(blobKey(b.digest)), `${b.digest.slice(0, 19)} is an object`);
  }
  for (const l of img.layers) t.equal(sha256(await objectBytes(s3, blobKey(l.digest))), l.digest, `the object of ${l.digest.slice(0, 19)} hashes to its digest`);
  t.ok(keys.includes('repositories/docker.io/library/app/_tags/v1'), 'the tag is a record in the bucket');
  t.ok(keys.includes(`repositories/docker.io/library/app/_links/sha256/${img.layers[0]!.digest.slice(7)}`), 'and the links');
  t.same(await pendingUploads(s3), [], 'no multipart upload left unfinished');
  t.same((await fsp.readdir(sd.storagePath)).filter((f) => f === 'blobs' || f === 'repositories'), [], 'nothing of the store on the local disk');

  await t.test('a Range GET is answered from the object with exactly those bytes', async (t) => {
    const layer = img.layers[1]!;
    const res = await rawRequest(`${sd.url}/v2/docker.io/library/app/blobs/${layer.digest}`, { headers: { range: 'bytes=6000000-6000099' } });
    t.equal(res.status, 206);
    t.equal(res.headers['content-range'], `bytes 6000000-6000099/${layer.size}`);
    t.ok(res.body.equals(layer.data.subarray(6_000_000, 6_000_100)));
  });

  await t.test('a warm pull asks the upstream for nothing', async (t) => {
    reg.resetCounts();
    const again = path.join(await tmpDir(t), 'img');
    const r2 = await skopeoCopy(`docker://${sd.host}/docker.io/library/app:v1`, `dir:${again}`);
    t.equal(r2.code, 0, r2.stderr);
    t.equal(reg.count('GET', /\/blobs\//), 0, 'no blob GET upstream');
  });
});

t.test('wrong bytes from the upstream: the client gets no blob, no object is published, no upload is left', async (t) => {
  const good = pseudoRandom('s3-backend/wrong/good', 9 * MiB);
  const digest = sha256(good);
  const bad = Buffer.from(good);
  bad[bad.length - 10] = bad[bad.length - 10]! ^ 0xff;
  const fake = await startFake(t, (_req, res, url) => {
    if (url.pathname !== `/v2/team/r/blobs/${digest}`) return notFound(res);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(bad.length) });
    res.end(bad);
  });
  const s3 = await s3Storage();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: fake.url } }, config: { storage: { backend: 's3', s3: { ...s3, partSize: '5MiB' } } } });
  const r = await rawRequest(`${sd.url}/v2/docker.io/team/r/blobs/${digest}`).catch((err: Error) => err);
  t.ok(r instanceof Error || r.status !== 200 || !r.complete, 'the transfer does not complete as a 200');
  t.equal(fake.count('GET', /\/blobs\//), 1, 'the upstream was asked (and sent the wrong bytes)');
  await sd.app.pull.drain();
  await waitFor('the aborted upload to go', async () => (await pendingUploads(s3)).length === 0).catch(() => undefined);
  t.notOk((await bucketKeys(s3)).includes(blobKey(digest)), 'no object under the digest');
  t.same(await pendingUploads(s3), [], 'the multipart upload (a part had gone up) was aborted');
});

t.test('a crash mid-download leaves an unfinished upload; the next start aborts it', async (t) => {
  const data = pseudoRandom('s3-backend/crash', 24 * MiB);
  const digest = sha256(data);
  const fake = await startFake(t, async (_req, res, url) => {
    if (url.pathname !== `/v2/team/r/blobs/${digest}`) return notFound(res);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) });
    // 12 MiB (two parts of 5 MiB go up), then a stall: the process is killed meanwhile.
    for (let at = 0; at < 12 * MiB; at += MiB) await writeAndWait(res, data.subarray(at, at + MiB));
    await sleep(60_000);
    res.destroy();
  });
  const s3 = await s3Storage();
  const store = await tmpDir(t, 'stevedore-s3-work-');
  const config = { upstreams: { 'docker.io': { url: fake.url } }, defaultUpstream: 'docker.io', storage: { path: store, backend: 's3', s3: { ...s3, partSize: '5MiB' } } };
  const first = await spawnStevedore(t, config);
  const pending = rawRequest(`${first.url}/v2/docker.io/team/r/blobs/${digest}`, { timeoutMs: 60_000 }).catch((err: Error) => err);
  await waitFor('a multipart upload with parts', async () => (await pendingUploads(s3)).length === 1);
  await first.kill('SIGKILL');
  await pending;
  const orphan = await pendingUploads(s3);
  t.equal(orphan.length, 1, 'the killed process left its upload unfinished');
  t.equal(orphan[0]![0], blobKey(digest), 'on the final key');
  t.notOk((await bucketKeys(s3)).includes(blobKey(digest)), 'and no object: it never completed');

  const second = await spawnStevedore(t, config);
  t.same(await pendingUploads(s3), [], 'the restart aborted it before listening');
  t.ok(second.logs.some((l) => l.msg === 'aborted an unfinished multipart upload (left by a process that stopped)' && l.key === blobKey(digest)), 'and said so');
  await second.kill();
});

t.test('maxSize: the least recently served blob is evicted and its object deleted', async (t) => {
  const blobs = [1, 2, 3].map((i) => pseudoRandom(`s3-backend/evict/${i}`, 4 * MiB));
  const digests = blobs.map((b) => sha256(b));
  const fake = await startFake(t, (_req, res, url) => {
    const i = digests.findIndex((d) => url.pathname === `/v2/team/r/blobs/${d}`);
    if (i < 0) return notFound(res);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(blobs[i]!.length) });
    res.end(blobs[i]);
  });
  const s3 = await s3Storage();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: fake.url } }, config: { storage: { backend: 's3', maxSize: '10MiB', s3 } } });
  for (const d of digests) {
    const r = await rawRequest(`${sd.url}/v2/docker.io/team/r/blobs/${d}`);
    t.equal(r.status, 200);
    await sd.app.pull.drain();
  }
  const blobStore = sd.app.store.blobs;
  await blobStore.evictionsSettled();
  const keys = await bucketKeys(s3);
  t.notOk(keys.includes(blobKey(digests[0]!)), 'the first (least recently served) object was deleted');
  t.ok(keys.includes(blobKey(digests[1]!)) && keys.includes(blobKey(digests[2]!)), 'the other two are kept');
  t.ok(sd.logs.some((l) => l.msg === 'evicted least recently served content' && l.digest === digests[0]), 'the eviction was logged');
});

t.test('a replica started on an empty local directory finds the bucket\'s content (index rebuilt from a listing) and serves it with the upstream gone', async (t) => {
  const reg = await startRegistry();
  const img = buildDockerImage('s3-backend/restart', { layers: 1, layerSize: 2 * MiB });
  await pushImage(reg.url, 'library/app', 'v1', img);
  const s3 = await s3Storage();
  const first = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { storage: { backend: 's3', s3 } } });
  const dir = path.join(await tmpDir(t), 'img');
  t.equal((await skopeoCopy(`docker://${first.host}/docker.io/library/app:v1`, `dir:${dir}`)).code, 0);
  await first.app.pull.drain();
  await first.stop();
  await reg.stop();

  const second = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { offline: true, storage: { backend: 's3', s3 } } });
  t.ok(second.app.store.blobs.has({ algorithm: 'sha256', hex: img.layers[0]!.digest.slice(7), value: img.layers[0]!.digest }), 'the layer is in the new index');
  const again = path.join(await tmpDir(t), 'img');
  const r = await skopeoCopy(`docker://${second.host}/docker.io/library/app:v1`, `dir:${again}`);
  t.equal(r.code, 0, r.stderr);
  t.ok(readDirImage(again).blobs.get(img.layers[0]!.digest)?.equals(img.layers[0]!.data), 'the layer, from the bucket');
});

t.test('storage.s3.redirect: a stored blob is answered with 307 to a presigned URL that serves its bytes; skopeo follows it', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('s3-backend/redirect', { layers: 1, layerSize: MiB });
  await pushImage(reg.url, 'library/app', 'v1', img);
  const s3 = await s3Storage();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { storage: { backend: 's3', s3: { ...s3, redirect: true } } } });
  const dir = path.join(await tmpDir(t), 'img');
  t.equal((await skopeoCopy(`docker://${sd.host}/docker.io/library/app:v1`, `dir:${dir}`)).code, 0, 'a cold pull (streamed: nothing to redirect to yet)');
  await sd.app.pull.drain();

  const layer = img.layers[0]!;
  const res = await rawRequest(`${sd.url}/v2/docker.io/library/app/blobs/${layer.digest}`);
  t.equal(res.status, 307);
  const location = String(res.headers.location);
  t.ok(location.startsWith(`${s3.endpoint}/${s3.bucket}/${blobKey(layer.digest)}?`), 'to the object on the gateway');
  t.match(location, /X-Amz-Signature=/, 'presigned');
  t.equal(res.headers['docker-content-digest'], layer.digest);
  const direct = await fetch(location);
  t.equal(direct.status, 200);
  t.equal(sha256(Buffer.from(await direct.arrayBuffer())), layer.digest, 'the URL serves the blob');

  const warm = path.join(await tmpDir(t), 'img');
  const r = await skopeoCopy(`docker://${sd.host}/docker.io/library/app:v1`, `dir:${warm}`);
  t.equal(r.code, 0, r.stderr);
  t.ok(readDirImage(warm).blobs.get(layer.digest)?.equals(layer.data), 'skopeo followed the redirect and got the bytes');
  t.ok(sd.requestLogs().some((l) => l.status === 307), 'answered by redirect');
});

t.test('storage.s3.redirect: the 307 is never cached (Cache-Control: no-store), and its URL expires after redirectTTL', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('s3-backend/redirect-no-store', { layers: 1 });
  await pushImage(reg.url, 'library/app', 'v1', img);
  const s3 = await s3Storage();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { storage: { backend: 's3', s3: { ...s3, redirect: true, redirectTTL: '15m' } } } });
  const layer = img.layers[0]!;
  t.equal((await rawRequest(`${sd.url}/v2/docker.io/library/app/blobs/${layer.digest}`)).status, 200, 'a cold pull streams');
  await sd.app.pull.drain();
  const res = await rawRequest(`${sd.url}/v2/docker.io/library/app/blobs/${layer.digest}`);
  t.equal(res.status, 307);
  t.equal(res.headers['cache-control'], 'no-store', 'no cache keeps the presigned URL');
  t.match(String(res.headers.location), /[?&]X-Amz-Expires=900(&|$)/, 'the URL lives redirectTTL');
});

t.test('a bucket that does not exist stops start-up with a message naming it', async (t) => {
  const s3 = await s3Storage();
  await t.rejects(
    startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: { storage: { backend: 's3', s3: { ...s3, bucket: 'no-such-bucket' } } } }),
    /storage\.s3: cannot use bucket "no-such-bucket" at http:\/\/127\.0\.0\.1:\d+: NoSuchBucket|NotFound/,
  );
});

t.test('backend s3 without storage.s3 is a configuration error', async (t) => {
  await t.rejects(startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: { storage: { backend: 's3' } } }), /storage\.s3/);
});

t.test('the background reconciliation learns objects stored by someone else and forgets objects deleted behind its back', async (t) => {
  const s3 = await s3Storage();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: { storage: { backend: 's3', s3 } } });
  const store = sd.app.store.blobs;
  const added = pseudoRandom('s3-backend/reconcile/added', 4096);
  const addedDigest = parseDigest(sha256(added));
  await s3Client(s3).send(new PutObjectCommand({ Bucket: s3.bucket, Key: blobKey(addedDigest.value), Body: added, ContentLength: added.length }));
  t.notOk(store.has(addedDigest), 'not in the index before a listing');
  const reconciled = store.reconciliations;
  await store.reconcile();
  t.equal(store.reconciliations, reconciled + 1);
  t.ok(store.has(addedDigest), 'learnt from the listing');
  t.equal(store.sizeOf(addedDigest.value), added.length, 'with its size');

  await s3Client(s3).send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: blobKey(addedDigest.value) }));
  await store.reconcile();
  t.notOk(store.has(addedDigest), 'forgotten once its object is gone');
});

t.test('storage.s3.sse aws:kms: every object is written encrypted with the key, and served decrypted', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('s3-backend/sse', { layers: 1, layerSize: 7 * MiB });
  await pushImage(reg.url, 'library/app', 'v1', img);
  const s3 = await s3Storage();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { storage: { backend: 's3', s3: { ...s3, partSize: '5MiB', sse: 'aws:kms', sseKmsKeyId: RGW_TEST_KMS_KEY } } } });
  const dir = path.join(await tmpDir(t), 'img');
  const r = await skopeoCopy(`docker://${sd.host}/docker.io/library/app:v1`, `dir:${dir}`);
  t.equal(r.code, 0, r.stderr);
  await sd.app.pull.drain();
  for (const key of [blobKey(img.layers[0]!.digest), blobKey(img.manifest.digest), 'repositories/docker.io/library/app/_tags/v1']) {
    const head = await s3Client(s3).send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
    t.equal(head.ServerSideEncryption, 'aws:kms', `${key}: encrypted`);
    t.equal(head.SSEKMSKeyId, RGW_TEST_KMS_KEY, 'with the configured key');
  }
  const warm = path.join(await tmpDir(t), 'img');
  t.equal((await skopeoCopy(`docker://${sd.host}/docker.io/library/app:v1`, `dir:${warm}`)).code, 0);
  t.ok(readDirImage(warm).blobs.get(img.layers[0]!.digest)?.equals(img.layers[0]!.data), 'a warm pull gets the plain bytes');
});
