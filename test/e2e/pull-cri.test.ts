// The kubelet's pull path, for real: containerd (1.6) with its CRI plugin enabled, its
// `registry.config_path` a directory of hosts.toml written by `writeHostsTomls` (what
// `stevedore containerd-config` writes) naming a stevedore process as docker.io's mirror, and a CRI
// client calling runtime.v1.ImageService/PullImage over containerd's socket exactly as the kubelet
// does. stevedore serves plain HTTP in front of a real registry (CNCF distribution); the hosts.toml
// `server` is a closed loopback port, so a pull that succeeds was served by stevedore and nothing
// leaves 127.0.0.1.
//
// `_default/hosts.toml` (what `containerd-config --containerd-version 2` adds) is read for a registry
// with no directory of its own; it has no `server`, so containerd falls back to the image's own
// registry. To keep that fallback on this machine too, those registries are named after closed
// loopback ports (127.0.0.1:1, 127.0.0.1:2), and stevedore has an upstream for the first only.
//
// HTTPS: `writeCriHostsToml(..., { ca })` writes `ca = "FILE"` under the host; a test with stevedore
// on TLS behind a generated CA goes here once that fixture exists.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { SAFE_FALLBACK_SERVER, startContainerd } from '../fixtures/containerd.js';
import { writeHostsTomls } from '../../lib/cli/containerd-config.js';
import { criImageClient } from '../fixtures/cri-client.js';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { logsSettled, spawnStevedore, type StevedoreProcess } from '../fixtures/stevedore-process.js';
import { tmpDir } from '../fixtures/util.js';
import { makeCertificates } from '../fixtures/tls.js';

/** stevedore's access-log lines for `method` on `urlPath` (query ignored). */
function served(p: StevedoreProcess, method: string, urlPath: string): Array<Record<string, unknown>> {
  return p.logs.filter((l) => l.msg === 'request' && l.method === method && String(l.path).split('?')[0] === urlPath);
}

/** The `ns` query parameter of a logged request path. */
const nsOf = (line: Record<string, unknown> | undefined): string | null => new URLSearchParams(String(line?.path).split('?')[1] ?? '').get('ns');

/** A registry with no hosts.toml directory of its own, that stevedore has an upstream for; nothing listens on it. */
const OTHER = '127.0.0.1:1';
/** A registry with no directory of its own that stevedore has no upstream for; nothing listens on it. */
const UNKNOWN = '127.0.0.1:2';

// What the kubelet puts in a PullImage for a pod's container.
const SANDBOX = {
  metadata: { name: 'app-7d4b9c-xk2p', uid: '5f0c1f8e-0000-4000-8000-000000000001', namespace: 'default', attempt: 0 },
  labels: { app: 'app' },
  annotations: { 'kubernetes.io/config.source': 'api' },
};

t.test('the CRI plugin (the kubelet path) pulls images through stevedore', async (t) => {
  const ctrdP = startContainerd({ cri: true });
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const app = buildDockerImage('pull-cri/app', { layers: 2 });
  const tool = buildDockerImage('pull-cri/tool', { layers: 1 });
  await pushImage(reg.directUrl, 'library/app', 'v1', app);
  await pushImage(reg.directUrl, 'team/tool', 'v1', tool);

  const work = await tmpDir(t, 'stevedore-cri-');
  const sd = await spawnStevedore(t, {
    storage: { path: path.join(work, 'store') },
    defaultUpstream: 'docker.io',
    upstreams: { 'docker.io': { url: reg.url }, [OTHER]: { url: reg.url } },
  });
  const ctrd = await ctrdP;
  const files = await ctrd.writeCriHostsToml(['docker.io'], sd.url, { includeDefault: true });
  t.same(files, [path.join(ctrd.criHostsDir!, 'docker.io', 'hosts.toml'), path.join(ctrd.criHostsDir!, '_default', 'hosts.toml')]);
  const cri = criImageClient(ctrd.address);
  t.teardown(() => cri.close());

  await t.test('PullImage returns the image, ImageStatus shows the upstream digest, stevedore served every request with ns=docker.io', async (t) => {
    t.same((await cri.imageStatus('docker.io/library/app:v1')).image, null, 'not on the node before the pull');
    reg.resetCounts();
    const pulled = await cri.pullImage('docker.io/library/app:v1', { sandboxConfig: SANDBOX });
    // containerd's CRI answers with the image id: the config blob's digest.
    t.equal(pulled.image_ref, app.config.digest, 'PullImage returns the image id (the config digest)');

    const { image } = await cri.imageStatus('docker.io/library/app:v1');
    t.ok(image, 'ImageStatus finds the image');
    t.equal(image?.id, app.config.digest);
    t.same(image?.repo_tags, ['docker.io/library/app:v1']);
    t.same(image?.repo_digests, [`docker.io/library/app@${app.manifest.digest}`], 'repo digest is the upstream manifest digest');
    const listed = (await cri.listImages()).images.find((i) => i.id === app.config.digest);
    t.ok(listed, 'ListImages lists it');

    await logsSettled(sd);
    const tagHead = served(sd, 'HEAD', '/v2/library/app/manifests/v1');
    t.same(tagHead.map((l) => l.status), [200], 'stevedore resolved the tag once');
    t.match(tagHead[0]?.path, /[?&]ns=docker\.io(&|$)/);
    const manifestGet = served(sd, 'GET', `/v2/library/app/manifests/${app.manifest.digest}`);
    t.same(manifestGet.map((l) => l.status), [200], 'stevedore served the manifest by digest');
    t.match(manifestGet[0]?.path, /[?&]ns=docker\.io(&|$)/);
    for (const b of [app.config, ...app.layers]) {
      const lines = served(sd, 'GET', `/v2/library/app/blobs/${b.digest}`);
      t.same(lines.map((l) => l.status), [200], `stevedore served ${b.digest.slice(0, 19)} once`);
      t.match(lines[0]?.path, /[?&]ns=docker\.io(&|$)/, 'asked with ns=docker.io');
      t.equal(reg.count('GET', `/v2/library/app/blobs/${b.digest}`), 1, 'fetched from the registry once');
    }
    const requests = sd.logs.filter((l) => l.msg === 'request');
    t.ok(requests.every((l) => /[?&]ns=docker\.io(&|$)/.test(String(l.path))), 'every request containerd sent carried ns=docker.io');
    t.notOk(requests.some((l) => String(l.path).split('?')[0] === '/v2/'), 'no /v2/ ping');
  });

  await t.test('RemoveImage removes it; a second PullImage is served from stevedore\'s store', async (t) => {
    await cri.removeImage('docker.io/library/app:v1');
    t.same((await cri.imageStatus('docker.io/library/app:v1')).image, null, 'gone from the node');
    reg.resetCounts();
    const pulled = await cri.pullImage('docker.io/library/app:v1', { sandboxConfig: SANDBOX });
    t.equal(pulled.image_ref, app.config.digest);
    t.same((await cri.imageStatus('docker.io/library/app:v1')).image?.repo_digests, [`docker.io/library/app@${app.manifest.digest}`]);
    await logsSettled(sd);
    for (const b of [app.config, ...app.layers]) {
      const lines = served(sd, 'GET', `/v2/library/app/blobs/${b.digest}`);
      t.same(lines.map((l) => [l.status, l.cache]), [[200, 'miss'], [200, 'hit']], `containerd fetched ${b.digest.slice(0, 19)} again, from stevedore's store`);
    }
    t.equal(reg.count('GET', /\/blobs\//), 0, 'no blob fetched from the registry again');
  });

  // containerd treats the mirror's 404 as "try the next host", then `server` (the closed port), and
  // reports that last error: "failed to resolve reference ...: connect: connection refused".
  await t.test('an image that does not exist: PullImage fails, and stevedore answered its tag with 404', async (t) => {
    const err = await cri.pullImage('docker.io/library/absent:v1', { sandboxConfig: SANDBOX, timeoutMs: 60_000 }).then(
      () => null,
      (e: unknown) => e as { code?: number; details?: string },
    );
    t.ok(err, 'PullImage failed');
    t.match(err?.details, /docker\.io\/library\/absent:v1/, `containerd names the image: ${err?.details}`);
    t.same((await cri.imageStatus('docker.io/library/absent:v1')).image, null, 'nothing on the node');
    await logsSettled(sd);
    const tagLines = served(sd, 'HEAD', '/v2/library/absent/manifests/v1');
    t.ok(tagLines.length >= 1, 'stevedore was asked for the tag');
    t.ok(tagLines.every((l) => l.status === 404), 'and answered 404');
    t.match(tagLines[0]?.path, /[?&]ns=docker\.io(&|$)/);
  });

  await t.test('a registry with no directory of its own is pulled through stevedore by _default/hosts.toml', async (t) => {
    const ref = `${OTHER}/team/tool:v1`;
    const pulled = await cri.pullImage(ref, { sandboxConfig: SANDBOX });
    t.equal(pulled.image_ref, tool.config.digest);
    t.same((await cri.imageStatus(ref)).image?.repo_digests, [`${OTHER}/team/tool@${tool.manifest.digest}`], 'repo digest is the upstream manifest digest');
    await logsSettled(sd);
    const tagHead = served(sd, 'HEAD', '/v2/team/tool/manifests/v1');
    t.same(tagHead.map((l) => l.status), [200], 'stevedore resolved the tag');
    t.equal(nsOf(tagHead[0]), OTHER, `asked with ns=${OTHER}`);
    for (const b of [tool.config, ...tool.layers]) {
      const lines = served(sd, 'GET', `/v2/team/tool/blobs/${b.digest}`);
      t.same(lines.map((l) => l.status), [200], `stevedore served ${b.digest.slice(0, 19)}`);
      t.equal(nsOf(lines[0]), OTHER);
    }
  });

  await t.test('a registry stevedore has no upstream for: _default sends it to stevedore, which answers 404, then containerd tries the registry', async (t) => {
    const ref = `${UNKNOWN}/team/tool:v1`;
    const err = await cri.pullImage(ref, { sandboxConfig: SANDBOX }).then(
      () => null,
      (e: unknown) => e as { details?: string },
    );
    t.ok(err, 'PullImage failed');
    // (containerd speaks plain http to a loopback registry of its own accord.)
    t.match(err?.details, `http://${UNKNOWN}/v2/team/tool/manifests/v1`, `the last host tried is the registry itself: ${err?.details}`);
    await logsSettled(sd);
    const asked = sd.logs.filter((l) => l.msg === 'request' && nsOf(l) === UNKNOWN);
    t.ok(asked.length >= 1, 'stevedore was asked first');
    t.ok(asked.every((l) => l.status === 404), 'and answered 404 (no upstream of that name: it never connects to a host a client names)');
  });
});

t.test('the CRI plugin pulls through stevedore over HTTPS trusting only the CA from `stevedore tls init`; without it the pull is refused', async (t) => {
  const ctrdP = startContainerd({ cri: true });
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const app = buildDockerImage('pull-cri-https/app', { layers: 2 });
  const other = buildDockerImage('pull-cri-https/other', { layers: 1 });
  await pushImage(reg.directUrl, 'library/app', 'v1', app);
  await pushImage(reg.directUrl, 'library/other', 'v1', other);
  const certs = await makeCertificates(t);
  const work = await tmpDir(t, 'stevedore-cri-https-');
  const sd = await spawnStevedore(t, {
    storage: { path: path.join(work, 'store') },
    upstreams: { 'docker.io': { url: reg.url } },
    tls: { cert: certs.cert, key: certs.key },
  });
  t.match(sd.url, /^https:\/\//, 'stevedore serves https');
  const ctrd = await ctrdP;
  const cri = criImageClient(ctrd.address);
  t.teardown(() => cri.close());

  // hosts.toml with `ca` (what `containerd-config --ca` writes), no skip_verify.
  const files = await ctrd.writeCriHostsToml(['docker.io'], sd.url, { ca: certs.caCert });
  const toml = await readFile(files[0]!, 'utf8');
  t.match(toml, `ca = ${JSON.stringify(certs.caCert)}`, 'the hosts.toml names the CA');
  t.notMatch(toml, /skip_verify/, 'and never skips verification');
  const pulled = await cri.pullImage('docker.io/library/app:v1', { sandboxConfig: SANDBOX });
  t.equal(pulled.image_ref, app.config.digest);
  t.same((await cri.imageStatus('docker.io/library/app:v1')).image?.repo_digests, [`docker.io/library/app@${app.manifest.digest}`], 'ImageStatus shows the upstream digest');
  await logsSettled(sd);
  for (const b of [app.config, ...app.layers]) t.same(served(sd, 'GET', `/v2/library/app/blobs/${b.digest}`).map((l) => l.status), [200], `stevedore served ${b.digest.slice(0, 19)} over https`);

  // The same mirror without the CA: the TLS handshake fails, nothing is pulled.
  await writeHostsTomls(ctrd.criHostsDir!, ['docker.io'], [sd.url], { server: SAFE_FALLBACK_SERVER });
  t.notMatch(await readFile(path.join(ctrd.criHostsDir!, 'docker.io', 'hosts.toml'), 'utf8'), /ca =|skip_verify/, 'a hosts.toml with neither ca nor skip_verify');
  const before = sd.logs.filter((l) => l.msg === 'request').length;
  const err = await cri.pullImage('docker.io/library/other:v1', { sandboxConfig: SANDBOX, timeoutMs: 60_000 }).then(
    () => null,
    (e: unknown) => e as { details?: string },
  );
  t.ok(err, 'PullImage failed');
  t.same((await cri.imageStatus('docker.io/library/other:v1')).image, null, 'nothing on the node');
  await logsSettled(sd);
  t.equal(sd.logs.filter((l) => l.msg === 'request').length, before, 'no request reached stevedore');
});
