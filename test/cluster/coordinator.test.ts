// The coordinator contract (coordinator-contract.ts), run against both coordinators: in-process,
// and Redis (a real redis-server) as replicas use it; then what only Redis can show: a holder that
// stopped renewing loses its lease and cannot touch its successor's, whatever else is published on
// the invalidation channel is dropped, and a replica started while Redis is down joins when it
// comes up.
import t, { type Test } from 'tap';
import pino from 'pino';
import type { BusMessage } from '../../lib/cluster/coordinator.js';
import { InProcessCoordinator } from '../../lib/cluster/in-process.js';
import { RedisCoordinator } from '../../lib/cluster/redis/coordinator.js';
import { startRedis } from '../fixtures/redis.js';
import { coordinatorContract, sleep } from './coordinator-contract.js';

const log = pino({ level: 'silent' });
const fresh = (): string => `test:${Math.random().toString(36).slice(2)}:`;

coordinatorContract(t, 'in-process coordinator', async () => ({
  replicas: async (t) => {
    // One process: both "replicas" are the same coordinator.
    const c = new InProcessCoordinator();
    t.teardown(() => c.close());
    return { a: c, b: c, ns: fresh() };
  },
}));

/** Two coordinators (two replicas) on one redis-server, closed when `t` ends. */
async function redisPair(t: Test, url: string): Promise<{ a: RedisCoordinator; b: RedisCoordinator; ns: string }> {
  const [a, b] = [await RedisCoordinator.open(url, log), await RedisCoordinator.open(url, log)];
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  return { a, b, ns: fresh() };
}

coordinatorContract(t, 'redis coordinator', async (group) => {
  const r = await startRedis(group);
  return {
    replicas: async (t) => {
      const pair = await redisPair(t, r.url);
      await pair.a.values.clear();
      return pair;
    },
    outage: { stop: () => r.stop({ hard: true }), restart: () => r.restart() },
  };
});

t.test('redis: a holder that stopped renewing loses the lease to a taker, and cannot release the taker\'s', async (t) => {
  const r = await startRedis(t);
  const { a, ns } = await redisPair(t, r.url);
  const c = a.scope(ns).leases;
  const old = await c.acquire('dl', 200, 'old');
  // A holder frozen (GC pause, partition) for longer than the TTL: simulated by deleting its key
  // as expiry would, then another replica takes it.
  await a.link.client.del(`${ns}dl`);
  const taker = await c.acquire('dl', 5_000, 'new');
  t.ok(taker, 'the lease is taken once it lapsed');
  await sleep(250);
  t.equal(old!.lost.aborted, true, 'the old holder learns on its next renewal that it lost the lease');
  await old!.release();
  t.same(await c.read('dl'), { token: taker!.token, value: 'new' }, "the old holder's release leaves the taker's lease alone");
  t.equal(await old!.publish('stale'), false, 'and it cannot publish over it');
  await taker!.release();
});

t.test('redis: keys keep their names (leases under the namespace, the index under idx:, the bus on <namespace>tags)', async (t) => {
  const r = await startRedis(t);
  const { a, b, ns } = await redisPair(t, r.url);
  const held = await a.scope(ns).leases.acquire('blob:sha256:ab', 5_000, '{"owner":"r1"}');
  t.match(String(await a.link.client.get(`${ns}blob:sha256:ab`)), new RegExp(`^${held!.token} \\{"owner":"r1"\\}$`));
  await a.scope(ns).index.update({ added: new Map([['sha256:ab', 12]]), forgotten: new Set(), used: [], at: 7 });
  t.equal(await a.link.client.get(`${ns}idx:total`), '12');
  t.equal(await a.link.client.hGet(`${ns}idx:size`, 'sha256:ab'), '12');
  await a.scope(ns).directory.announce(['sha256:ab'], 'http://10.0.0.9:5000', 99, 60_000);
  t.equal(await a.link.client.zScore(`${ns}has:sha256:ab`, 'http://10.0.0.9:5000'), 99);
  const got: string[] = [];
  await b.scope(ns).bus.subscribe((m) => got.push('tag' in m ? m.tag : m.id));
  await a.link.client.publish(`${ns}tags`, JSON.stringify({ from: 'x', upstream: 'u', name: 'n', tag: 'by-name' }));
  for (let i = 0; i < 100 && got.length === 0; i++) await sleep(20);
  t.same(got, ['by-name']);
  await held!.release();
});

t.test('redis: what else is published on the invalidation channel is dropped', async (t) => {
  const r = await startRedis(t);
  const { a, b, ns } = await redisPair(t, r.url);
  const got: BusMessage[] = [];
  await b.scope(ns).bus.subscribe((m) => got.push(m));
  for (const junk of ['not json', '[]', 'null', '{"upstream":"u","name":"n","tag":"t"}', '{"from":1,"upstream":"u","name":"n","tag":"t"}', '{"from":"x","upstream":"u","name":["n"],"tag":"t"}', '{"kind":"warm-mark","from":"x","id":"../x"}', '{"kind":"other","from":"x","id":"0123456789abcdef"}']) {
    await a.link.client.publish(`${ns}tags`, junk);
  }
  const good = { from: 'x', upstream: 'docker.io', name: 'library/redis', tag: '7' };
  await a.scope(ns).bus.publish(good);
  for (let i = 0; i < 100 && got.length === 0; i++) await sleep(20);
  await sleep(100);
  t.same(got, [good], 'only the well-formed invalidation is delivered');
});

t.test('redis: a replica started while Redis is down serves alone at once, and joins when it answers', async (t) => {
  const r = await startRedis(t);
  await r.stop({ hard: true });
  const started = Date.now();
  const a = await RedisCoordinator.open(r.url, log, 500);
  t.teardown(() => a.close());
  t.ok(Date.now() - started < 3_000, 'open does not wait for Redis');
  t.equal(a.available(), false);
  const ns = fresh();
  await a.values.set('tag:early', { at: 1 }, 60_000);
  t.same(await a.values.get('tag:early'), { at: 1 }, 'values answer from memory');
  const got: BusMessage[] = [];
  await a.scope(ns).bus.subscribe((m) => got.push(m));
  await r.restart();
  for (let i = 0; i < 200 && !a.available(); i++) await sleep(50);
  t.equal(a.available(), true, 'joined');
  const held = await a.scope(ns).leases.acquire('evict', 1_000);
  t.ok(held, 'leases work');
  await held!.release();
  const b = await RedisCoordinator.open(r.url, log);
  t.teardown(() => b.close());
  const m = { from: 'b', upstream: 'u', name: 'n', tag: 't' };
  for (let i = 0; i < 100 && got.length === 0; i++) {
    await b.scope(ns).bus.publish(m);
    await sleep(100);
  }
  t.same(got[0], m, 'the subscription made while Redis was down completes when it answers');
});

t.test('redis: a coordinator closed while Redis is down (subscribed, reconnecting) closes at once', async (t) => {
  const r = await startRedis(t);
  const a = await RedisCoordinator.open(r.url, log);
  await a.scope(fresh()).bus.subscribe(() => undefined);
  await r.stop({ hard: true });
  for (let i = 0; i < 100 && a.available(); i++) await sleep(20);
  t.equal(a.available(), false, 'it saw Redis go');
  const started = Date.now();
  const closed = await Promise.race([a.close().then(() => true), sleep(5_000).then(() => false)]);
  t.ok(closed, 'close() resolved');
  t.ok(Date.now() - started < 1_500, `within a second or so (${Date.now() - started} ms)`);
});
