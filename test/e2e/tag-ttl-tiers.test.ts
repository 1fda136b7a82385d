// Tag TTL tiers (cache.tagTTLPolicies) against a real CNCF distribution, with a FakeClock: `latest`
// is revalidated after 1 minute, semver tags never once stored, every other tag after the default
// tagTTL (5 minutes). Upstream requests are counted by the registry's counting proxy.
import path from 'node:path';
import t from 'tap';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage } from '../fixtures/images.js';
import { ociErrors, rawRequest, type RawResponse } from '../fixtures/http-client.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';
import { FakeClock, startStevedore } from '../fixtures/stevedore.js';
import { getTag, assertServes } from '../fixtures/tags.js';
import { tmpDir } from '../fixtures/util.js';

const SEC = 1_000;
const MIN = 60 * SEC;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const STALE = '110 - "Response is Stale"';

/** The tiers of the task: latest 1 minute, semver forever, the rest cache.tagTTL. */
const TIERS = { tagTTL: '5m', tagTTLPolicies: [{ tag: 'latest', ttl: '1m' }, { tag: 'semver', ttl: 'forever' }] };

/** Upstream manifest requests for one tag of team/app since the last reset. */
function asked(reg: Registry, tag: string): { head: number; get: number } {
  const re = new RegExp(`^/v2/team/app/manifests/${tag.replace(/\./g, '\\.')}$`);
  return { head: reg.count('HEAD', re), get: reg.count('GET', re) };
}

t.test('tiers: latest 1 minute, semver forever, other tags the default 5 minutes', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const imgs = {
    latest: buildDockerImage('tiers/latest', { layers: 1 }),
    'v1.2.3': buildDockerImage('tiers/v1.2.3', { layers: 1 }),
    '1.2.3-rc1': buildDockerImage('tiers/1.2.3-rc1', { layers: 1 }),
    stable: buildDockerImage('tiers/stable', { layers: 1 }),
  };
  const tags = Object.keys(imgs) as Array<keyof typeof imgs>;
  for (const tag of tags) await pushImage(reg.directUrl, 'team/app', tag, imgs[tag]);
  const clock = new FakeClock();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, clock, config: { cache: TIERS } });

  await t.test('the first pull of each tag GETs its manifest once', async (t) => {
    reg.resetCounts();
    for (const tag of tags) {
      assertServes(t, await getTag(sd, 'team/app', tag), imgs[tag], 'miss');
      t.same(asked(reg, tag), { head: 0, get: 1 }, `${tag}: one GET`);
    }
  });

  await t.test('within a minute no tag is asked about upstream', async (t) => {
    clock.advance(59 * SEC);
    reg.resetCounts();
    for (const tag of tags) assertServes(t, await getTag(sd, 'team/app', tag), imgs[tag], 'hit');
    t.equal(reg.requests.length, 0, 'no upstream request');
  });

  await t.test('past one minute latest is revalidated with one HEAD, the other tags are not', async (t) => {
    clock.advance(2 * SEC); // 1m01s after the first pull
    reg.resetCounts();
    assertServes(t, await getTag(sd, 'team/app', 'latest'), imgs.latest, 'revalidated');
    t.equal(reg.count('HEAD', /manifests\/latest/), 1, 'one HEAD for latest');
    for (const tag of ['v1.2.3', '1.2.3-rc1', 'stable'] as const) assertServes(t, await getTag(sd, 'team/app', tag), imgs[tag], 'hit');
    t.equal(reg.requests.length, 1, 'nothing else reached the upstream');
  });

  await t.test('a tag no tier matches keeps the default: trusted at 4m59s, revalidated past 5 minutes', async (t) => {
    clock.advance(3 * MIN + 58 * SEC); // 4m59s after the first pull
    reg.resetCounts();
    assertServes(t, await getTag(sd, 'team/app', 'stable'), imgs.stable, 'hit');
    t.same(asked(reg, 'stable'), { head: 0, get: 0 }, 'at 4m59s: not asked');
    clock.advance(2 * SEC);
    assertServes(t, await getTag(sd, 'team/app', 'stable'), imgs.stable, 'revalidated');
    t.same(asked(reg, 'stable'), { head: 1, get: 0 }, 'at 5m01s: one HEAD');
  });

  await t.test('latest is revalidated again every minute', async (t) => {
    reg.resetCounts();
    for (let i = 0; i < 3; i++) {
      clock.advance(61 * SEC);
      assertServes(t, await getTag(sd, 'team/app', 'latest'), imgs.latest, 'revalidated');
    }
    t.equal(reg.count('HEAD', /manifests\/latest/), 3, 'one HEAD a minute');
    t.equal(reg.count('GET', /manifests\/latest/), 0, 'and no GET: it did not move');
  });

  await t.test('semver tags are never revalidated, hours and days later', async (t) => {
    reg.resetCounts();
    for (const later of [2 * HOUR, 20 * HOUR, 30 * DAY]) {
      clock.advance(later);
      assertServes(t, await getTag(sd, 'team/app', 'v1.2.3'), imgs['v1.2.3'], 'hit');
      assertServes(t, await getTag(sd, 'team/app', '1.2.3-rc1'), imgs['1.2.3-rc1'], 'hit');
    }
    t.equal(reg.count('*', /manifests\/(v1\.2\.3|1\.2\.3-rc1)/), 0, 'no request about them reached the upstream');
  });

  await t.test('a semver tag moved upstream keeps the digest first stored (forever means it)', async (t) => {
    await pushImage(reg.directUrl, 'team/app', 'v1.2.3', buildDockerImage('tiers/v1.2.3-rebuilt', { layers: 1 }));
    clock.advance(DAY);
    reg.resetCounts();
    assertServes(t, await getTag(sd, 'team/app', 'v1.2.3'), imgs['v1.2.3'], 'hit');
    t.equal(reg.requests.length, 0, 'no upstream request');
  });

  await t.test('with the upstream failing, a semver tag is served as a plain hit while latest goes stale', async (t) => {
    reg.setFault({ kind: 'status', status: 503, body: '' });
    t.teardown(() => reg.setFault(null));
    clock.advance(2 * MIN);
    reg.resetCounts();
    const semver = await getTag(sd, 'team/app', 'v1.2.3');
    assertServes(t, semver, imgs['v1.2.3'], 'hit');
    t.equal(semver.headers.warning, undefined, 'no Warning: the upstream was not asked');
    t.equal(reg.requests.length, 0, 'not asked');
    const latest = await getTag(sd, 'team/app', 'latest');
    assertServes(t, latest, imgs.latest, 'stale');
    t.equal(latest.headers.warning, STALE, 'latest was asked, and is served stale');
    t.equal(reg.requests.length, 1, 'one request: the HEAD for latest');
  });

  await t.test('a manifest pushed into the mirror replaces a semver tag at once', async (t) => {
    const seeded = buildDockerImage('tiers/v1.2.3-seeded', { layers: 1 });
    await pushImage(sd.url, 'docker.io/team/app', 'v1.2.3', seeded);
    assertServes(t, await getTag(sd, 'team/app', 'v1.2.3'), seeded, 'hit');
    clock.advance(30 * DAY);
    reg.resetCounts();
    assertServes(t, await getTag(sd, 'team/app', 'v1.2.3'), seeded, 'hit');
    t.equal(reg.requests.length, 0, 'and, a month later, still not revalidated');
  });

  await t.test('a manifest by digest is never revalidated (a digest names its bytes)', async (t) => {
    clock.advance(30 * DAY);
    reg.resetCounts();
    assertServes(t, await getTag(sd, 'team/app', imgs.stable.manifest.digest), imgs.stable, 'hit');
    t.equal(reg.requests.length, 0, 'no upstream request');
  });
});

t.test('a tier for one repository, named <upstream>/<name> whichever way the client wrote it', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const fast = buildDockerImage('tiers/fast', { layers: 1 });
  const slow = buildDockerImage('tiers/slow', { layers: 1 });
  await pushImage(reg.directUrl, 'library/fast', 'latest', fast);
  await pushImage(reg.directUrl, 'library/slow', 'latest', slow);
  const clock = new FakeClock();
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    clock,
    config: { cache: { tagTTL: '1h', tagTTLPolicies: [{ repository: 'docker.io/library/fast', tag: 'latest', ttl: '1m' }] } },
  });
  // Docker's registry-mirrors form: no prefix, one component (docker.io's library rule adds library/).
  const get = (name: string): Promise<RawResponse> => rawRequest(`${sd.url}/v2/${name}/manifests/latest`, { headers: { accept: MANIFEST_ACCEPT } });
  assertServes(t, await get('fast'), fast, 'miss');
  assertServes(t, await get('slow'), slow, 'miss');
  clock.advance(2 * MIN);
  reg.resetCounts();
  assertServes(t, await get('fast'), fast, 'revalidated');
  assertServes(t, await get('slow'), slow, 'hit');
  t.equal(reg.count('HEAD', '/v2/library/fast/manifests/latest'), 1, 'the matching repository: one HEAD');
  t.equal(reg.requests.length, 1, 'the other keeps the 1 h default: nothing asked');
});

t.test('a low quota stretches the tiers too: latest waits 12 minutes instead of 1', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('tiers/quota', { layers: 1 });
  await pushImage(reg.directUrl, 'team/app', 'latest', img);
  const clock = new FakeClock();
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    clock,
    config: { cache: TIERS, upstreamPolicy: { quotaLowWatermark: 10, quotaTTLMultiplier: 12 } },
  });
  reg.setFault({ kind: 'headers', headers: { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '5;w=21600' } });
  assertServes(t, await getTag(sd, 'team/app', 'latest'), img, 'miss');
  reg.resetCounts();
  clock.advance(2 * MIN);
  assertServes(t, await getTag(sd, 'team/app', 'latest'), img, 'hit');
  clock.advance(9 * MIN); // 11 minutes
  assertServes(t, await getTag(sd, 'team/app', 'latest'), img, 'hit');
  t.equal(reg.requests.length, 0, 'within 12 x 1 min: no quota spent');
  clock.advance(2 * MIN); // 13 minutes
  assertServes(t, await getTag(sd, 'team/app', 'latest'), img, 'revalidated');
  t.same(asked(reg, 'latest'), { head: 1, get: 0 }, 'past it: one HEAD');
});

t.test('after a restart a semver tag is still never revalidated, latest is', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const latest = buildDockerImage('tiers/restart/latest', { layers: 1 });
  const semver = buildDockerImage('tiers/restart/semver', { layers: 1 });
  await pushImage(reg.directUrl, 'team/app', 'latest', latest);
  await pushImage(reg.directUrl, 'team/app', '2.0.0', semver);
  const storagePath = path.join(await tmpDir(t, 'stevedore-tiers-'), 'data');
  const opts = { upstreams: { 'docker.io': { url: reg.url } }, storagePath, config: { cache: TIERS } };
  const first = await startStevedore(t, opts);
  assertServes(t, await getTag(first, 'team/app', 'latest'), latest, 'miss');
  assertServes(t, await getTag(first, 'team/app', '2.0.0'), semver, 'miss');
  await first.stop();

  // A new process: its in-memory metadata knows of no check; the store still holds both tags.
  const second = await startStevedore(t, opts);
  reg.resetCounts();
  assertServes(t, await getTag(second, 'team/app', '2.0.0'), semver, 'hit');
  t.same(asked(reg, '2.0.0'), { head: 0, get: 0 }, 'the stored semver tag: not asked');
  assertServes(t, await getTag(second, 'team/app', 'latest'), latest, 'revalidated');
  t.same(asked(reg, 'latest'), { head: 1, get: 0 }, 'latest: one HEAD');
});

t.test('offline with tiers: stored tags are served however old, the upstream is never asked', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const imgs = { latest: buildDockerImage('tiers/offline/latest', { layers: 1 }), stable: buildDockerImage('tiers/offline/stable', { layers: 1 }) };
  for (const [tag, img] of Object.entries(imgs)) await pushImage(reg.directUrl, 'team/app', tag, img);
  const storagePath = path.join(await tmpDir(t, 'stevedore-tiers-'), 'data');
  const online = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, storagePath, config: { cache: TIERS } });
  for (const [tag, img] of Object.entries(imgs)) assertServes(t, await getTag(online, 'team/app', tag), img, 'miss');
  await online.stop();

  const clock = new FakeClock();
  const offline = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, storagePath, clock, config: { cache: TIERS, offline: true } });
  reg.resetCounts();
  clock.advance(2 * DAY);
  assertServes(t, await getTag(offline, 'team/app', 'latest'), imgs.latest, 'hit');
  assertServes(t, await getTag(offline, 'team/app', 'stable'), imgs.stable, 'hit');
  const never = await getTag(offline, 'team/app', 'v9.9.9');
  t.equal(never.status, 503, 'a tag never stored: 503');
  t.equal(ociErrors(never)?.[0]?.code, 'OFFLINE');
  t.equal(reg.requests.length, 0, 'nothing reached the upstream');
});
