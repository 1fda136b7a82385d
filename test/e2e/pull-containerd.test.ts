// containerd (ctr 1.6) pulls docker.io images through stevedore configured as its hosts.toml
// mirror. ctr sends `?ns=docker.io` on every request and no /v2/ ping; the mirror's answer is the
// only way the pull can succeed here (the fallback `server` is a closed loopback port).
import t from 'tap';
import { startContainerd } from '../fixtures/containerd.js';
import { buildDockerImage, buildOciIndex, pushImage } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore } from '../fixtures/stevedore.js';

const amd64 = { os: 'linux', architecture: 'amd64' };
const arm64 = { os: 'linux', architecture: 'arm64' };

t.test('containerd through stevedore', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('pull-containerd/docker', { layers: 3 });
  const idx = buildOciIndex('pull-containerd/oci', [amd64, arm64]);
  await pushImage(reg.url, 'library/web', '1.0', img);
  await pushImage(reg.url, 'library/multi', '2.0', idx);

  // docker.io is the upstream's name here, pointed at the local registry.
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } } });
  const ctrd = await ctrdP;
  const hostsDir = ctrd.writeHostsToml('docker.io', sd.url);

  await t.test('a cold pull of a Docker v2 image succeeds and fetches each blob once', async (t) => {
    reg.resetCounts();
    const r = await ctrd.pull('docker.io/library/web:1.0', { hostsDir });
    t.equal(r.code, 0, r.stderr);
    t.equal(await ctrd.imageDigest('docker.io/library/web:1.0'), img.manifest.digest, 'image digest is the upstream manifest digest');
    const content = await ctrd.contentDigests();
    for (const b of [img.manifest, img.config, ...img.layers]) t.ok(content.includes(b.digest), `containerd has ${b.digest.slice(0, 19)}`);
    for (const b of [img.config, ...img.layers]) {
      t.equal(reg.count('GET', `/v2/library/web/blobs/${b.digest}`), 1, `upstream served ${b.digest.slice(0, 19)} once`);
    }
    const seen = sd.requestLogs().map((l) => String(l.path));
    t.ok(seen.every((p) => p.includes('ns=docker.io')), 'every request containerd sent carried ns=docker.io');
    t.notOk(seen.includes('/v2/'), 'containerd sent no /v2/ ping');
  });

  await t.test('the mirror echoes ns as OCI-Namespace and answers HEAD with digest and length', async (t) => {
    const res = await fetch(`${sd.url}/v2/library/web/manifests/1.0?ns=docker.io`, { method: 'HEAD' });
    t.equal(res.status, 200);
    t.equal(res.headers.get('oci-namespace'), 'docker.io');
    t.equal(res.headers.get('docker-content-digest'), img.manifest.digest);
    t.equal(res.headers.get('content-length'), String(img.manifest.size));
  });

  await t.test('a second pull after removing the image fetches nothing from the upstream', async (t) => {
    await ctrd.removeImage('docker.io/library/web:1.0');
    t.same(await ctrd.contentDigests(), [], 'containerd forgot every blob');
    reg.resetCounts();
    const r = await ctrd.pull('docker.io/library/web:1.0', { hostsDir });
    t.equal(r.code, 0, r.stderr);
    t.equal(await ctrd.imageDigest('docker.io/library/web:1.0'), img.manifest.digest);
    t.equal(reg.count('*', /.*/), 0, 'zero upstream requests');
  });

  await t.test('an OCI index pulls the host platform only, through the mirror', async (t) => {
    reg.resetCounts();
    const r = await ctrd.pull('docker.io/library/multi:2.0', { hostsDir });
    t.equal(r.code, 0, r.stderr);
    t.equal(await ctrd.imageDigest('docker.io/library/multi:2.0'), idx.index.digest, 'image is the whole index');
    const amd = idx.images[0]!;
    for (const b of [amd.config, ...amd.layers]) t.equal(reg.count('GET', `/v2/library/multi/blobs/${b.digest}`), 1);
    t.equal(reg.count('GET', /\/blobs\//), 1 + amd.layers.length, 'no arm64 blob fetched');
    const stored = await fetch(`${sd.url}/v2/library/multi/manifests/${idx.index.digest}?ns=docker.io`);
    t.ok(Buffer.from(await stored.arrayBuffer()).equals(idx.index.data), 'the stored index is whole, both platforms');
  });

  await t.test('with the upstream stopped, pulls by digest and by fresh tag still succeed', async (t) => {
    await ctrd.removeImage('docker.io/library/web:1.0');
    await ctrd.removeImage('docker.io/library/multi:2.0');
    await reg.stop();
    const byDigest = await ctrd.pull(`docker.io/library/web@${img.manifest.digest}`, { hostsDir });
    t.equal(byDigest.code, 0, byDigest.stderr);
    const byTag = await ctrd.pull('docker.io/library/multi:2.0', { hostsDir });
    t.equal(byTag.code, 0, byTag.stderr);
    t.equal(await ctrd.imageDigest('docker.io/library/multi:2.0'), idx.index.digest);
  });

  await t.test('a tag never pulled fails cleanly with the upstream gone', async (t) => {
    const r = await ctrd.pull('docker.io/library/web:never', { hostsDir, timeoutMs: 30_000 });
    t.not(r.code, 0, 'pull fails');
    const line = sd.requestLogs().find((l) => String(l.path).includes('/manifests/never'));
    t.ok(line, 'the mirror was asked');
    t.equal(line?.status, 502, 'answered 502: upstream unreachable');
    t.match(line?.error, { code: 'UPSTREAM_UNAVAILABLE', message: /docker\.io/ }, 'the error names the upstream');
  });
});
