// A stevedore whose source is another stevedore (issue 14): the namespace passed through (?ns= or a
// path prefix), the central one's token flow, HEAD on a cold blob, Range, and stale answers (a
// `Warning: 110` from the central cache stays visible to the node's clients). Real processes: a
// CNCF registry, a central stevedore, a node stevedore.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { request } from 'undici';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage, sha256 } from '../fixtures/images.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';
import { spawnStevedore, type StevedoreProcess } from '../fixtures/stevedore-process.js';
import { blobRequests, blobRequestsAtLeast, logged, pullImage } from '../fixtures/node-tier.js';
import { tmpDir, waitFor } from '../fixtures/util.js';

async function registryWith(t: Parameters<typeof spawnStevedore>[0], repo: string, seed: string): Promise<{ registry: Registry; img: ReturnType<typeof buildDockerImage> }> {
  const registry = await startRegistry();
  t.teardown(() => registry.stop());
  const img = buildDockerImage(seed, { layers: 2, layerSize: 64 * 1024 });
  await pushImage(registry.directUrl, repo, 'v1', img);
  registry.resetCounts();
  return { registry, img };
}

async function central(t: Parameters<typeof spawnStevedore>[0], registry: Registry, extra: Record<string, unknown> = {}): Promise<StevedoreProcess> {
  return spawnStevedore(t, { storage: { path: await tmpDir(t) }, upstreams: { 'docker.io': { url: registry.url } }, ...extra });
}

async function node(t: Parameters<typeof spawnStevedore>[0], registry: Registry, source: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<StevedoreProcess> {
  return spawnStevedore(t, { storage: { path: await tmpDir(t) }, upstreams: { 'docker.io': { sources: [source, { url: registry.url }] } }, ...extra });
}

function centralPaths(p: StevedoreProcess): string[] {
  return p.logs.filter((l) => l.msg === 'request').map((l) => String(l.path));
}

t.test('namespace ns: the node asks the central stevedore with ?ns=docker.io', async (t) => {
  const { registry, img } = await registryWith(t, 'library/app', 'chain-ns');
  const c = await central(t, registry);
  const n = await node(t, registry, { url: c.url, name: 'central', namespace: 'ns' });
  const pulled = await pullImage(n.url, 'library/app', 'v1');
  t.equal(pulled.manifest, img.manifest.digest);
  for (const [d, got] of pulled.blobs) t.equal(got, d, `${d} intact`);
  const paths = centralPaths(c);
  t.ok(paths.length > 0 && paths.every((p) => p.startsWith('/v2/library/app/') && p.endsWith('ns=docker.io')), `every request carried ns: ${paths.join(' ')}`);
  t.equal(registry.count('GET', /\/blobs\//), 3, 'the registry was asked by central only');
});

t.test('namespace path: the node asks the central stevedore for /v2/docker.io/<name>', async (t) => {
  const { registry, img } = await registryWith(t, 'library/app', 'chain-path');
  const c = await central(t, registry);
  const n = await node(t, registry, { url: c.url, name: 'central', namespace: 'path' });
  const pulled = await pullImage(n.url, 'library/app', 'v1');
  t.equal(pulled.manifest, img.manifest.digest);
  for (const [d, got] of pulled.blobs) t.equal(got, d, `${d} intact`);
  const paths = centralPaths(c);
  t.ok(paths.length > 0 && paths.every((p) => p.startsWith('/v2/docker.io/library/app/')), `every request had the path prefix: ${paths.join(' ')}`);
});

t.test("the central stevedore's token flow: the node logs in with the source's credentials; without them it is refused", async (t) => {
  const { registry, img } = await registryWith(t, 'library/app', 'chain-token');
  const dir = await tmpDir(t);
  const htpasswd = path.join(dir, 'htpasswd');
  await writeFile(htpasswd, `node:${bcrypt.hashSync('node-password', 4)}\n`);
  const c = await central(t, registry, {
    auth: { htpasswd, anonymousPull: false, rules: [{ repository: '**', users: ['node'], actions: ['pull'] }] },
  });
  const n = await node(t, registry, { url: c.url, name: 'central', namespace: 'ns', username: 'node', password: 'node-password' });
  const pulled = await pullImage(n.url, 'library/app', 'v1');
  for (const [d, got] of pulled.blobs) t.equal(got, d, `${d} intact`);
  t.ok((await logged(c, (l) => l.msg === 'request' && String(l.path).startsWith('/v2/') && l.status === 401, 1)).length > 0, 'central challenged the node');
  t.ok((await logged(c, (l) => l.msg === 'request' && String(l.path).startsWith('/token') && l.status === 200 && l.user === 'node', 1)).length > 0, 'the node fetched a token as its user');
  t.equal((await blobRequestsAtLeast(c, 3)).filter((l) => l.status === 200).length, 3, 'central served every blob to the node, authenticated');
  t.equal(registry.count('GET', /\/blobs\//), 3, 'the registry only by central');

  // Without credentials the central source refuses, and the registry (the next source) answers.
  registry.resetCounts();
  const anon = await node(t, registry, { url: c.url, name: 'central', namespace: 'ns' });
  const again = await pullImage(anon.url, 'library/app', 'v1');
  t.equal(again.manifest, img.manifest.digest, 'the pull still succeeds, from the registry');
  t.equal(registry.count('GET', /\/blobs\//), 3, 'the registry served the blobs the central source refused');
});

t.test('HEAD on a cold blob through the node: size and digest from the central one, nothing downloaded', async (t) => {
  const { registry, img } = await registryWith(t, 'library/app', 'chain-head');
  const c = await central(t, registry);
  const n = await node(t, registry, { url: c.url, name: 'central', namespace: 'ns' });
  const layer = img.layers[0]!;
  const res = await request(`${n.url}/v2/library/app/blobs/${layer.digest}?ns=docker.io`, { method: 'HEAD' });
  await res.body.text();
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-length'], String(layer.size));
  t.equal(res.headers['docker-content-digest'], layer.digest);
  t.equal(registry.count('GET', /\/blobs\//), 0, 'no blob downloaded from the registry');
  t.equal(blobRequests(c, 'GET').length, 0, 'no blob downloaded from central');
  t.equal((await blobRequestsAtLeast(c, 1, 'HEAD')).length, 1, 'central was asked with one HEAD');
});

t.test('Range on a cold blob through the node: the asked bytes, from a download that fills both caches', async (t) => {
  const { registry, img } = await registryWith(t, 'library/app', 'chain-range');
  const c = await central(t, registry);
  const n = await node(t, registry, { url: c.url, name: 'central', namespace: 'ns' });
  const layer = img.layers[1]!;
  const res = await request(`${n.url}/v2/library/app/blobs/${layer.digest}?ns=docker.io`, { headers: { range: 'bytes=1000-1999' } });
  const body = Buffer.from(await res.body.arrayBuffer());
  t.equal(res.statusCode, 206);
  t.equal(res.headers['content-range'], `bytes 1000-1999/${layer.size}`);
  t.same(body, layer.data.subarray(1000, 2000), 'exactly the bytes asked for');
  // The whole blob was fetched once along the chain, and is now served from the node's store.
  await waitFor('the node stores the blob', async () => {
    const h = await request(`${n.url}/v2/library/app/blobs/${layer.digest}?ns=docker.io`, { method: 'HEAD' });
    await h.body.text();
    return h.headers['x-cache'] === 'hit';
  });
  const whole = await request(`${n.url}/v2/library/app/blobs/${layer.digest}?ns=docker.io`);
  t.equal(sha256(Buffer.from(await whole.body.arrayBuffer())), layer.digest);
  t.equal(whole.headers['x-cache'], 'hit');
  t.equal(registry.count('GET', new RegExp(`/blobs/${layer.digest}`)), 1);
  t.equal((await blobRequestsAtLeast(c, 1)).length, 1);
});

t.test("a stale answer from the central one stays stale at the node: Warning: 110 reaches the node's clients", async (t) => {
  const { registry, img } = await registryWith(t, 'library/app', 'chain-stale');
  const c = await central(t, registry, { cache: { tagTTL: '1s' } });
  const n = await node(t, registry, { url: c.url, name: 'central', namespace: 'ns' }, { cache: { tagTTL: '1s' } });
  const manifest = async (): Promise<{ status: number; warning: unknown; digest: unknown }> => {
    const r = await request(`${n.url}/v2/library/app/manifests/v1?ns=docker.io`, { headers: { accept: MANIFEST_ACCEPT } });
    await r.body.text();
    return { status: r.statusCode, warning: r.headers.warning, digest: r.headers['docker-content-digest'] };
  };
  const fresh = await manifest();
  t.same(fresh, { status: 200, warning: undefined, digest: img.manifest.digest }, 'fresh while the registry answers');
  // The registry fails; central serves its stored tag as stale. The node's own source list still
  // has the registry: it is failing too, so the node's answer is the central one's, stale.
  registry.setFault({ kind: 'status', status: 503, body: '' });
  await new Promise((r) => setTimeout(r, 1_200));
  const stale = await manifest();
  t.equal(stale.status, 200);
  t.equal(stale.digest, img.manifest.digest);
  t.match(String(stale.warning), /^110 /, 'the node marks its answer stale');
  await waitFor('the node logs the stale answer', async () => n.logs.some((l) => l.msg === 'upstream failing; serving stored tag'));
  const said = n.logs.filter((l) => l.msg === 'upstream failing; serving stored tag').map((l) => String(l.reason));
  t.ok(said.some((r) => /source central of docker\.io/.test(r)), `the node logs that the central one answered stale: ${said.join(' | ')}`);
  t.ok(c.logs.some((l) => l.msg === 'upstream failing; serving stored tag'), 'central served it stale');

  // A node that never had the tag gets it from the stale central one, stale too.
  const other = await node(t, registry, { url: c.url, name: 'central', namespace: 'ns' });
  const r = await request(`${other.url}/v2/library/app/manifests/v1?ns=docker.io`, { headers: { accept: MANIFEST_ACCEPT } });
  await r.body.text();
  t.equal(r.statusCode, 200);
  t.match(String(r.headers.warning), /^110 /, 'a first answer that came stale is stale');
});
