// Issue 28 item 6: the store's disk fills up. The store is a real, small tmpfs mounted for each
// test (`mount -t tmpfs -o size=…`, unmounted in teardown), filled with a file the test writes;
// the upstream is the real registry. Downloads fail cleanly (an error answer, or a cut transfer:
// never a complete-looking 200), nothing partial remains, pushes get 507 saying the disk is full,
// eviction makes room when storage.maxSize is set, what is stored is still served, and the
// process recovers by itself when space returns; the condition is logged once per episode.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { fetchAndHash, MiB } from '../fixtures/cluster.js';
import { makeBlob, pseudoRandom, pushBlob, type Blob } from '../fixtures/images.js';
import { rawRequest } from '../fixtures/http-client.js';
import { call, openUpload, pushBlobWhole, putManifest, storeState } from '../fixtures/oci-push.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';
import { OPEN_AUTH, startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { run, runOk } from '../fixtures/util.js';

const FULL_MSG = "the store's disk is full: downloads and pushes that need space fail (507) until space returns; stored content is still served (storage.maxSize lets stevedore evict to make room)";
const BACK_MSG = "the store's disk has room again: writes succeed";

/** A tmpfs of `bytes`, mounted for this test and unmounted (lazily: whatever still holds it) in teardown. */
async function tmpfs(t: Test, bytes: number): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'stevedore-tmpfs-'));
  await runOk('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir]);
  t.teardown(async () => {
    await run('umount', ['-l', dir]);
    await fsp.rmdir(dir).catch(() => undefined);
  });
  return dir;
}

async function freeBytes(dir: string): Promise<number> {
  const s = await fsp.statfs(dir);
  return s.bavail * s.bsize;
}

/** Fills the filesystem of `dir` with a file until at most `leave` bytes are free (0: until ENOSPC). Returns the file. */
async function fill(dir: string, leave = 0): Promise<string> {
  const file = path.join(dir, `filler-${Math.random().toString(36).slice(2)}`);
  const fh = await fsp.open(file, 'w');
  const buf = Buffer.alloc(64 * 1024, 7);
  try {
    for (;;) {
      const free = await freeBytes(dir);
      if (free <= leave) break;
      try {
        await fh.write(buf, 0, Math.min(buf.length, free - leave));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
        throw err;
      }
    }
  } finally {
    await fh.close();
  }
  return file;
}

async function upstreamWith(t: Test, blobs: Blob[]): Promise<Registry> {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  for (const b of blobs) await pushBlob(reg.directUrl, 'library/app', b);
  return reg;
}

const url = (sd: Stevedore, b: Blob): string => `${sd.url}/v2/library/app/blobs/${b.digest}?ns=docker.io`;

async function metric(sd: Stevedore, line: RegExp): Promise<number> {
  const text = await (await fetch(`${sd.url}/metrics`)).text();
  const m = new RegExp(`^${line.source} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

const count = (sd: Stevedore, msg: string): number => sd.logs.filter((l) => l.msg === msg).length;

t.test('a cold pull on a full disk is answered 507 saying so, stores nothing, and succeeds once space returns, without a restart', async (t) => {
  const warm = makeBlob(pseudoRandom('disk-full-warm', 512 * 1024), 'application/octet-stream');
  const cold = makeBlob(pseudoRandom('disk-full-cold', 2 * MiB), 'application/octet-stream');
  const reg = await upstreamWith(t, [warm, cold]);
  const root = await tmpfs(t, 16 * MiB);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, storagePath: path.join(root, 'store') });
  t.equal((await fetchAndHash(url(sd, warm))).digest, warm.digest, 'a blob stored before the disk fills');
  const filler = await fill(root);

  for (const attempt of [1, 2, 3]) {
    const r = await rawRequest(url(sd, cold));
    t.equal(r.status, 507, `attempt ${attempt}: 507 Insufficient Storage`);
    t.match(JSON.parse(r.body.toString()), { errors: [{ code: 'UNKNOWN', message: /disk is full/ }] }, 'an OCI error that says the disk is full');
  }
  const state = await storeState(sd.storagePath);
  t.notOk(state.blobs.includes(cold.digest), 'the digest is not stored');
  t.same(await fsp.readdir(path.join(sd.storagePath, 'tmp')), [], 'no temp file remains');

  const w = await fetchAndHash(url(sd, warm));
  t.same([w.status, w.digest], [200, warm.digest], 'what is stored is still served, right');
  t.equal(count(sd, FULL_MSG), 1, 'the condition is logged once, not per request');
  // Clients arriving while a download fails join it: one refused write per download.
  const failed = sd.logs.filter((l) => l.msg === 'download failed; nothing stored').length;
  t.ok(failed >= 1);
  t.equal(await metric(sd, /stevedore_store_write_errors_total\{reason="no_space"\}/), failed, 'each refused write is counted');
  t.equal(await metric(sd, /stevedore_store_disk_full/), 1, 'the gauge says the disk is full');

  await fsp.rm(filler);
  const c = await fetchAndHash(url(sd, cold));
  t.same([c.status, c.digest], [200, cold.digest], 'once space returns the next cold pull succeeds');
  t.ok((await storeState(sd.storagePath)).blobs.includes(cold.digest), 'and it is stored');
  t.equal(count(sd, BACK_MSG), 1, 'space returning is logged once');
  t.equal(await metric(sd, /stevedore_store_disk_full/), 0);
});

t.test('a download the disk fills mid-way cuts the clients already answered (never a complete-looking 200) and leaves nothing partial', async (t) => {
  const big = makeBlob(pseudoRandom('disk-full-mid', 6 * MiB), 'application/octet-stream');
  const reg = await upstreamWith(t, [big]);
  const root = await tmpfs(t, 16 * MiB);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, storagePath: path.join(root, 'store') });
  await fill(root, 2 * MiB);
  const got = await Promise.all([1, 2, 3].map(() => rawRequest(url(sd, big))));
  for (const [i, r] of got.entries()) {
    const whole = r.status === 200 && r.complete && r.body.length === big.size;
    t.notOk(whole, `client ${i}: no complete body`);
    if (r.status === 200) t.ok(!r.complete && r.error !== null, `client ${i}: answered 200, then its transfer broke (${r.body.length} bytes, ${r.error?.message})`);
    else t.equal(r.status, 507, `client ${i}: not answered yet, it gets 507`);
  }
  t.ok(got.some((r) => r.status === 200), 'some clients had been answered before the disk filled');
  const state = await storeState(sd.storagePath);
  t.notOk(state.blobs.includes(big.digest), 'the digest is not stored');
  t.same(await fsp.readdir(path.join(sd.storagePath, 'tmp')), [], 'the temp file was removed');
});

t.test('with storage.maxSize set, a full disk evicts the least recently served content and the download succeeds', async (t) => {
  const [a1, a2, a3] = [1, 2, 3].map((i) => makeBlob(pseudoRandom(`disk-full-lru-${i}`, 2 * MiB), 'application/octet-stream')) as [Blob, Blob, Blob];
  const cold = makeBlob(pseudoRandom('disk-full-lru-new', 2.5 * MiB), 'application/octet-stream');
  const reg = await upstreamWith(t, [a1, a2, a3, cold]);
  const root = await tmpfs(t, 16 * MiB);
  // maxSize far above the disk: only the disk filling up makes room here.
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, storagePath: path.join(root, 'store'), config: { storage: { maxSize: '1GiB' } } });
  for (const b of [a1, a2, a3]) t.equal((await fetchAndHash(url(sd, b))).digest, b.digest);
  // a1 served again: a2 is now the least recently served.
  t.equal((await fetchAndHash(url(sd, a1))).digest, a1.digest);
  await fill(root, 1 * MiB);
  const c = await fetchAndHash(url(sd, cold));
  t.same([c.status, c.digest], [200, cold.digest], 'the download succeeded: room was made');
  const state = await storeState(sd.storagePath);
  t.ok(state.blobs.includes(cold.digest), 'it is stored');
  t.notOk(state.blobs.includes(a2.digest), 'the least recently served blob was evicted');
  t.ok(state.blobs.includes(a1.digest), 'the one served since was kept');
  t.equal(count(sd, FULL_MSG), 0, 'no write failed');
  t.ok(sd.logs.some((l) => l.msg === "the store's disk is full: evicted least recently served content to make room"), 'the eviction is logged');
});

t.test('a push on a full disk gets 507 saying so and leaves no upload session or partial blob', async (t) => {
  const layer = makeBlob(pseudoRandom('disk-full-push', 1 * MiB), 'application/octet-stream');
  const config = makeBlob(Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'), 'application/vnd.oci.image.config.v1+json');
  const root = await tmpfs(t, 16 * MiB);
  const sd = await startStevedore(t, { upstreams: {}, defaultUpstream: null, storagePath: path.join(root, 'store'), config: { registry: { hosted: ['lab/**'] }, auth: OPEN_AUTH } });
  t.equal((await pushBlobWhole(sd.url, 'lab/app', config.data, config.digest)).status, 201, 'a small blob pushed before the disk fills');
  const filler = await fill(root, 256 * 1024);

  const whole = await pushBlobWhole(sd.url, 'lab/app', layer.data, layer.digest);
  t.equal(whole.status, 507, 'a monolithic blob upload: 507');
  t.match(JSON.parse(whole.body.toString()), { errors: [{ message: /disk is full/ }] });

  const s = await openUpload(sd.url, 'lab/app');
  const patch = await call(sd.url, 'PATCH', s.location, { body: layer.data, headers: { 'content-type': 'application/octet-stream', 'content-range': `0-${layer.size - 1}` } });
  t.equal(patch.status, 507, 'a chunk that does not fit: 507');
  t.match(JSON.parse(patch.body.toString()), { errors: [{ message: /disk is full/ }] });
  t.equal((await call(sd.url, 'GET', s.location)).status, 404, 'its session is gone');

  await fill(root);
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: config.mediaType, digest: config.digest, size: config.size }, layers: [] }));
  const put = await putManifest(sd.url, 'lab/app', 'v1', manifest, 'application/vnd.oci.image.manifest.v1+json');
  t.equal(put.status, 507, 'a manifest PUT: 507');
  t.match(JSON.parse(put.body.toString()), { errors: [{ message: /disk is full/ }] });
  t.equal((await call(sd.url, 'GET', '/v2/lab/app/manifests/v1')).status, 404, 'the tag does not exist');

  const state = await storeState(sd.storagePath);
  t.same(state.uploads, [], 'no upload session remains');
  t.notOk(state.blobs.includes(layer.digest), 'the blob is not stored');
  t.same(await fsp.readdir(path.join(sd.storagePath, 'tmp')), [], 'no temp file remains');
  t.equal(count(sd, FULL_MSG), 1, 'logged once');

  await fsp.rm(filler, { force: true });
  for (const f of await fsp.readdir(root)) if (f.startsWith('filler-')) await fsp.rm(path.join(root, f));
  t.equal((await pushBlobWhole(sd.url, 'lab/app', layer.data, layer.digest)).status, 201, 'once space returns the push succeeds');
  t.equal((await putManifest(sd.url, 'lab/app', 'v1', manifest, 'application/vnd.oci.image.manifest.v1+json')).status, 201);
});
