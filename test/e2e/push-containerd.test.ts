// containerd's `ctr images push` as a push client: an image pulled through stevedore (proxied) is
// tagged and pushed back into a hosted repository and into the docker.io namespace (seeding), and
// what stevedore then serves is byte for byte what was pulled.
import t from 'tap';
import { startContainerd } from '../fixtures/containerd.js';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { rawRequest } from '../fixtures/http-client.js';
import { putManifest, storeState } from '../fixtures/oci-push.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore } from '../fixtures/stevedore.js';

t.test('ctr images push into stevedore', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('push-containerd/app', { layers: 2 });
  await pushImage(reg.url, 'library/app', 'v1', img);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { registry: { hosted: ['lab/**'] } } });
  const ctrd = await ctrdP;
  const hostsDir = ctrd.writeHostsToml('docker.io', sd.url);
  const pulled = await ctrd.pull('docker.io/library/app:v1', { hostsDir });
  t.equal(pulled.code, 0, pulled.stderr);

  await t.test('a tag pushed where the image was only pulled (cached) pins that content', async (t) => {
    const before = await storeState(sd.storagePath);
    for (const b of [img.config, ...img.layers]) t.notOk(before.pins.includes(b.digest), `${b.digest.slice(0, 19)} cached, not pinned`);
    const r = await putManifest(sd.url, 'docker.io/library/app', 'seeded', img.manifest.data, img.manifest.mediaType);
    t.equal(r.status, 201, r.body.toString());
    const after = await storeState(sd.storagePath);
    for (const b of [img.manifest, img.config, ...img.layers]) t.ok(after.pins.includes(b.digest), `${b.digest.slice(0, 19)} pinned`);
  });

  for (const [what, name] of [
    ['a hosted repository', 'lab/app'],
    ['the docker.io namespace (seeding)', 'docker.io/library/pushed'],
  ] as const) {
    await t.test(`ctr push into ${what} stores the exact image, pinned`, async (t) => {
      const ref = `${sd.host}/${name}:v1`;
      const tagged = await ctrd.ctr(['images', 'tag', 'docker.io/library/app:v1', ref]);
      t.equal(tagged.code, 0, tagged.stderr);
      const pushed = await ctrd.ctr(['images', 'push', '--plain-http', ref]);
      t.equal(pushed.code, 0, pushed.stderr);
      const m = await rawRequest(`${sd.url}/v2/${name}/manifests/v1`, { headers: { accept: img.manifest.mediaType } });
      t.equal(m.status, 200, m.body.toString());
      t.ok(m.body.equals(img.manifest.data), 'the manifest bytes');
      for (const b of img.layers) {
        const r = await rawRequest(`${sd.url}/v2/${name}/blobs/${b.digest}`);
        t.ok(r.body.equals(b.data), `layer ${b.digest.slice(0, 19)}`);
      }
      const st = await storeState(sd.storagePath);
      for (const b of [img.manifest, img.config, ...img.layers]) t.ok(st.pins.includes(b.digest), `${b.digest.slice(0, 19)} pinned`);
    });
  }
});
