// Seeding the mirror for air-gapped use: `skopeo sync` pushes several images into stevedore's
// docker.io namespace (/v2/docker.io/library/...). That content is pinned: eviction pressure from
// cached pulls never removes it. Then, with the docker.io upstream unreachable (a closed port), or
// with offline: true, containerd pulls the seeded images through stevedore as its mirror.
import path from 'node:path';
import t from 'tap';
import { startContainerd } from '../fixtures/containerd.js';
import { allBlobs, buildDockerImage, buildOciImage, buildOciIndex, pushImage, type BuiltImage, type BuiltIndex } from '../fixtures/images.js';
import { rawRequest } from '../fixtures/http-client.js';
import { storeState } from '../fixtures/oci-push.js';
import { startRegistry } from '../fixtures/registry.js';
import { skopeoCopy, skopeoSync } from '../fixtures/skopeo.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';

const amd64 = { os: 'linux', architecture: 'amd64' };
const arm64 = { os: 'linux', architecture: 'arm64' };
const CLOSED = 'http://127.0.0.1:1';

t.test('seeding the docker.io namespace with skopeo sync, then pulling air-gapped', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  // The source the lab is filled from, and docker.io's stand-in (with unrelated content only).
  const src = await startRegistry();
  t.teardown(() => src.stop());
  const up = await startRegistry();
  t.teardown(() => up.stop());
  const seeds: Array<{ repo: string; tag: string; img: BuiltImage | BuiltIndex }> = [
    { repo: 'seed-web', tag: 'v1', img: buildDockerImage('seed/web', { layers: 3 }) },
    { repo: 'seed-tool', tag: 'v1', img: buildOciImage('seed/tool/1', { layers: 1 }) },
    { repo: 'seed-tool', tag: 'v2', img: buildOciImage('seed/tool/2', { layers: 2 }) },
    { repo: 'seed-multi', tag: '1.0', img: buildOciIndex('seed/multi', [amd64, arm64]) },
  ];
  for (const s of seeds) await pushImage(src.url, `library/${s.repo}`, s.tag, s.img);
  // An image docker.io already has: a seeding push skips its blobs (the upstream's HEAD says 200).
  const shared = buildDockerImage('seed/shared', { layers: 2 });
  await pushImage(src.url, 'library/seed-shared', 'v1', shared);
  await pushImage(up.url, 'library/seed-shared', 'v1', shared);
  const fillers = [1, 2, 3, 4].map((i) => buildOciImage(`seed/filler/${i}`, { layers: 2, layerSize: 100_000 }));
  for (const [i, f] of fillers.entries()) await pushImage(up.url, `library/filler-${i}`, 'v1', f);
  up.resetCounts();
  const seededDigests = [...new Set(seeds.flatMap((s) => allBlobs(s.img).map((b) => b.digest)))];

  const storagePath = path.join(await tmpDir(t, 'stevedore-seed-'), 'data');
  const storage = { path: storagePath, maxSize: '250KiB' };

  await t.test('skopeo sync pushes every tag of several repositories into /v2/docker.io/library/...', async (t) => {
    const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: up.url } }, storagePath, config: { storage } });
    for (const repo of ['seed-web', 'seed-tool', 'seed-multi']) {
      const r = await skopeoSync(`${src.host}/library/${repo}`, `${sd.host}/docker.io/library`, { extraArgs: ['--all', '--preserve-digests'] });
      t.equal(r.code, 0, r.stderr);
    }
    const st = await storeState(storagePath);
    for (const d of seededDigests) {
      t.ok(st.blobs.includes(d) && st.pins.includes(d), `${d.slice(0, 19)} stored and pinned`);
    }
    t.ok(st.repositories.includes('docker.io/library/seed-tool/_tags/v2'), 'tags are recorded where pulls look for them');
    t.same(up.requests.filter((q) => q.method !== 'HEAD' && q.method !== 'GET').map((q) => `${q.method} ${q.path}`), [], 'nothing was written upstream');
    const cat = await rawRequest(`${sd.url}/v2/_catalog`);
    t.same(JSON.parse(cat.body.toString()).repositories, ['docker.io/library/seed-multi', 'docker.io/library/seed-tool', 'docker.io/library/seed-web'], 'the catalog names them as pullable');
    await sd.stop();
  });

  await t.test('blobs a seeding push skipped because the upstream has them are fetched and pinned', async (t) => {
    const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: up.url } }, storagePath, config: { storage } });
    const r = await skopeoCopy(`docker://${src.host}/library/seed-shared:v1`, `docker://${sd.host}/docker.io/library/seed-shared:v1`);
    t.equal(r.code, 0, r.stderr);
    const uploads = sd.requestLogs().filter((l) => l.method === 'POST' || l.method === 'PATCH');
    t.equal(uploads.length, 0, 'skopeo uploaded no blob: the upstream had them all');
    const want = [shared.manifest, shared.config, ...shared.layers].map((b) => b.digest);
    for (let i = 0; i < 50; i++) {
      const st = await storeState(storagePath);
      if (want.every((d) => st.blobs.includes(d) && st.pins.includes(d))) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const st = await storeState(storagePath);
    for (const d of want) t.ok(st.blobs.includes(d) && st.pins.includes(d), `${d.slice(0, 19)} fetched and pinned`);
    seeds.push({ repo: 'seed-shared', tag: 'v1', img: shared });
    seededDigests.push(...want);
    await sd.stop();
  });

  await t.test('eviction pressure from cached pulls removes cached content but no seeded content', async (t) => {
    const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: up.url } }, storagePath, config: { storage } });
    const out = await tmpDir(t, 'stevedore-seed-out-');
    for (const i of fillers.keys()) {
      const r = await skopeoCopy(`docker://${sd.host}/docker.io/library/filler-${i}:v1`, `dir:${path.join(out, String(i))}`);
      t.equal(r.code, 0, r.stderr);
    }
    await new Promise((r) => setTimeout(r, 300));
    const st = await storeState(storagePath);
    const fillerLayers = fillers.flatMap((f) => f.layers.map((l) => l.digest));
    t.ok(fillerLayers.some((d) => !st.blobs.includes(d)), 'some cached layers were evicted (800 KB pulled into 250 KiB)');
    for (const d of seededDigests) t.ok(st.blobs.includes(d), `seeded ${d.slice(0, 19)} is still there`);
    await sd.stop();
  });

  await t.test('containerd pulls every seeded image through stevedore with the upstream unreachable', async (t) => {
    await up.stop();
    const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: CLOSED } }, storagePath, config: { storage } });
    // Seeding works air-gapped too: one more image, pushed while the upstream is unreachable.
    const late = buildDockerImage('seed/late', { layers: 2 });
    await pushImage(src.url, 'library/seed-late', 'v1', late);
    const copied = await skopeoCopy(`docker://${src.host}/library/seed-late:v1`, `docker://${sd.host}/docker.io/library/seed-late:v1`);
    t.equal(copied.code, 0, copied.stderr);
    seeds.push({ repo: 'seed-late', tag: 'v1', img: late });
    const ctrd = await ctrdP;
    const hostsDir = ctrd.writeHostsToml('docker.io', sd.url);
    for (const s of seeds) {
      const ref = `docker.io/library/${s.repo}:${s.tag}`;
      const r = await ctrd.pull(ref, { hostsDir });
      t.equal(r.code, 0, `${ref}: ${r.stderr}`);
      const top = 'index' in s.img ? s.img.index : s.img.manifest;
      t.equal(await ctrd.imageDigest(ref), top.digest, `${ref} is the seeded image`);
    }
    const manifestAnswers = sd.requestLogs().filter((l) => String(l.path).includes('ns=docker.io') && /\/manifests\/(v1|v2|1\.0)\?/.test(String(l.path)));
    t.ok(manifestAnswers.length > 0 && manifestAnswers.every((l) => l.status === 200 && l.cache === 'stale'), 'tags were answered from the store, marked stale');
  });

  await t.test('with the upstream unreachable, tags/list of a seeded repository lists the seeded tags', async (t) => {
    const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: CLOSED } }, storagePath, config: { storage } });
    const r = await rawRequest(`${sd.url}/v2/docker.io/library/seed-tool/tags/list`);
    t.equal(r.status, 200, r.body.toString());
    t.same(JSON.parse(r.body.toString()), { name: 'docker.io/library/seed-tool', tags: ['v1', 'v2'] });
    t.match(String(r.headers.warning), /^110/, 'marked stale');
  });

  await t.test('with offline: true the seeded tags are served as they are', async (t) => {
    const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: CLOSED } }, storagePath, config: { storage, offline: true } });
    const web = seeds[0]!.img as BuiltImage;
    const r = await rawRequest(`${sd.url}/v2/library/seed-web/manifests/v1?ns=docker.io`, { headers: { accept: web.manifest.mediaType } });
    t.equal(r.status, 200);
    t.ok(r.body.equals(web.manifest.data));
    t.equal(r.headers['x-cache'], 'hit');
    const blob = await rawRequest(`${sd.url}/v2/docker.io/library/seed-web/blobs/${web.layers[2]!.digest}`);
    t.ok(blob.body.equals(web.layers[2]!.data), 'a seeded layer, by path prefix');
  });
});
