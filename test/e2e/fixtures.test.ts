// Self-test of the end-to-end fixtures (test/fixtures/): real registry, real clients.
// Needs root and the Debian packages docker-registry, skopeo, containerd, openssl;
// a missing tool FAILS the test (fixtures' which() throws), it is never skipped.

import path from 'node:path';
import t from 'tap';
import { startContainerd } from '../fixtures/containerd.js';
import {
  allBlobs,
  buildDockerImage,
  buildDockerManifestList,
  buildOciIndex,
  pushImage,
  type BuiltImage,
} from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { readDirImage, skopeoCopy, skopeoInspectRaw } from '../fixtures/skopeo.js';
import { startTokenServer } from '../fixtures/token-server.js';
import { tmpDir } from '../fixtures/util.js';

const amd64 = { os: 'linux', architecture: 'amd64' };
const arm64 = { os: 'linux', architecture: 'arm64' };

function checkImageInDir(tt: Tap, dir: string, img: BuiltImage, what: string): void {
  const got = readDirImage(dir);
  tt.ok(got.manifest.equals(img.manifest.data), `${what}: manifest bytes identical`);
  tt.ok(got.blobs.get(img.config.digest)?.equals(img.config.data), `${what}: config bytes identical`);
  for (const l of img.layers) tt.ok(got.blobs.get(l.digest)?.equals(l.data), `${what}: layer ${l.digest} identical`);
  tt.equal(got.blobs.size, 1 + img.layers.length, `${what}: no extra blobs`);
}

type Tap = Pick<typeof t, 'ok' | 'equal'>;

t.test('anonymous registry: seed, read back with skopeo, pull with ctr', async (t) => {
  // Start containerd while the registry starts and gets seeded.
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  t.match(reg.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.equal(reg.url, `http://${reg.host}`);
  t.not(reg.url, reg.directUrl);

  const docker = buildDockerImage('fixtures-selftest/docker');
  const oci = buildOciIndex('fixtures-selftest/oci', [amd64, arm64]);
  const list = buildDockerManifestList('fixtures-selftest/list', [amd64, arm64]);
  t.equal(buildDockerImage('fixtures-selftest/docker').manifest.digest, docker.manifest.digest, 'deterministic');
  t.not(buildDockerImage('other').manifest.digest, docker.manifest.digest, 'seed changes digests');
  t.equal(JSON.parse(oci.images[1]!.config.data.toString()).architecture, 'arm64', 'platform config');

  await pushImage(reg.url, 'library/docker-img', 'v1', docker);
  await pushImage(reg.url, 'library/oci-idx', 'v1', oci);
  await pushImage(reg.url, 'library/docker-list', 'v1', list);
  t.ok(reg.count('PUT', /\/manifests\/v1$/) === 3, 'pushes went through the counting proxy');
  t.equal(reg.count('PUT', '/v2/library/docker-img/manifests/v1'), 1, 'string pattern matches path');

  await t.test('skopeo reads the Docker v2 image back byte for byte', async (t) => {
    const raw = await skopeoInspectRaw(`docker://${reg.host}/library/docker-img:v1`);
    t.ok(raw.equals(docker.manifest.data), 'inspect --raw is the pushed manifest');
    const dir = path.join(await tmpDir(t), 'img');
    reg.resetCounts();
    const r = await skopeoCopy(`docker://${reg.host}/library/docker-img:v1`, `dir:${dir}`);
    t.equal(r.code, 0, r.stderr);
    checkImageInDir(t, dir, docker, 'docker v2');
    t.equal(reg.count('GET', '/v2/'), 1, 'skopeo pings /v2/');
    t.ok(reg.count('GET', new RegExp(`/blobs/${docker.layers[0]!.digest}$`)) >= 1, 'layer fetched through proxy');
    t.ok(reg.requests.every((q) => !q.path.includes('ns=')), 'skopeo sends no ns');
  });

  await t.test('skopeo reads the OCI index (amd64+arm64) back with --all', async (t) => {
    const dir = path.join(await tmpDir(t), 'idx');
    const r = await skopeoCopy(`docker://${reg.host}/library/oci-idx:v1`, `dir:${dir}`, {
      extraArgs: ['--all', '--preserve-digests'],
    });
    t.equal(r.code, 0, r.stderr);
    const got = readDirImage(dir);
    t.ok(got.manifest.equals(oci.index.data), 'index bytes identical');
    for (const img of oci.images) {
      t.ok(got.manifests.get(img.manifest.digest)?.equals(img.manifest.data), 'instance manifest identical');
      t.ok(got.blobs.get(img.config.digest)?.equals(img.config.data), 'instance config identical');
      for (const l of img.layers) t.ok(got.blobs.get(l.digest)?.equals(l.data), 'instance layer identical');
    }
    t.equal(got.blobs.size, allBlobs(oci).length - 3, 'every blob, nothing else');
  });

  await t.test('skopeo reads each platform of the Docker manifest list', async (t) => {
    const raw = await skopeoInspectRaw(`docker://${reg.host}/library/docker-list:v1`);
    t.ok(raw.equals(list.index.data), 'manifest list bytes identical');
    for (const [i, arch] of ['amd64', 'arm64'].entries()) {
      const dir = path.join(await tmpDir(t), arch);
      const r = await skopeoCopy(`docker://${reg.host}/library/docker-list:v1`, `dir:${dir}`, {
        extraArgs: ['--override-os', 'linux', '--override-arch', arch],
      });
      t.equal(r.code, 0, r.stderr);
      checkImageInDir(t, dir, list.images[i]!, `manifest list ${arch}`);
    }
  });

  // What ctr 1.6.20 sent to the mirror (the counting proxy) in this subtest, tag = manifest list:
  //   HEAD /v2/library/docker-list/manifests/v1?ns=docker.io                     -> 200
  //   GET  /v2/library/docker-list/manifests/sha256:<list digest>?ns=docker.io   -> 200
  //   GET  /v2/library/docker-list/manifests/sha256:<amd64 digest>?ns=docker.io  -> 200
  //   GET  /v2/library/docker-list/blobs/sha256:<config|layer|layer>?ns=docker.io -> 200 (parallel, any order)
  // No /v2/ ping, ns=docker.io everywhere; a missing tag: one HEAD -> 404, nothing more.
  // Details (headers) in test/fixtures/containerd.ts.
  await t.test('ctr pulls docker.io/library/... through a hosts.toml mirror', async (t) => {
    const ctrd = await ctrdP;
    const hostsDir = ctrd.writeHostsToml('docker.io', reg.url);
    reg.resetCounts();
    const r = await ctrd.pull('docker.io/library/docker-list:v1', { hostsDir });
    t.equal(r.code, 0, `ctr pull: ${r.stderr}`);
    t.equal(await ctrd.imageDigest('docker.io/library/docker-list:v1'), list.index.digest, 'image digest');
    const content = await ctrd.contentDigests();
    const amd = list.images[0]!;
    for (const b of [list.index, amd.manifest, amd.config, ...amd.layers]) t.ok(content.includes(b.digest), `has ${b.digest}`);
    t.notOk(content.includes(list.images[1]!.layers[0]!.digest), 'arm64 layers not fetched');

    const seen = reg.requests.map((q) => `${q.method} ${q.path} -> ${q.status}`);
    t.comment(`ctr requests:\n${seen.join('\n')}`);
    t.ok(reg.requests.every((q) => q.path.endsWith('?ns=docker.io')), 'every request carries ns=docker.io');
    t.equal(reg.count('GET', '/v2/'), 0, 'no /v2/ ping');
    t.equal(reg.count('HEAD', '/v2/library/docker-list/manifests/v1'), 1, 'HEAD by tag');
    t.equal(reg.count('GET', `/v2/library/docker-list/manifests/${list.index.digest}`), 1, 'GET list by digest');
    t.equal(reg.count('GET', `/v2/library/docker-list/manifests/${amd.manifest.digest}`), 1, 'GET amd64 manifest');
    t.equal(reg.count('GET', /\/blobs\//), 1 + amd.layers.length, 'config + layers');
    const head = reg.requests.find((q) => q.method === 'HEAD');
    t.comment(`ctr HEAD headers: ${JSON.stringify(head?.headers)}`);
    const blobGet = reg.requests.find((q) => q.method === 'GET' && q.path.includes('/blobs/'));
    t.comment(`ctr blob GET headers: ${JSON.stringify(blobGet?.headers)}`);

    // removeImage garbage-collects: a second pull fetches everything again.
    await ctrd.removeImage('docker.io/library/docker-list:v1');
    t.equal(await ctrd.imageDigest('docker.io/library/docker-list:v1'), null, 'image removed');
    t.same(await ctrd.contentDigests(), [], 'content GCed');

    // A tag the mirror does not have: 404, then ctr falls back to `server` (a closed loopback port).
    reg.resetCounts();
    const missing = await ctrd.pull('docker.io/library/docker-list:nope', { hostsDir, timeoutMs: 30_000 });
    t.not(missing.code, 0, 'pull of a missing tag fails');
    t.comment(`ctr requests for a missing tag: ${reg.requests.map((q) => `${q.method} ${q.path} -> ${q.status}`).join(', ')}`);
    t.match(missing.stderr, /127\.0\.0\.1:1\b/, 'fell back to the loopback server, nowhere else');

    // A dead mirror makes the pull fail.
    await reg.stop();
    const failed = await ctrd.pull('docker.io/library/docker-list:v1', { hostsDir, timeoutMs: 30_000 });
    t.not(failed.code, 0, 'pull fails once the mirror is gone');
    t.comment(`ctr stderr with the mirror gone: ${failed.stderr.trim()}`);
    await t.rejects(fetch(reg.url), 'connections to url are refused after stop');
  });
});

t.test('token-auth registry (Docker Hub style Bearer flow)', async (t) => {
  const tokens = await startTokenServer({ users: { alice: 'secret' } });
  t.teardown(() => tokens.stop());
  const reg = await startRegistry({ token: tokens });
  t.teardown(() => reg.stop());

  const ping = await fetch(`${reg.url}/v2/`);
  await ping.arrayBuffer();
  t.equal(ping.status, 401, 'registry challenges');
  t.match(ping.headers.get('www-authenticate') ?? '', `Bearer realm="${tokens.url}",service="${tokens.service}"`);

  const img = buildDockerImage('fixtures-selftest/token', { layers: 1 });
  await pushImage(reg.url, 'library/private', 'v1', img, { token: tokens });
  t.ok(
    tokens.requests.some((q) => q.scope === 'repository:library/private:pull,push'),
    'push fetched a pull,push token',
  );

  // bad credentials are refused by the token server; anonymous still gets pull tokens
  const bad = await fetch(`${tokens.url}?service=${tokens.service}&scope=repository:library/private:pull`, {
    headers: { authorization: `Basic ${Buffer.from('alice:wrong').toString('base64')}` },
  });
  await bad.arrayBuffer();
  t.equal(bad.status, 401, 'wrong password -> 401');

  tokens.resetCounts();
  const dir = path.join(await tmpDir(t), 'img');
  const r = await skopeoCopy(`docker://${reg.host}/library/private:v1`, `dir:${dir}`);
  t.equal(r.code, 0, r.stderr);
  checkImageInDir(t, dir, img, 'token registry');
  t.ok(tokens.requests.length >= 1, 'skopeo asked the token server');
  t.ok(
    tokens.requests.some((q) => q.scope === 'repository:library/private:pull' && q.service === tokens.service),
    'anonymous pull token requested',
  );
  t.ok(reg.requests.some((q) => q.status === 401), 'registry answered 401 before the token');
  t.ok(
    reg.requests.some((q) => q.status === 200 && /^Bearer /.test(String(q.headers.authorization))),
    'then accepted the Bearer token',
  );

  // with credentials
  tokens.resetCounts();
  const dir2 = path.join(await tmpDir(t), 'img2');
  const r2 = await skopeoCopy(`docker://${reg.host}/library/private:v1`, `dir:${dir2}`, { creds: 'alice:secret' });
  t.equal(r2.code, 0, r2.stderr);
  t.ok(tokens.requests.some((q) => q.user === 'alice'), 'token request authenticated as alice');
});
