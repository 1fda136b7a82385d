// Pre-heat (issue 30, item 3): warm marks make node instances fetch images before a rollout.
// A real registry, a central stevedore, node instances and a real redis-server, every process on
// 127.0.0.1; marks made with the CLI (`stevedore prefetch --nodes`), the HTTP endpoint, or written
// into Redis by the test as another process could.
import t, { type Test } from 'tap';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import { createClient } from '@redis/client';
import { request } from 'undici';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage, type BuiltImage } from '../fixtures/images.js';
import { logged, metric, pullImage, startTiers, type Tiers } from '../fixtures/node-tier.js';
import { stevedoreCli } from '../fixtures/cli.js';
import type { StevedoreProcess } from '../fixtures/stevedore-process.js';
import { tmpDir, waitFor } from '../fixtures/util.js';

/** A configuration for the CLI: the group's Redis, the registry as docker.io (as the central cache's own). */
async function cliConfig(t: Test, tier: Tiers): Promise<string> {
  const dir = await tmpDir(t, 'stevedore-cli-');
  const file = path.join(dir, 'stevedore.yaml');
  await writeFile(file, JSON.stringify({ storage: { path: path.join(dir, 'store') }, metadata: { redis: tier.redis.url }, upstreams: { 'docker.io': { url: tier.registry.url } } }));
  return file;
}

function warmLines(p: StevedoreProcess): Array<Record<string, unknown>> {
  return p.logs.filter((l) => l.msg === 'pre-heat: image warm');
}

/** Requests central answered (its access log). */
function centralRequests(p: StevedoreProcess): number {
  return p.logs.filter((l) => l.msg === 'request').length;
}

/** Pulls every manifest and blob of `img` from `node` (by tag and by digest), checking the bytes. */
async function pullAll(t: Test, node: StevedoreProcess, img: BuiltImage, tag: string): Promise<void> {
  const pulled = await pullImage(node.url, 'library/app', tag);
  t.equal(pulled.manifest, img.manifest.digest, 'the manifest by tag');
  for (const [d, got] of pulled.blobs) t.equal(got, d, `blob ${d.slice(0, 19)} intact`);
  const byDigest = await request(`${node.url}/v2/library/app/manifests/${img.manifest.digest}?ns=docker.io`, { headers: { accept: MANIFEST_ACCEPT } });
  await byDigest.body.text();
  t.equal(byDigest.statusCode, 200, 'the manifest by digest');
}

/** Pulls the image from each of `nodes` (pullAll) and checks neither the registry nor central saw a request meanwhile. */
async function pullAllLocally(t: Test, tier: Tiers, nodes: StevedoreProcess[], img: BuiltImage): Promise<void> {
  tier.registry.resetCounts();
  const before = centralRequests(tier.central);
  for (const n of nodes) await pullAll(t, n, img, 'v1');
  t.equal(tier.registry.count('*', /.*/), 0, 'the registry saw no request during the pulls');
  t.equal(centralRequests(tier.central) - before, 0, 'central saw no request during the pulls');
}

async function setImage(tier: Tiers, seed: string, layers = 3): Promise<BuiltImage> {
  const img = buildDockerImage(seed, { layers, layerSize: 256 * 1024 });
  await pushImage(tier.registry.directUrl, 'library/app', 'v1', img);
  return img;
}

type Redis = ReturnType<typeof createClient>;

async function redisDo<T>(url: string, fn: (c: Redis) => Promise<T>): Promise<T> {
  const c: Redis = createClient({ url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.quit();
  }
}

/** A mark as another process would write it into the group's records. */
function markJson(id: string, img: BuiltImage, expires: number): string {
  return JSON.stringify({
    v: 1,
    id,
    images: [{ registry: 'docker.io', name: 'library/app', tag: 'v1', digest: img.manifest.digest }],
    platforms: null,
    nodes: { kind: 'all' },
    created: Date.now(),
    expires,
    by: 'test',
  });
}

async function writeMark(url: string, member: string, expires: number): Promise<void> {
  await redisDo(url, (c) => c.zAdd('stevedore:peers:default:has:warm-marks', { score: expires, value: member }));
}

t.test('prefetch --nodes all warms three node instances; then every manifest and blob pulled from each is served with 0 requests to central and 0 to the registry', async (t) => {
  const tier = await startTiers(t, { nodes: 3 });
  const img = await setImage(tier, 'preheat-all');
  const config = await cliConfig(t, tier);
  const run = await stevedoreCli(['prefetch', '--config', config, '--nodes', 'all', '--ttl', '6h', '--timeout', '60s', 'docker.io/library/app:v1']);
  t.equal(run.code, 0, `the CLI waits for the nodes and exits 0: ${run.stderr}`);
  for (const n of tier.nodes) t.match(run.stderr, `node ${n.url}: warm docker.io/library/app:v1`, `it shows ${n.url} warm`);
  t.match(run.stderr, 'warm on 3/3 nodes');

  await pullAllLocally(t, tier, tier.nodes, img);
  for (const l of img.layers) {
    const fromRegistry = tier.registry.requests.filter((r) => r.path.includes(l.digest));
    t.equal(fromRegistry.length, 0, 'not even for warming after the reset');
  }
});

t.test('prefetch --nodes 1 warms exactly one of three node instances', async (t) => {
  const tier = await startTiers(t, { nodes: 3 });
  await setImage(tier, 'preheat-one');
  const config = await cliConfig(t, tier);
  const run = await stevedoreCli(['prefetch', '--config', config, '--nodes', '1', '--timeout', '60s', 'library/app:v1']);
  t.equal(run.code, 0, `exit 0: ${run.stderr}`);
  t.match(run.stderr, 'warm on 1/1 nodes');
  // Several polls of every node later, still one.
  await new Promise((r) => setTimeout(r, 6_000));
  const warmed = tier.nodes.filter((n) => warmLines(n).length > 0);
  t.equal(warmed.length, 1, 'one node warmed the image');
  t.equal(tier.nodes.filter((n) => n.logs.some((l) => l.msg === 'pre-heat: took a slot of a warm mark')).length, 1, 'one node took the one slot');
});

t.test('a node instance started after a mark for all nodes warms itself', async (t) => {
  const tier = await startTiers(t, { nodes: 1 });
  const img = await setImage(tier, 'preheat-later');
  const config = await cliConfig(t, tier);
  const run = await stevedoreCli(['prefetch', '--config', config, '--nodes', 'all', '--timeout', '60s', 'library/app:v1']);
  t.equal(run.code, 0, `exit 0: ${run.stderr}`);
  const late = await tier.addNode();
  await waitFor('the new node warms the image', async () => warmLines(late).length > 0, 30_000);
  await pullAllLocally(t, tier, [late], img);
});

t.test('what a mark pinned is unpinned when the mark expires', async (t) => {
  const tier = await startTiers(t, { nodes: 1 });
  const img = await setImage(tier, 'preheat-expiry', 2);
  const node = tier.nodes[0]!;
  const expires = Date.now() + 10_000;
  await writeMark(tier.redis.url, markJson('00112233445566ff', img, expires), expires);
  await waitFor('the node warms the image', async () => warmLines(node).length > 0, 30_000);
  const pinned = await metric(node, 'stevedore_store_blobs', { kind: 'pinned' });
  t.equal(pinned, 2 + img.layers.length, 'the manifest, config and layers are pinned while the mark lives');
  await waitFor('the mark expires', async () => Date.now() > expires + 3_000, 20_000, 200);
  await waitFor('the pins are dropped', async () => (await metric(node, 'stevedore_store_blobs', { kind: 'pinned' })) === 0, 15_000, 200);
  t.equal(await metric(node, 'stevedore_store_blobs', { kind: 'cached' }), 2 + img.layers.length, 'they are ordinary (evictable) entries again');
  t.ok(node.logs.some((l) => l.msg === 'pre-heat: a warm mark expired; what it pinned is evictable again' && l.unpinned === 2 + img.layers.length), 'logged');
  const left = await redisDo(tier.redis.url, (c) => c.zRange('stevedore:peers:default:has:warm-marks', 0, -1));
  t.same(left, [], 'the expired mark is dropped from Redis');
});

t.test('a malformed mark in Redis is ignored and logged', async (t) => {
  const tier = await startTiers(t, { nodes: 1 });
  const img = await setImage(tier, 'preheat-malformed');
  const node = tier.nodes[0]!;
  const expires = Date.now() + 600_000;
  const hostile = JSON.parse(markJson('aabbccddeeff0011', img, expires)) as Record<string, unknown>;
  // A digest that is not one, and a registry this node does not have as a name it would resolve.
  hostile.images = [{ registry: 'docker.io', name: '../../etc', tag: 'v1', digest: 'sha256:nothex' }];
  await writeMark(tier.redis.url, JSON.stringify(hostile), expires);
  await writeMark(tier.redis.url, 'not json at all', expires);
  const lines = await logged(node, (l) => l.msg === 'pre-heat: a warm mark in the coordinator is malformed; ignored', 2);
  t.equal(lines.length, 2, 'each malformed mark is logged');
  t.match(String(lines.find((l) => String(l.mark).startsWith('{'))?.reason), /digest|name/, 'with the reason');
  await new Promise((r) => setTimeout(r, 4_000));
  t.equal(lines.length, (await logged(node, (l) => l.msg === 'pre-heat: a warm mark in the coordinator is malformed; ignored', 99)).length, 'once each, not at every poll');
  t.equal(warmLines(node).length, 0, 'nothing was warmed');
  t.equal(tier.registry.count('GET', /etc/), 0, 'nothing was asked for the name it gave');
  t.equal(await metric(node, 'stevedore_store_blobs', { kind: 'pinned' }), 0, 'nothing pinned');
});

/** A tier whose node instances have users (auth.htpasswd): alice may pull, anonymous clients may too. */
async function tierWithUsers(t: Test): Promise<Tiers> {
  const file = path.join(await tmpDir(t), 'htpasswd');
  await writeFile(file, `alice:${bcrypt.hashSync('Al1ce-pw', 4)}\n`);
  return startTiers(t, { nodes: 1, nodeConfig: { auth: { htpasswd: file } } });
}

const ALICE = `Basic ${Buffer.from('alice:Al1ce-pw').toString('base64')}`;

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: { errors?: Array<{ code: string; message: string }>; id?: string } }> {
  const res = await request(`${url}/_stevedore/preheat`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  return { status: res.statusCode, json: (await res.body.json()) as never };
}

async function marksInRedis(url: string): Promise<number> {
  return redisDo(url, (c) => c.zCard('stevedore:peers:default:has:warm-marks'));
}

t.test('the pre-heat endpoint refuses a request without credentials (401, OCI error) and records nothing', async (t) => {
  const tier = await tierWithUsers(t);
  await setImage(tier, 'preheat-http-anon');
  const node = tier.nodes[0]!;
  const r = await post(node.url, { images: ['library/app:v1'], nodes: 'all' });
  t.equal(r.status, 401);
  t.equal(r.json.errors?.[0]?.code, 'UNAUTHORIZED');
  const wrong = await post(node.url, { images: ['library/app:v1'] }, { authorization: `Basic ${Buffer.from('alice:wrong').toString('base64')}` });
  t.equal(wrong.status, 401, 'nor with a wrong password');
  t.equal(await marksInRedis(tier.redis.url), 0, 'no mark recorded');
  t.ok(node.logs.some((l) => l.msg === 'request' && l.path === '/_stevedore/preheat' && l.status === 401), 'logged');
});

t.test('the pre-heat endpoint answers bad input with 400 and the OCI error JSON, and records nothing', async (t) => {
  const tier = await tierWithUsers(t);
  await setImage(tier, 'preheat-http-bad');
  const node = tier.nodes[0]!;
  const cases: Array<[string, unknown, RegExp]> = [
    ['not JSON', '{images:', /not JSON/],
    ['no images', { images: [] }, /images/],
    ['a bad reference', { images: ['UPPER/Case::x'] }, /invalid image reference/],
    ['an upstream not configured', { images: ['evil.example.com/x/y:1'] }, /not configured/],
    ['a bad node selection', { images: ['library/app:v1'], nodes: 'most' }, /nodes/],
    ['a bad ttl', { images: ['library/app:v1'], ttl: 'forever' }, /ttl/],
    ['an unknown key', { images: ['library/app:v1'], url: 'http://evil.example.com' }, /url|Unrecognized/],
  ];
  for (const [what, body, message] of cases) {
    const r = await post(node.url, body, { authorization: ALICE });
    t.equal(r.status, 400, `${what}: 400`);
    t.match(r.json.errors?.[0]?.message ?? '', message, `${what}: says why`);
  }
  t.equal(tier.registry.count('*', /evil|etc/), 0, 'no name it gave was asked for');
  t.equal(await marksInRedis(tier.redis.url), 0, 'no mark recorded');
  t.equal(node.logs.filter((l) => l.msg === 'request' && l.path === '/_stevedore/preheat' && l.status === 400).length, cases.length, 'each is logged');
});

t.test('an authenticated POST to the pre-heat endpoint makes the nodes warm the image, and its progress is readable', async (t) => {
  const tier = await tierWithUsers(t);
  const img = await setImage(tier, 'preheat-http-ok');
  const node = tier.nodes[0]!;
  const r = await post(node.url, { images: ['library/app:v1'], nodes: 'all', ttl: '1h' }, { authorization: ALICE });
  t.equal(r.status, 201, JSON.stringify(r.json));
  await waitFor('the node warms the image', async () => warmLines(node).length > 0, 30_000);
  const p = await request(`${node.url}/_stevedore/preheat/${r.json.id}`, { headers: { authorization: ALICE } });
  const progress = (await p.body.json()) as { finished: boolean; warm: string[] };
  t.equal(p.statusCode, 200);
  t.same(progress.warm, [node.url], 'the node is listed warm');
  t.equal(progress.finished, true);
  await pullAllLocally(t, tier, [node], img);
});

t.test('prefetch --nodes exits 1 naming the node and image a node could not warm (an upstream the node does not have)', async (t) => {
  const tier = await startTiers(t, { nodes: 1 });
  await setImage(tier, 'preheat-unconfigured');
  // The CLI's configuration has ghcr.io (the same registry); the node's has docker.io only.
  const dir = await tmpDir(t, 'stevedore-cli-');
  const config = path.join(dir, 'stevedore.yaml');
  await writeFile(config, JSON.stringify({ storage: { path: path.join(dir, 'store') }, metadata: { redis: tier.redis.url }, upstreams: { 'docker.io': { url: tier.registry.url }, 'ghcr.io': { url: tier.registry.url } } }));
  const run = await stevedoreCli(['prefetch', '--config', config, '--nodes', 'all', '--timeout', '60s', 'ghcr.io/library/app:v1']);
  t.equal(run.code, 1, 'exit 1');
  t.match(run.stderr, `node ${tier.nodes[0]!.url}: FAILED ghcr.io/library/app:v1: upstream ghcr.io is not configured on this node`);
  t.match(run.stderr, 'warm on 0/1 nodes, 1 failures');
});

t.test('prefetch --nodes exits 1 with the reason when the nodes are not warm by --timeout', async (t) => {
  const tier = await startTiers(t, { nodes: 0 });
  await setImage(tier, 'preheat-timeout');
  const config = await cliConfig(t, tier);
  const started = Date.now();
  const run = await stevedoreCli(['prefetch', '--config', config, '--nodes', 'all', '--timeout', '3s', 'library/app:v1']);
  t.equal(run.code, 1, 'exit 1');
  t.match(run.stderr, /timed out after 3s: warm on 0\/0 nodes \(0 live\)/);
  t.ok(Date.now() - started < 60_000, 'it gave up');
});
