// Two replicas sharing Redis metadata agree on an upstream's cool-down and on tag freshness.
import t from 'tap';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { startRedis } from '../fixtures/redis.js';
import { startRegistry } from '../fixtures/registry.js';
import { FakeClock, startStevedore } from '../fixtures/stevedore.js';

t.test('replicas sharing Redis share cool-downs and tag freshness', async (t) => {
  const redis = await startRedis(t);
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  await pushImage(reg.directUrl, 'library/app', 'v1', buildDockerImage('shared-metadata/v1', { layers: 1 }));
  const clock = new FakeClock();
  const opts = { upstreams: { 'docker.io': { url: reg.url } }, clock, config: { metadata: { redis: redis.url }, cache: { tagTTL: '5m' } } };
  const a = await startStevedore(t, opts);
  const b = await startStevedore(t, opts);

  await t.test('a tag revalidated by one replica is fresh for the other', async (t) => {
    // Each replica has its own store, so each fetches the manifest once.
    t.equal((await fetch(`${a.url}/v2/docker.io/library/app/manifests/v1`)).status, 200);
    t.equal((await fetch(`${b.url}/v2/docker.io/library/app/manifests/v1`)).status, 200);
    clock.advance(6 * 60_000);
    reg.resetCounts();
    const ra = await fetch(`${a.url}/v2/docker.io/library/app/manifests/v1`);
    t.equal(ra.headers.get('x-cache'), 'revalidated', 'replica a revalidates after the TTL');
    const rb = await fetch(`${b.url}/v2/docker.io/library/app/manifests/v1`);
    t.equal(rb.headers.get('x-cache'), 'hit', 'replica b trusts the confirmation a wrote to Redis');
    t.equal(reg.count('HEAD', /.*/), 1, 'one HEAD for both replicas');
    t.equal(reg.count('GET', /.*/), 0);
  });

  await t.test('a 429 seen by one replica cools the upstream down for both', async (t) => {
    reg.setFault({ kind: 'status', status: 429, headers: { 'Retry-After': '300' }, body: '{"errors":[{"code":"TOOMANYREQUESTS","message":"x"}]}' });
    reg.resetCounts();
    const first = await fetch(`${a.url}/v2/docker.io/library/app/manifests/new1`);
    t.equal(first.status, 429);
    t.equal(reg.count('*', /.*/), 1, 'replica a met the 429');
    const second = await fetch(`${b.url}/v2/docker.io/library/app/manifests/new2`);
    t.equal(second.status, 429, 'replica b answers 429 too');
    t.ok(Number(second.headers.get('retry-after')) > 0);
    t.equal(reg.count('*', /.*/), 1, 'without contacting the upstream');
  });
});
