// One contract for leases, run against both coordinators: in-process, and Redis (a real
// redis-server) as replicas use it. A lease is exclusive, renewed while held, taken over only once
// it lapsed, and a holder that lost it can neither extend nor delete its successor's.
import t, { type Test } from 'tap';
import pino from 'pino';
import { InProcessCoordinator, RedisCoordinator, type Coordinator } from '../../lib/cluster/coordinator.js';
import { RedisLink } from '../../lib/cluster/redis-link.js';
import { startRedis } from '../fixtures/redis.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `setup` runs once for the group and returns what makes a fresh pair for each test. */
function contract(name: string, setup: (t: Test) => Promise<(t: Test) => Promise<{ a: Coordinator; b: Coordinator }>>): void {
  t.test(name, async (t) => {
    const make = await setup(t);
    await t.test('a lease is exclusive while its holder renews it', async (t) => {
      const { a, b } = await make(t);
      const held = await a.acquire('k1', 300, 'first');
      t.ok(held, 'the first asker gets it');
      t.equal(await b.acquire('k1', 300), null, 'another does not');
      await sleep(700);
      t.equal(await b.acquire('k1', 300), null, 'still not, after twice its TTL: renewed in the background');
      t.same(await b.read('k1'), { token: held!.token, value: 'first' }, 'anyone reads who holds it and what it published');
      await held!.release();
      t.equal(await b.read('k1'), null, 'released: nobody holds it');
      const next = await b.acquire('k1', 300);
      t.ok(next, 'and it can be taken');
      await next!.release();
    });

    await t.test('publish replaces what the holder says, and only the holder can', async (t) => {
      const { a, b } = await make(t);
      const held = await a.acquire('k2', 1_000, '{"size":null}');
      t.equal(await held!.publish('{"size":42}'), true);
      t.equal((await b.read('k2'))!.value, '{"size":42}');
      await held!.release();
      t.equal(await held!.publish('{"size":1}'), false, 'a released lease publishes nothing');
      t.equal(await b.read('k2'), null);
    });

    await t.test('a note expires after its TTL', async (t) => {
      const { a, b } = await make(t);
      await a.setNote('why', 'upstream said 404', 200);
      t.equal(await b.getNote('why'), 'upstream said 404');
      await sleep(400);
      t.equal(await b.getNote('why'), null);
    });
  });
}

contract('in-process coordinator', async () => {
  const c = new InProcessCoordinator();
  return async () => ({ a: c, b: c });
});

/** Two links to one redis-server, closed when the test `t` ends. */
async function redisPair(t: Test, url: string): Promise<{ a: RedisCoordinator; b: RedisCoordinator; la: RedisLink }> {
  const log = pino({ level: 'silent' });
  const [la, lb] = [await RedisLink.open(url, log), await RedisLink.open(url, log)];
  t.teardown(async () => {
    await la.close();
    await lb.close();
  });
  const prefix = `test:${Math.random().toString(36).slice(2)}:`;
  return { a: new RedisCoordinator(la, prefix), b: new RedisCoordinator(lb, prefix), la };
}

contract('redis coordinator', async (group) => {
  const r = await startRedis(group);
  return async (t) => redisPair(t, r.url);
});

t.test('redis: a holder that stopped renewing loses the lease to a taker, and cannot release the taker\'s', async (t) => {
  const r = await startRedis(t);
  const { a: c, la: link } = await redisPair(t, r.url);
  const old = await c.acquire('dl', 200, 'old');
  // A holder frozen (GC pause, partition) for longer than the TTL: simulated by deleting its key
  // as expiry would, then another replica takes it.
  const [key] = await link.client.keys('test:*:dl');
  await link.client.del(key!);
  const taker = await c.acquire('dl', 5_000, 'new');
  t.ok(taker, 'the lease is taken once it lapsed');
  await sleep(250);
  t.equal(old!.lost.aborted, true, 'the old holder learns on its next renewal that it lost the lease');
  await old!.release();
  t.same(await c.read('dl'), { token: taker!.token, value: 'new' }, "the old holder's release leaves the taker's lease alone");
  t.equal(await old!.publish('stale'), false, 'and it cannot publish over it');
  await taker!.release();
});

t.test('redis unreachable: acquire and read fail at once (no queue), the link reports it down', async (t) => {
  const r = await startRedis(t);
  const link = await RedisLink.open(r.url, pino({ level: 'silent' }));
  t.teardown(() => link.close());
  const c = new RedisCoordinator(link, 'down:');
  t.equal(link.up, true);
  await r.stop({ hard: true });
  for (let i = 0; i < 50 && link.up; i++) await sleep(50);
  t.equal(link.up, false, 'the link noticed');
  t.equal(c.available(), false);
  const started = Date.now();
  await t.rejects(c.acquire('x', 1_000));
  t.ok(Date.now() - started < 1_000, 'failed fast instead of waiting for Redis');
  await r.restart();
  for (let i = 0; i < 100 && !link.up; i++) await sleep(50);
  t.equal(link.up, true, 'reconnected when Redis came back');
  t.ok(await c.acquire('x', 1_000), 'leases work again');
});
