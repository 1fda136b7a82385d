// skopeo pushes a multi-platform image into a hosted repository of stevedore and copies it back
// out, byte for byte: `skopeo copy --all` of an OCI index (2 platforms) built in memory and pushed
// to a real CNCF distribution first. No upstream is involved in the hosted repository.
import t from 'tap';
import { allBlobs, buildOciIndex, pushImage } from '../fixtures/images.js';
import { rawRequest } from '../fixtures/http-client.js';
import { storeState } from '../fixtures/oci-push.js';
import { startRegistry } from '../fixtures/registry.js';
import { readDirImage, skopeoCopy, skopeoInspectRaw } from '../fixtures/skopeo.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';

t.test('skopeo copy --all into a hosted repository and back out', async (t) => {
  const src = await startRegistry();
  t.teardown(() => src.stop());
  const idx = buildOciIndex('push-skopeo/multi', [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64' },
  ], { layers: 2, layerSize: 300_000 });
  await pushImage(src.url, 'library/multi', 'v1', idx);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: { registry: { hosted: ['lab/**'] } },
  });

  await t.test('skopeo copy --all pushes the index, both platforms and every blob', async (t) => {
    const r = await skopeoCopy(`docker://${src.host}/library/multi:v1`, `docker://${sd.host}/lab/multi:v1`, { extraArgs: ['--all', '--preserve-digests'] });
    t.equal(r.code, 0, r.stderr);
    const raw = await skopeoInspectRaw(`docker://${sd.host}/lab/multi:v1`);
    t.ok(raw.equals(idx.index.data), 'the tag serves the exact index bytes');
    const st = await storeState(sd.storagePath);
    for (const b of allBlobs(idx)) {
      t.ok(st.blobs.includes(b.digest), `${b.digest.slice(0, 19)} stored`);
      t.ok(st.pins.includes(b.digest), `${b.digest.slice(0, 19)} pinned`);
    }
    const pushes = sd.requestLogs().filter((l) => l.method === 'PUT' || l.method === 'POST' || l.method === 'PATCH');
    t.ok(pushes.every((l) => Number(l.status) < 400), `no push request failed (${pushes.filter((l) => Number(l.status) >= 400).map((l) => `${String(l.method)} ${String(l.path)} ${String(l.status)}`).join(', ')})`);
  });

  await t.test('skopeo copy --all back out to dir: is byte-equal to what was built', async (t) => {
    const dir = await tmpDir(t, 'stevedore-skopeo-out-');
    const r = await skopeoCopy(`docker://${sd.host}/lab/multi:v1`, `dir:${dir}`, { extraArgs: ['--all'] });
    t.equal(r.code, 0, r.stderr);
    const out = readDirImage(dir);
    t.ok(out.manifest.equals(idx.index.data), 'index bytes equal');
    for (const img of idx.images) {
      t.ok(out.manifests.get(img.manifest.digest)?.equals(img.manifest.data), `manifest ${img.manifest.digest.slice(0, 19)} equal`);
      for (const b of [img.config, ...img.layers]) t.ok(out.blobs.get(b.digest)?.equals(b.data), `blob ${b.digest.slice(0, 19)} equal`);
    }
  });

  await t.test('the hosted repository is listed by the catalog and its tags list', async (t) => {
    const cat = await rawRequest(`${sd.url}/v2/_catalog`);
    t.same(JSON.parse(cat.body.toString()).repositories, ['lab/multi']);
    const tags = await rawRequest(`${sd.url}/v2/lab/multi/tags/list`);
    t.same(JSON.parse(tags.body.toString()), { name: 'lab/multi', tags: ['v1'] });
  });
});
