// One contract suite for the metadata store, run against every backend: in-memory keyv and a real
// Redis (so replicas sharing it agree on tag freshness, cool-downs, breakers and quotas).
import t, { type Test } from 'tap';
import pino from 'pino';
import { InProcessCoordinator } from '../../lib/cluster/in-process.js';
import { RedisCoordinator } from '../../lib/cluster/redis/coordinator.js';
import { Metadata } from '../../lib/metadata/metadata.js';
import { UpstreamHealth } from '../../lib/metadata/upstream-health.js';
import { startRedis } from '../fixtures/redis.js';

const policy = { retryAfterDefaultMs: 60_000, breakerFailures: 3, breakerOpenMs: 30_000, quotaLowWatermark: 10 };

function contract(name: string, make: (t: Test) => Promise<{ a: Metadata; b: Metadata }>): void {
  t.test(name, async (t) => {
    await t.test('a tag confirmation is read back with its time and digest', async (t) => {
      const { a } = await make(t);
      t.equal(await a.tagCheckedAt('docker.io', 'library/alpine', '3.19'), null);
      await a.setTagChecked('docker.io', 'library/alpine', '3.19', 'sha256:abc', 1234);
      t.same(await a.tagCheckedAt('docker.io', 'library/alpine', '3.19'), { at: 1234, digest: 'sha256:abc' });
      t.equal(await a.tagCheckedAt('docker.io', 'library/alpine', '3.20'), null, 'other tags unaffected');
    });

    await t.test('a second instance on the same backend sees what the first wrote', async (t) => {
      const { a, b } = await make(t);
      await a.setTagChecked('ghcr.io', 'org/app', 'v1', 'sha256:def', 99);
      t.same(await b.tagCheckedAt('ghcr.io', 'org/app', 'v1'), { at: 99, digest: 'sha256:def' });
    });

    await t.test('a 429 cools the upstream down for Retry-After, for every replica', async (t) => {
      const { a, b } = await make(t);
      let now = 1_000_000;
      const ha = new UpstreamHealth(a, policy, () => now);
      const hb = new UpstreamHealth(b, policy, () => now);
      t.same(await hb.gate('docker.io'), { open: true });
      t.equal(await ha.rateLimited('docker.io', 20), 20);
      const g = await hb.gate('docker.io');
      t.match(g, { open: false, kind: 'rate_limited', retryAfterSec: 20 });
      now += 21_000;
      t.same(await hb.gate('docker.io'), { open: true }, 'open again after Retry-After');
    });

    await t.test('a 429 without Retry-After cools down for the configured default', async (t) => {
      const { a } = await make(t);
      let now = 5_000_000;
      const h = new UpstreamHealth(a, policy, () => now);
      t.equal(await h.rateLimited('quay.io', undefined), 60);
      now += 59_000;
      t.match(await h.gate('quay.io'), { open: false, kind: 'rate_limited' });
    });

    await t.test('consecutive failures open the breaker; a success resets the count', async (t) => {
      const { a } = await make(t);
      let now = 2_000_000;
      const h = new UpstreamHealth(a, policy, () => now);
      await h.failed('ghcr.io');
      await h.failed('ghcr.io');
      await h.succeeded('ghcr.io');
      await h.failed('ghcr.io');
      await h.failed('ghcr.io');
      t.same(await h.gate('ghcr.io'), { open: true }, 'two in a row is below the threshold of three');
      await h.failed('ghcr.io');
      t.match(await h.gate('ghcr.io'), { open: false, kind: 'unavailable', retryAfterSec: 30 });
      now += 30_001;
      t.same(await h.gate('ghcr.io'), { open: true }, 'half-open after breakerOpenFor');
    });

    await t.test('an open breaker says why the last failure failed', async (t) => {
      const { a, b } = await make(t);
      const h = new UpstreamHealth(a, policy, () => 3_000_000);
      await h.failed('ghcr.io', undefined, 'upstream ghcr.io answered 503');
      await h.failed('ghcr.io', undefined, 'upstream ghcr.io unreachable (ECONNREFUSED)');
      await h.failed('ghcr.io');
      t.match(await new UpstreamHealth(b, policy, () => 3_000_000).gate('ghcr.io'), {
        open: false,
        reason: 'circuit open after 3 consecutive failures (the last: upstream ghcr.io unreachable (ECONNREFUSED))',
      });
    });

    await t.test('the quota is low at or below the watermark', async (t) => {
      const { a, b } = await make(t);
      const h = new UpstreamHealth(a, policy, () => 0);
      t.equal(await h.quotaState('docker.io'), null);
      await h.quota('docker.io', 11, 100, 21600);
      t.match(await new UpstreamHealth(b, policy, () => 0).quotaState('docker.io'), { remaining: 11, limit: 100, low: false });
      await h.quota('docker.io', 10, 100, 21600);
      t.match(await h.quotaState('docker.io'), { remaining: 10, low: true });
    });
  });
}

contract('in-memory metadata', async (t) => {
  // In-memory keyv is per process: both "replicas" share one instance.
  const c = new InProcessCoordinator();
  t.teardown(() => c.close());
  const m = new Metadata(c.values);
  return { a: m, b: m };
});

// One redis-server for the file, stopped when the file's tests end.
const root = t;
let redisUrl: Promise<string> | null = null;
contract('redis metadata', async (t) => {
  redisUrl ??= startRedis(root).then((r) => r.url);
  const url = await redisUrl;
  const ca = await RedisCoordinator.open(url, pino({ level: 'silent' }));
  const cb = await RedisCoordinator.open(url, pino({ level: 'silent' }));
  const a = new Metadata(ca.values);
  const b = new Metadata(cb.values);
  t.teardown(async () => {
    await ca.close();
    await cb.close();
  });
  await a.clearForTests();
  return { a, b };
});
