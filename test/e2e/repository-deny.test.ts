// Allow and deny lists per upstream (upstreams.<name>.allow / deny) against a real CNCF
// distribution: a refused repository answers 403 DENIED with the reason on every endpoint, the
// upstream hears nothing about it, what was stored under it is not served, and the access log says
// so. Repositories the lists do not refuse are served as before.
import path from 'node:path';
import t from 'tap';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage, type BuiltImage } from '../fixtures/images.js';
import { ociErrors, rawRequest, type RawResponse } from '../fixtures/http-client.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';

const REASON = 'use docker.io/library/redis instead (SEC-142)';

/** Every read endpoint of a repository, in the forms clients use, GET and HEAD. */
function readEndpoints(name: string, img: BuiltImage, tag: string): Array<{ method: string; path: string }> {
  const out: Array<{ method: string; path: string }> = [];
  const forms = [`/v2/docker.io/${name}`, `/v2/${name}`];
  for (const base of forms) {
    for (const method of ['GET', 'HEAD']) {
      out.push(
        { method, path: `${base}/manifests/${tag}` },
        { method, path: `${base}/manifests/${img.manifest.digest}` },
        { method, path: `${base}/blobs/${img.layers[0]!.digest}` },
        { method, path: `${base}/blobs/${img.config.digest}` },
        { method, path: `${base}/tags/list` },
        { method, path: `${base}/referrers/${img.manifest.digest}` },
      );
    }
  }
  // containerd's form: the name without its registry, the upstream in ?ns=.
  out.push({ method: 'GET', path: `/v2/${name}/manifests/${tag}?ns=docker.io` }, { method: 'GET', path: `/v2/${name}/blobs/${img.layers[0]!.digest}?ns=docker.io` });
  return out;
}

function call(sd: Stevedore, method: string, p: string): Promise<RawResponse> {
  return rawRequest(`${sd.url}${p}`, { method, headers: { accept: MANIFEST_ACCEPT } });
}

type Tap = Pick<typeof t, 'equal' | 'ok' | 'match'>;

function assertDenied(tt: Tap, r: RawResponse, method: string, message: RegExp, what: string): void {
  tt.equal(r.status, 403, `${what}: 403`);
  if (method === 'HEAD') {
    tt.equal(r.body.length, 0, `${what}: no body`);
    return;
  }
  const err = ociErrors(r)?.[0];
  tt.equal(err?.code, 'DENIED', `${what}: DENIED`);
  tt.match(err?.message ?? '', message, `${what}: the message`);
}

function assertServes(tt: Tap, r: RawResponse, img: BuiltImage, what: string): void {
  tt.equal(r.status, 200, `${what}: 200`);
  tt.equal(r.headers['docker-content-digest'], img.manifest.digest, `${what}: its digest`);
}

t.test('a denied repository: 403 DENIED with the reason on every endpoint, nothing asked upstream', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const redis = buildDockerImage('deny/bitnami-redis', { layers: 1 });
  const alpine = buildDockerImage('deny/alpine', { layers: 1 });
  await pushImage(reg.directUrl, 'bitnami/redis', '7.2', redis);
  await pushImage(reg.directUrl, 'library/alpine', '3.19', alpine);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url, deny: [{ repository: 'bitnami/**', reason: REASON }] } },
  });
  reg.resetCounts();

  await t.test('every read endpoint, GET and HEAD, in every client form', async (t) => {
    for (const { method, path: p } of readEndpoints('bitnami/redis', redis, '7.2')) {
      const r = await call(sd, method, p);
      assertDenied(t, r, method, /^docker\.io\/bitnami\/redis is denied on this proxy: use docker\.io\/library\/redis instead \(SEC-142\)$/, `${method} ${p}`);
    }
    t.equal(reg.requests.length, 0, 'the upstream heard nothing');
  });

  await t.test('** covers deeper names of the namespace too', async (t) => {
    const r = await call(sd, 'GET', '/v2/docker.io/bitnami/charts/redis/manifests/1.0.0');
    assertDenied(t, r, 'GET', /denied on this proxy/, 'bitnami/charts/redis');
    t.equal(reg.requests.length, 0, 'the upstream heard nothing');
  });

  await t.test('pushing (seeding) into a denied repository is refused as well', async (t) => {
    const r = await call(sd, 'POST', '/v2/docker.io/bitnami/redis/blobs/uploads/');
    assertDenied(t, r, 'POST', /denied on this proxy: use docker\.io\/library\/redis/, 'POST upload');
  });

  await t.test('each refusal is logged with the repository and the reason', async (t) => {
    const denied = sd.requestLogs().filter((l) => l.status === 403);
    t.ok(denied.length >= readEndpoints('bitnami/redis', redis, '7.2').length, `${denied.length} refusals logged`);
    for (const l of denied) {
      const error = l.error as { code: string; message: string } | undefined;
      t.equal(error?.code, 'DENIED', `${String(l.method)} ${String(l.path)}: code DENIED`);
      t.match(error?.message ?? '', /bitnami\/.* is denied on this proxy: use docker\.io\/library\/redis instead \(SEC-142\)/);
      t.equal(l.upstream, undefined, 'no upstream named: none was asked');
    }
  });

  await t.test('other repositories of the upstream are served as before', async (t) => {
    reg.resetCounts();
    assertServes(t, await call(sd, 'GET', '/v2/docker.io/library/alpine/manifests/3.19'), alpine, 'library/alpine:3.19');
    assertServes(t, await call(sd, 'GET', '/v2/alpine/manifests/3.19'), alpine, 'alpine:3.19 (registry-mirrors form)');
    const blob = await call(sd, 'GET', `/v2/docker.io/library/alpine/blobs/${alpine.layers[0]!.digest}`);
    t.equal(blob.status, 200, 'its blob');
    t.ok(blob.body.equals(alpine.layers[0]!.data), 'the blob bytes');
    t.ok(reg.count('GET', /library\/alpine\/manifests\/3\.19/) >= 1, 'fetched from the upstream');
  });
});

t.test('an allow list: repositories outside it are 403 DENIED and never asked for', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const miner = buildDockerImage('allow/miner', { layers: 1 });
  const alpine = buildDockerImage('allow/alpine', { layers: 1 });
  const app = buildDockerImage('allow/app', { layers: 1 });
  await pushImage(reg.directUrl, 'evil/miner', 'latest', miner);
  await pushImage(reg.directUrl, 'library/alpine', '3.19', alpine);
  await pushImage(reg.directUrl, 'my-org/team/app', 'v1', app);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url, allow: ['library/*', 'my-org/**'] } } });
  reg.resetCounts();

  await t.test('a repository outside allow: 403 on every endpoint, the upstream hears nothing', async (t) => {
    for (const { method, path: p } of readEndpoints('evil/miner', miner, 'latest')) {
      assertDenied(t, await call(sd, method, p), method, /^docker\.io\/evil\/miner is not proxied here: upstreams\.docker\.io\.allow does not include it$/, `${method} ${p}`);
    }
    t.equal(reg.requests.length, 0, 'the upstream heard nothing');
  });

  await t.test('repositories inside allow are served, also a one-component name (library/ added)', async (t) => {
    assertServes(t, await call(sd, 'GET', '/v2/alpine/manifests/3.19'), alpine, 'alpine');
    assertServes(t, await call(sd, 'GET', '/v2/docker.io/my-org/team/app/manifests/v1'), app, 'my-org/team/app');
  });
});

t.test('a repository denied after it was cached: nothing stored under it is served', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const busybox = buildDockerImage('deny/busybox', { layers: 2 });
  const alpine = buildDockerImage('deny/cached-alpine', { layers: 1 });
  await pushImage(reg.directUrl, 'library/busybox', '1.36', busybox);
  await pushImage(reg.directUrl, 'library/alpine', '3.19', alpine);
  const storagePath = path.join(await tmpDir(t, 'stevedore-deny-'), 'data');

  // Pulled while allowed: manifest, config and layers are stored.
  const before = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, storagePath });
  for (const [name, img] of [['library/busybox', busybox], ['library/alpine', alpine]] as const) {
    assertServes(t, await call(before, 'GET', `/v2/docker.io/${name}/manifests/${name === 'library/busybox' ? '1.36' : '3.19'}`), img, name);
    for (const b of [img.config, ...img.layers]) t.equal((await call(before, 'GET', `/v2/docker.io/${name}/blobs/${b.digest}`)).status, 200, `${name} blob stored`);
  }
  await before.stop();

  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url, deny: [{ repository: 'library/busybox', reason: 'shells are not allowed in production images' }] } },
    storagePath,
    config: { registry: { hosted: ['lab/**'] } },
  });
  reg.resetCounts();

  await t.test('the stored manifest, by tag and by digest, and the stored blobs: 403', async (t) => {
    const files = await sd.storeFiles();
    t.ok(files.some((f) => f.includes(busybox.layers[0]!.digest.slice('sha256:'.length))), 'the layer is still on disk (deny hides, it does not delete)');
    for (const { method, path: p } of readEndpoints('library/busybox', busybox, '1.36')) {
      assertDenied(t, await call(sd, method, p), method, /shells are not allowed in production images/, `${method} ${p}`);
    }
    t.equal(reg.requests.length, 0, 'the upstream heard nothing');
  });

  await t.test('a denied repository is no mount source: the blob must be uploaded instead', async (t) => {
    const r = await call(sd, 'POST', `/v2/lab/app/blobs/uploads/?mount=${busybox.layers[0]!.digest}&from=docker.io/library/busybox`);
    t.equal(r.status, 202, 'an upload session, not a mount (201)');
    t.match(String(r.headers.location), /^\/v2\/lab\/app\/blobs\/uploads\//);
  });

  await t.test('another stored repository is still served from the store', async (t) => {
    reg.resetCounts();
    const r = await call(sd, 'GET', `/v2/docker.io/library/alpine/manifests/${alpine.manifest.digest}`);
    assertServes(t, r, alpine, 'library/alpine by digest');
    t.equal(r.headers['x-cache'], 'hit', 'from the store');
    const blob = await call(sd, 'GET', `/v2/docker.io/library/alpine/blobs/${alpine.layers[0]!.digest}`);
    t.equal(blob.status, 200);
    t.equal(blob.headers['x-cache'], 'hit');
    t.equal(reg.requests.length, 0, 'no upstream request');
  });
});
