// podman as a push client: an image podman pulled through stevedore (proxied docker.io) is pushed
// into a hosted repository (podman recompresses layers, so new blobs travel: streamed PATCHes and
// PUTs), then pulled back from there by podman; every blob stevedore serves matches its digest.
import { createHash } from 'node:crypto';
import t from 'tap';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { rawRequest } from '../fixtures/http-client.js';
import { preparePodman } from '../fixtures/podman.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore } from '../fixtures/stevedore.js';

t.test('podman push into a hosted repository, and pull back', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('push-podman/app', { layers: 2 });
  await pushImage(reg.url, 'library/app', 'v1', img);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { registry: { hosted: ['lab/**'] } } });
  const pm = await preparePodman(t, {
    mirrors: { 'docker.io': `${sd.host}/docker.io` },
    registriesConf: `\n[[registry]]\nlocation = "${sd.host}"\ninsecure = true\n`,
  });
  const pulled = await pm.pull('docker.io/library/app:v1');
  t.equal(pulled.code, 0, pulled.stderr);

  await t.test('podman push succeeds and every pushed blob is served with its digest', async (t) => {
    const r = await pm.push('docker.io/library/app:v1', `${sd.host}/lab/app:v1`);
    t.equal(r.code, 0, r.stderr);
    const m = await rawRequest(`${sd.url}/v2/lab/app/manifests/v1`, { headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' } });
    t.equal(m.status, 200);
    const manifest = JSON.parse(m.body.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> };
    t.equal(manifest.layers.length, img.layers.length, 'as many layers as the image');
    for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
      const b = await rawRequest(`${sd.url}/v2/lab/app/blobs/${d}`);
      t.equal(b.status, 200);
      t.equal(`sha256:${createHash('sha256').update(b.body).digest('hex')}`, d, `${d.slice(0, 19)} verifies`);
    }
    const methods = new Set(sd.requestLogs().filter((l) => String(l.path).includes('/lab/app/')).map((l) => String(l.method)));
    t.ok(methods.has('PUT') && methods.has('POST'), 'podman used upload sessions');
  });

  await t.test('podman pulls the pushed image back from the hosted repository', async (t) => {
    const r = await pm.pull(`${sd.host}/lab/app:v1`);
    t.equal(r.code, 0, r.stderr);
    const served = sd.requestLogs().filter((l) => l.method === 'GET' && /^\/v2\/lab\/app\/manifests\//.test(String(l.path)));
    t.ok(served.length > 0 && served.every((l) => l.status === 200), 'podman read the manifest from the hosted repository');
  });
});
