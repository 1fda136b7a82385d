// Tag freshness against a real CNCF distribution, with a FakeClock: a tag is trusted for
// cache.tagTTL, then revalidated with one HEAD (no GET when unchanged), refetched when it moved
// upstream, and served stale (Warning: 110) when the upstream is gone.
import t from 'tap';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage } from '../fixtures/images.js';
import { ociErrors, rawRequest } from '../fixtures/http-client.js';
import { startRegistry } from '../fixtures/registry.js';
import { FakeClock, startStevedore } from '../fixtures/stevedore.js';
import { getTag, assertServes, manifestRequests } from '../fixtures/tags.js';

const TTL_MS = 5 * 60_000;

t.test('tag revalidation with a fake clock', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const v1 = buildDockerImage('tag-revalidation/v1', { layers: 1 });
  const v2 = buildDockerImage('tag-revalidation/v2', { layers: 1 });
  await pushImage(reg.url, 'team/app', 'stable', v1);
  const clock = new FakeClock();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, clock, config: { cache: { tagTTL: '5m' } } });

  await t.test('the first pull by tag GETs the manifest once from the upstream', async (t) => {
    reg.resetCounts();
    assertServes(t, await getTag(sd, 'team/app', 'stable'), v1, 'miss');
    t.same(manifestRequests(reg, 'team/app'), { head: 0, get: 1, all: 1 }, 'one GET, nothing else');
  });

  await t.test('within the TTL a repeated GET makes no upstream request', async (t) => {
    clock.advance(TTL_MS - 1_000);
    reg.resetCounts();
    assertServes(t, await getTag(sd, 'team/app', 'stable'), v1, 'hit');
    t.equal(reg.requests.length, 0, 'no upstream request');
  });

  await t.test('past the TTL an unchanged tag costs exactly one HEAD and no GET', async (t) => {
    clock.advance(2_000);
    reg.resetCounts();
    assertServes(t, await getTag(sd, 'team/app', 'stable'), v1, 'revalidated');
    t.same(manifestRequests(reg, 'team/app'), { head: 1, get: 0, all: 1 }, 'one HEAD, no GET');
  });

  await t.test('after a revalidation the tag is fresh again for a whole TTL', async (t) => {
    clock.advance(TTL_MS - 1_000);
    reg.resetCounts();
    assertServes(t, await getTag(sd, 'team/app', 'stable'), v1, 'hit');
    t.equal(reg.requests.length, 0, 'no upstream request');
  });

  await t.test('a tag moved upstream is still served at its old digest until the TTL expires', async (t) => {
    await pushImage(reg.url, 'team/app', 'stable', v2);
    reg.resetCounts();
    assertServes(t, await getTag(sd, 'team/app', 'stable'), v1, 'hit');
    t.equal(reg.requests.length, 0, 'no upstream request');
  });

  await t.test('past the TTL a tag moved upstream is served at its new digest, for one HEAD and one GET', async (t) => {
    clock.advance(2_000);
    reg.resetCounts();
    assertServes(t, await getTag(sd, 'team/app', 'stable'), v2, 'miss');
    t.same(manifestRequests(reg, 'team/app'), { head: 1, get: 1, all: 2 }, 'one HEAD, one GET');
    t.equal(reg.count('GET', '/v2/team/app/manifests/stable'), 1, 'the GET was for that tag');
    reg.resetCounts();
    assertServes(t, await getTag(sd, 'team/app', 'stable'), v2, 'hit');
    t.equal(reg.requests.length, 0, 'then fresh: no upstream request');
  });

  await t.test('the old digest stays available by digest, from the store', async (t) => {
    reg.resetCounts();
    const r = await rawRequest(`${sd.url}/v2/docker.io/team/app/manifests/${v1.manifest.digest}`, { headers: { accept: MANIFEST_ACCEPT } });
    assertServes(t, r, v1, 'hit');
    t.equal(reg.requests.length, 0, 'no upstream request');
  });
});

t.test('an upstream gone past the TTL: the stored tag is served stale', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('tag-revalidation/stale', { layers: 1 });
  await pushImage(reg.url, 'team/stale', 'v1', img);
  const clock = new FakeClock();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, clock, config: { cache: { tagTTL: '5m' } } });

  const first = await getTag(sd, 'team/stale', 'v1');
  assertServes(t, first, img, 'miss');
  t.equal(first.headers.warning, undefined, 'a fresh answer has no Warning');
  await reg.stop();
  clock.advance(TTL_MS + 1_000);

  await t.test('a GET of the stored tag answers its manifest with Warning: 110', async (t) => {
    const r = await getTag(sd, 'team/stale', 'v1');
    assertServes(t, r, img, 'stale');
    t.equal(r.headers.warning, '110 - "Response is Stale"', 'Warning: 110');
  });

  await t.test('a HEAD of the stored tag answers digest and length with Warning: 110', async (t) => {
    const head = await rawRequest(`${sd.url}/v2/docker.io/team/stale/manifests/v1`, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
    t.equal(head.status, 200, 'HEAD: 200');
    t.equal(head.headers['docker-content-digest'], img.manifest.digest, 'HEAD: Docker-Content-Digest');
    t.equal(head.headers['content-length'], String(img.manifest.size), 'HEAD: Content-Length');
    t.equal(head.headers.warning, '110 - "Response is Stale"', 'HEAD: Warning: 110');
  });

  await t.test('a tag never stored answers 502 naming the upstream', async (t) => {
    const r = await getTag(sd, 'team/stale', 'v2');
    t.equal(r.status, 502);
    const errors = ociErrors(r);
    t.equal(errors?.[0]?.code, 'UPSTREAM_UNAVAILABLE');
    t.match(errors?.[0]?.message ?? '', /docker\.io/, 'the message names the upstream');
  });
});
