// podman pulls docker.io images through stevedore configured as a path-prefix mirror in
// registries.conf (config/podman/registries.conf, verbatim but for the address): podman sends no ns; the path names the upstream.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { preparePodman } from '../fixtures/podman.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore } from '../fixtures/stevedore.js';

t.test('podman through a registries.conf path-prefix mirror', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('pull-podman/app', { layers: 2 });
  await pushImage(reg.directUrl, 'library/app', '1.0', img);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } } });
  // config/podman/registries.conf as users copy it, with the mirror's address filled in.
  const example = readFileSync(new URL('../../config/podman/registries.conf', import.meta.url), 'utf8');
  const pm = await preparePodman(t, { registriesConf: example.replaceAll('stevedore.example:5000', sd.host) });

  reg.resetCounts();
  const r = await pm.pull('docker.io/library/app:1.0');
  t.equal(r.code, 0, r.stderr);
  t.equal(await pm.imageDigest('docker.io/library/app:1.0'), img.manifest.digest, 'the image podman stored is the upstream manifest');
  const paths = sd.requestLogs().map((l) => String(l.path));
  t.ok(paths.includes('/v2/'), 'podman pinged /v2/');
  t.ok(paths.some((p) => p === '/v2/docker.io/library/app/manifests/1.0'), 'by tag, with the docker.io path prefix and no ns');
  for (const b of [img.config, ...img.layers]) t.equal(reg.count('GET', `/v2/library/app/blobs/${b.digest}`), 1, 'each blob fetched upstream once');
});
