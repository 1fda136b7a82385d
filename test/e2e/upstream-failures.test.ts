// Whatever the upstream does, what was pulled before keeps pulling, and the upstream's quota is
// spent only on real changes. A real CNCF distribution upstream; its counting proxy plays the
// faults it will not produce on demand (429 with Retry-After, 503s, hanging).
import path from 'node:path';
import t, { type Test } from 'tap';
import { startContainerd } from '../fixtures/containerd.js';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';
import { readDirImage, skopeoCopy } from '../fixtures/skopeo.js';
import { FakeClock, startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';

const MIN = 60_000;
const TOO_MANY = JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'pull rate limit' }] });

async function getJson(url: string, method = 'GET'): Promise<{ status: number; headers: Headers; body: { errors?: Array<{ code: string; message: string }> } & Record<string, unknown> }> {
  const res = await fetch(url, { method });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as never) : ({} as never) };
}

async function setup(t: Test, config: Record<string, unknown> = {}): Promise<{
  reg: Registry;
  sd: Stevedore;
  clock: FakeClock;
  img: ReturnType<typeof buildDockerImage>;
}> {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage(`upstream-failures/${t.name}`, { layers: 2 });
  await pushImage(reg.directUrl, 'library/app', 'v1', img);
  await pushImage(reg.directUrl, 'library/app', 'v2', buildDockerImage(`upstream-failures/${t.name}/v2`, { layers: 1 }));
  const clock = new FakeClock();
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    clock,
    config: { cache: { tagTTL: '5m' }, ...config },
  });
  return { reg, sd, clock, img };
}

async function skopeoPull(t: Test, ref: string): Promise<string> {
  const dir = path.join(await tmpDir(), 'img');
  const r = await skopeoCopy(ref, `dir:${dir}`);
  t.equal(r.code, 0, r.stderr);
  return dir;
}

t.test('rate-limited (429): stored tags keep pulling, the cool-down sends nothing upstream', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const { reg, sd, clock, img } = await setup(t);
  const ctrd = await ctrdP;
  const hostsDir = ctrd.writeHostsToml('docker.io', sd.url);
  t.equal((await ctrd.pull('docker.io/library/app:v1', { hostsDir })).code, 0, 'warm pull with containerd');
  await skopeoPull(t, `docker://${sd.host}/docker.io/library/app:v1`);
  await ctrd.removeImage('docker.io/library/app:v1');

  clock.advance(6 * MIN); // past the tag TTL: the next pull wants to revalidate
  reg.setFault({ kind: 'status', status: 429, headers: { 'Retry-After': '120' }, body: TOO_MANY });
  reg.resetCounts();

  const dir = await skopeoPull(t, `docker://${sd.host}/docker.io/library/app:v1`);
  t.ok(readDirImage(dir).manifest.equals(img.manifest.data), 'skopeo pull by tag succeeded with the stored image');
  t.equal(reg.count('GET', /.*/), 0, 'no GET reached the upstream (a failed HEAD never falls back to GET)');
  t.equal(reg.count('HEAD', /\/manifests\/v1/), 1, 'one HEAD met the 429, then the cool-down began');

  const r = await ctrd.pull('docker.io/library/app:v1', { hostsDir });
  t.equal(r.code, 0, `containerd pull by tag succeeded: ${r.stderr}`);
  t.equal(await ctrd.imageDigest('docker.io/library/app:v1'), img.manifest.digest);

  const stale = await fetch(`${sd.url}/v2/library/app/manifests/v1?ns=docker.io`);
  t.equal(stale.status, 200);
  t.equal(stale.headers.get('warning'), '110 - "Response is Stale"', 'marked stale');
  t.equal(stale.headers.get('x-cache'), 'stale');

  const never = await getJson(`${sd.url}/v2/library/app/manifests/v2?ns=docker.io`);
  t.equal(never.status, 429, 'a never-pulled tag: 429');
  t.equal(never.body.errors?.[0]?.code, 'TOOMANYREQUESTS');
  t.ok(Number(never.headers.get('retry-after')) > 0 && Number(never.headers.get('retry-after')) <= 120, `Retry-After passed on (${never.headers.get('retry-after')})`);
  t.equal(reg.count('*', /.*/), 1, 'during the cool-down the upstream saw nothing more');

  clock.advance(121_000);
  reg.setFault(null);
  reg.resetCounts();
  const after = await fetch(`${sd.url}/v2/library/app/manifests/v1?ns=docker.io`);
  t.equal(after.headers.get('x-cache'), 'revalidated', 'after Retry-After the tag is revalidated again');
  t.equal(reg.count('HEAD', /\/manifests\/v1/), 1);
  t.equal(reg.count('GET', /.*/), 0, 'with a HEAD only');
});

t.test('upstream refusing connections: stored content pulls, the rest fails clearly, tags/list is the last full list', async (t) => {
  const { reg, sd, clock, img } = await setup(t);
  await skopeoPull(t, `docker://${sd.host}/docker.io/library/app:v1`);
  const list = await getJson(`${sd.url}/v2/docker.io/library/app/tags/list`);
  t.same(list.body.tags, ['v1', 'v2']);
  await reg.stop();
  clock.advance(6 * MIN);

  const dir = await skopeoPull(t, `docker://${sd.host}/docker.io/library/app:v1`);
  t.ok(readDirImage(dir).manifest.equals(img.manifest.data), 'stored image pulls by tag');
  const never = await getJson(`${sd.url}/v2/docker.io/library/app/manifests/v2`);
  t.equal(never.status, 502);
  t.equal(never.body.errors?.[0]?.code, 'UPSTREAM_UNAVAILABLE');
  t.match(never.body.errors?.[0]?.message, /docker\.io.*ECONNREFUSED/, 'names the upstream and the cause');
  const stale = await getJson(`${sd.url}/v2/docker.io/library/app/tags/list`);
  t.equal(stale.status, 200);
  t.same(stale.body.tags, ['v1', 'v2'], 'the last full list, not the tags that happen to be stored');
  t.equal(stale.headers.get('warning'), '110 - "Response is Stale"');
  const unknownRepo = await getJson(`${sd.url}/v2/docker.io/library/other/tags/list`);
  t.equal(unknownRepo.status, 502, 'no list ever fetched: an error, never a partial list');
});

t.test('upstream hanging: stored content answers within the timeout, the rest gets 504', async (t) => {
  const { reg, sd, clock } = await setup(t, { timeouts: { firstByte: '500ms' } });
  await skopeoPull(t, `docker://${sd.host}/docker.io/library/app:v1`);
  await getJson(`${sd.url}/v2/docker.io/library/app/tags/list`);
  reg.setFault({ kind: 'hang' });
  clock.advance(6 * MIN);

  const started = performance.now();
  const stored = await fetch(`${sd.url}/v2/docker.io/library/app/manifests/v1`);
  const ms = performance.now() - started;
  t.equal(stored.status, 200);
  t.equal(stored.headers.get('warning'), '110 - "Response is Stale"');
  t.ok(ms < 2_000, `answered after the 500 ms first-byte timeout (${ms.toFixed(0)} ms)`);
  const never = await getJson(`${sd.url}/v2/docker.io/library/app/manifests/v2`);
  t.equal(never.status, 504);
  t.equal(never.body.errors?.[0]?.code, 'UPSTREAM_TIMEOUT');
  const list = await getJson(`${sd.url}/v2/docker.io/library/app/tags/list`);
  t.same(list.body.tags, ['v1', 'v2']);
  t.equal(list.headers.get('warning'), '110 - "Response is Stale"');
});

t.test('circuit breaker: after repeated failures nothing is sent until it has been open long enough', async (t) => {
  const { reg, sd, clock } = await setup(t, { upstreamPolicy: { breakerFailures: 3, breakerOpenFor: '30s' } });
  reg.setFault({ kind: 'status', status: 503, body: '' });
  for (const tag of ['a', 'b', 'c']) {
    const r = await getJson(`${sd.url}/v2/docker.io/library/app/manifests/${tag}`);
    t.equal(r.status, 502, `failure ${tag} reaches the upstream and maps to 502`);
  }
  t.equal(reg.count('*', /.*/), 3);
  const open = await getJson(`${sd.url}/v2/docker.io/library/app/manifests/d`);
  t.equal(open.status, 502);
  t.match(open.body.errors?.[0]?.message, /circuit open/);
  t.ok(Number(open.headers.get('retry-after')) > 0, 'says when to retry');
  t.equal(reg.count('*', /.*/), 3, 'the open circuit sent nothing upstream');
  clock.advance(31_000);
  reg.setFault(null);
  const ok = await fetch(`${sd.url}/v2/docker.io/library/app/manifests/v1`);
  t.equal(ok.status, 200, 'after breakerOpenFor one request goes through, and succeeds');
  t.equal(reg.count('*', /.*/), 4);
});

t.test('low quota: ratelimit-remaining at the watermark stretches tag TTLs', async (t) => {
  const { reg, sd, clock } = await setup(t, { upstreamPolicy: { quotaLowWatermark: 10, quotaTTLMultiplier: 12 } });
  reg.setFault({ kind: 'headers', headers: { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '5;w=21600' } });
  t.equal((await fetch(`${sd.url}/v2/docker.io/library/app/manifests/v1`)).status, 200);
  reg.resetCounts();
  clock.advance(6 * MIN); // past the 5 min TTL, well within 12 x 5 min
  const hit = await fetch(`${sd.url}/v2/docker.io/library/app/manifests/v1`);
  t.equal(hit.headers.get('x-cache'), 'hit', 'not revalidated while the quota is low');
  t.equal(reg.count('*', /.*/), 0, 'no quota spent');
  clock.advance(55 * MIN);
  const reval = await fetch(`${sd.url}/v2/docker.io/library/app/manifests/v1`);
  t.equal(reval.headers.get('x-cache'), 'revalidated', 'past the stretched TTL: revalidated');
  t.equal(reg.count('HEAD', /.*/), 1);
});

t.test('offline mode: a full pull of a stored image sends nothing upstream', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const { reg, sd, img } = await setup(t);
  await skopeoPull(t, `docker://${sd.host}/docker.io/library/app:v1`);
  await sd.stop();
  const off = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    storagePath: sd.storagePath,
    config: { offline: true },
  });
  reg.resetCounts();
  const dir = await skopeoPull(t, `docker://${off.host}/docker.io/library/app:v1`);
  t.ok(readDirImage(dir).manifest.equals(img.manifest.data), 'skopeo pulled the stored image');
  const ctrd = await ctrdP;
  const r = await ctrd.pull('docker.io/library/app:v1', { hostsDir: ctrd.writeHostsToml('docker.io', off.url) });
  t.equal(r.code, 0, `containerd pulled it: ${r.stderr}`);
  t.equal(reg.count('*', /.*/), 0, 'the upstream saw zero requests');
  const never = await getJson(`${off.url}/v2/docker.io/library/app/manifests/v2`);
  t.equal(never.status, 503);
  t.equal(never.body.errors?.[0]?.code, 'OFFLINE');
  t.match(never.body.errors?.[0]?.message, /offline/);
  const blob = await getJson(`${off.url}/v2/docker.io/library/app/blobs/sha256:${'0'.repeat(64)}`);
  t.equal(blob.body.errors?.[0]?.code, 'OFFLINE', 'an unknown blob: offline error too');
  t.equal(reg.count('*', /.*/), 0, 'still zero');
});
