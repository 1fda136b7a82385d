// A manifest may name a bounded number of blobs and manifests (cache.manifestMaxReferences), and
// what it names is linked and checked a few at a time, never all at once: a manifest of ~24,000
// references used to open ~24,000 files together (EMFILE, answered 500).
import { readdirSync } from 'node:fs';
import t from 'tap';
import { ociErrors, rawRequest } from '../fixtures/http-client.js';
import { notFound, sendManifest, startFake } from '../fixtures/fake-upstream.js';
import { makeBlob, MediaType, sha256, type Blob } from '../fixtures/images.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { parseDigest } from '../../lib/oci/digest.js';

const UP = 'refs.test';

/** An OCI image manifest naming a config and `layers` layers (digests of nothing stored anywhere). */
function manifestWithLayers(seed: string, layers: number): Blob {
  const desc = (i: number): Record<string, unknown> => ({ mediaType: MediaType.ociLayer, digest: sha256(`${seed}/${i}`), size: 1000 + i });
  const doc = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: sha256(`${seed}/config`), size: 100 },
    layers: Array.from({ length: layers }, (_, i) => desc(i)),
  };
  return makeBlob(Buffer.from(JSON.stringify(doc)), MediaType.ociManifest);
}

/** Samples this process's open file descriptors every millisecond; returns the peak above the count at start. */
function watchOpenFiles(): { stop(): number } {
  const count = (): number => readdirSync('/proc/self/fd').length;
  const base = count();
  let peak = base;
  const timer = setInterval(() => {
    peak = Math.max(peak, count());
  }, 1);
  return {
    stop() {
      clearInterval(timer);
      return peak - base;
    },
  };
}

function linkFiles(files: string[], upstream: string, repo = 'r'): string[] {
  return files.filter((f) => f.startsWith(`repositories/${upstream}/${repo}/_links/`));
}

t.test('a pulled manifest naming more than cache.manifestMaxReferences blobs is refused with 502 MANIFEST_INVALID naming the limit, and nothing is stored', async (t) => {
  const big = manifestWithLayers('refs/pulled-24k', 24_000);
  const fake = await startFake(t, (_req, res, url) => (url.pathname === '/v2/r/manifests/v1' ? sendManifest(res, big) : notFound(res, 'MANIFEST_UNKNOWN')));
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: fake.url } }, defaultUpstream: null });
  const r = await rawRequest(`${sd.url}/v2/r/manifests/v1?ns=${UP}`);
  t.equal(r.status, 502);
  const e = ociErrors(r)?.[0];
  t.equal(e?.code, 'MANIFEST_INVALID');
  t.match(e?.message ?? '', /cache\.manifestMaxReferences/, 'the message names the setting');
  t.match(e?.message ?? '', /24001/, 'and how many references the manifest has');
  const files = await sd.storeFiles();
  t.same(files.filter((f) => f.startsWith('blobs/') || f.startsWith('repositories/')), [], 'nothing stored, nothing linked');
});

t.test('a pulled manifest of 3,000 references is stored and linked with few files open at once', async (t) => {
  const m = manifestWithLayers('refs/pulled-3k', 3_000);
  const fake = await startFake(t, (_req, res, url) => (url.pathname === '/v2/r/manifests/v1' ? sendManifest(res, m) : notFound(res, 'MANIFEST_UNKNOWN')));
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: fake.url } }, defaultUpstream: null });
  const watch = watchOpenFiles();
  const r = await rawRequest(`${sd.url}/v2/r/manifests/v1?ns=${UP}`);
  const peak = watch.stop();
  t.equal(r.status, 200);
  t.ok(r.body.equals(m.data), 'the manifest bytes');
  t.equal(linkFiles(await sd.storeFiles(), UP).length, 3_002, 'the manifest, its config and 3,000 layers are linked');
  t.comment(`at most ${peak} more files open than before`);
  t.ok(peak < 100, `fewer than 100 more files open at once (${peak})`);
});

/** Stores `n` small blobs and links them into hosted repository `repo` (setup, through the store). */
async function seedHostedBlobs(sd: Stevedore, seed: string, n: number): Promise<Array<{ digest: string; size: number }>> {
  const out: Array<{ digest: string; size: number }> = [];
  for (let i = 0; i < n; i++) {
    const data = Buffer.from(`${seed}/${i}`);
    const digest = await sd.app.store.blobs.putSmall(data, parseDigest(sha256(data)));
    await sd.app.store.repos.link({ upstream: '_hosted', name: 'lab/app' }, parseDigest(digest));
    out.push({ digest, size: data.length });
  }
  return out;
}

t.test('a pushed manifest naming more than cache.manifestMaxReferences blobs is refused with 400 MANIFEST_INVALID naming the limit', async (t) => {
  const big = manifestWithLayers('refs/pushed-24k', 24_000);
  const sd = await startStevedore(t, { upstreams: {}, defaultUpstream: null, config: { registry: { hosted: ['lab/**'] } } });
  const r = await rawRequest(`${sd.url}/v2/lab/app/manifests/v1`, { method: 'PUT', headers: { 'content-type': big.mediaType }, body: big.data });
  t.equal(r.status, 400);
  const e = ociErrors(r)?.[0];
  t.equal(e?.code, 'MANIFEST_INVALID');
  t.match(e?.message ?? '', /cache\.manifestMaxReferences/, 'the message names the setting');
  t.same((await sd.storeFiles()).filter((f) => f.startsWith('blobs/')), [], 'nothing stored');
});

t.test('a pushed manifest of 3,000 blobs, all present, is accepted with few files open at once', async (t) => {
  const sd = await startStevedore(t, { upstreams: {}, defaultUpstream: null, config: { registry: { hosted: ['lab/**'] } } });
  const blobs = await seedHostedBlobs(sd, 'refs/pushed-3k', 3_001);
  const [config, ...layers] = blobs;
  const doc = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, ...config },
    layers: layers.map((l) => ({ mediaType: MediaType.ociLayer, ...l })),
  };
  const m = makeBlob(Buffer.from(JSON.stringify(doc)), MediaType.ociManifest);
  const watch = watchOpenFiles();
  const r = await rawRequest(`${sd.url}/v2/lab/app/manifests/v1`, { method: 'PUT', headers: { 'content-type': m.mediaType }, body: m.data });
  const peak = watch.stop();
  t.equal(r.status, 201, ociErrors(r)?.[0]?.message ?? '');
  t.equal(r.headers['docker-content-digest'], m.digest);
  t.comment(`at most ${peak} more files open than before`);
  t.ok(peak < 100, `fewer than 100 more files open at once (${peak})`);
});

/** An OCI index of `n` child manifests (each `{ digest, size, data }`). */
function indexOf(children: Blob[]): Blob {
  const doc = {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: children.map((c, i) => ({ mediaType: MediaType.ociManifest, digest: c.digest, size: c.size, platform: { os: 'linux', architecture: `arch${i}` } })),
  };
  return makeBlob(Buffer.from(JSON.stringify(doc)), MediaType.ociIndex);
}

t.test('pushing into a seeded namespace an index of 2,000 children unknown here asks the upstream at most registry.pushUpstreamChecks times and answers MANIFEST_BLOB_UNKNOWN naming how many', async (t) => {
  const children = Array.from({ length: 2_000 }, (_, i) => manifestWithLayers(`refs/unknown-child/${i}`, 1));
  const index = indexOf(children);
  const fake = await startFake(t, (_req, res) => notFound(res, 'MANIFEST_UNKNOWN'));
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: fake.url } }, defaultUpstream: null });
  const started = Date.now();
  const r = await rawRequest(`${sd.url}/v2/r/manifests/v1?ns=${UP}`, {
    method: 'PUT',
    headers: { 'content-type': index.mediaType },
    body: index.data,
    timeoutMs: 120_000,
  });
  const ms = Date.now() - started;
  t.equal(r.status, 404);
  const e = ociErrors(r)?.[0];
  t.equal(e?.code, 'MANIFEST_BLOB_UNKNOWN');
  t.match(e?.message ?? '', /2000/, 'the message says how many are unknown');
  t.comment(`${fake.requests.length} upstream requests, answered in ${ms} ms`);
  t.ok(fake.requests.length <= 64, `at most 64 upstream requests (default registry.pushUpstreamChecks): ${fake.requests.length}`);
});

t.test('pushing into a seeded namespace an index whose 12 children only the upstream has checks them a few at a time and is accepted', async (t) => {
  const children = Array.from({ length: 12 }, (_, i) => manifestWithLayers(`refs/upstream-child/${i}`, 1));
  const byDigest = new Map(children.map((c) => [c.digest, c]));
  const index = indexOf(children);
  const fake = await startFake(t, async (_req, res, url) => {
    const m = /^\/v2\/r\/manifests\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
    const child = m ? byDigest.get(m[1]!) : undefined;
    if (!child) return notFound(res, 'MANIFEST_UNKNOWN');
    await new Promise((r) => setTimeout(r, 100));
    sendManifest(res, child);
  });
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: fake.url } }, defaultUpstream: null });
  const r = await rawRequest(`${sd.url}/v2/r/manifests/v1?ns=${UP}`, { method: 'PUT', headers: { 'content-type': index.mediaType }, body: index.data });
  t.equal(r.status, 201, ociErrors(r)?.[0]?.message ?? '');
  t.equal(r.headers['docker-content-digest'], index.digest);
  t.ok(fake.maxInFlight > 1, `the children were checked concurrently (${fake.maxInFlight} at once)`);
  t.ok(fake.maxInFlight <= 4, `at most 4 upstream checks at once (${fake.maxInFlight})`);
});
