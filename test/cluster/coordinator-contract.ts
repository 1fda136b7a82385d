// The contract every cluster coordinator keeps (lib/cluster/coordinator.ts), run by
// coordinator.test.ts against the in-process coordinator and against Redis (a real redis-server).
// A new coordinator (etcd, …) runs it too: `coordinatorContract(t, 'etcd coordinator', setup)`.
//
// Two "replicas" are two coordinator instances on the same backing service (for the in-process
// one, the same instance: it is one process). Each test gets a fresh namespace.
import type { Test } from 'tap';
import { MAX_HOLDERS, type BusMessage, type ClusterCoordinator } from '../../lib/cluster/coordinator.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface Replicas {
  a: ClusterCoordinator;
  b: ClusterCoordinator;
  /** A namespace no other test uses. */
  ns: string;
}

export interface ContractSetup {
  /** A fresh pair of replicas for one test, closed when `t` ends. */
  replicas(t: Test): Promise<Replicas>;
  /**
   * The backing service going away and coming back (Redis killed -9 and restarted empty); absent
   * for a coordinator that cannot go away (in-process).
   */
  outage?: { stop(): Promise<void>; restart(): Promise<void> };
}

async function until(what: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await what()) return true;
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
}

export function coordinatorContract(root: Test, name: string, setup: (group: Test) => Promise<ContractSetup>): void {
  root.test(name, async (t) => {
    const s = await setup(t);

    // ---- leases --------------------------------------------------------------------------

    await t.test('a lease is exclusive while its holder renews it', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const [la, lb] = [a.scope(ns).leases, b.scope(ns).leases];
      const held = await la.acquire('k1', 300, 'first');
      t.ok(held, 'the first asker gets it');
      t.equal(await lb.acquire('k1', 300), null, 'another does not');
      await sleep(700);
      t.equal(await lb.acquire('k1', 300), null, 'still not, after twice its TTL: renewed in the background');
      t.same(await lb.read('k1'), { token: held!.token, value: 'first' }, 'anyone reads who holds it and what it published');
      await held!.release();
      t.equal(await lb.read('k1'), null, 'released: nobody holds it');
      const next = await lb.acquire('k1', 300);
      t.ok(next, 'and it can be taken');
      await next!.release();
    });

    await t.test('publish replaces what the holder says, and only the holder can', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const held = await a.scope(ns).leases.acquire('k2', 1_000, '{"size":null}');
      t.equal(await held!.publish('{"size":42}'), true);
      t.equal((await b.scope(ns).leases.read('k2'))!.value, '{"size":42}');
      await held!.release();
      t.equal(await held!.publish('{"size":1}'), false, 'a released lease publishes nothing');
      t.equal(await b.scope(ns).leases.read('k2'), null);
    });

    await t.test('a note expires after its TTL', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      await a.scope(ns).leases.setNote('why', 'upstream said 404', 200);
      t.equal(await b.scope(ns).leases.getNote('why'), 'upstream said 404');
      await sleep(400);
      t.equal(await b.scope(ns).leases.getNote('why'), null);
    });

    await t.test('leases of one namespace are not those of another', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const held = await a.scope(ns).leases.acquire('evict', 5_000);
      t.ok(held);
      const other = await b.scope(`${ns}other:`).leases.acquire('evict', 5_000);
      t.ok(other, 'another store (namespace) has its own evictor');
      await held!.release();
      await other!.release();
    });

    // ---- the shared index ----------------------------------------------------------------

    await t.test('index: a digest reported by two replicas is counted once', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const [ia, ib] = [a.scope(ns).index, b.scope(ns).index];
      t.equal(await ib.total(), 0, 'empty at first');
      await ia.update({ added: new Map([['sha256:aa', 100], ['sha256:bb', 30]]), forgotten: new Set(), used: [], at: 1_000 });
      await ib.update({ added: new Map([['sha256:aa', 100]]), forgotten: new Set(), used: [], at: 2_000 });
      t.equal(await ia.total(), 130, 'sha256:aa counted once');
      t.same(await ib.leastRecent(10), [{ digest: 'sha256:bb', usedAt: 1_000 }, { digest: 'sha256:aa', usedAt: 2_000 }], 'a second report raises its recency');
    });

    await t.test('index: recency is only ever raised, and the least recent come first', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const [ia, ib] = [a.scope(ns).index, b.scope(ns).index];
      await ia.update({ added: new Map([['sha256:01', 1], ['sha256:02', 2], ['sha256:03', 3]]), forgotten: new Set(), used: [], at: 5_000 });
      await ib.update({ added: new Map(), forgotten: new Set(), used: ['sha256:01'], at: 9_000 });
      await ia.update({ added: new Map(), forgotten: new Set(), used: ['sha256:01', 'sha256:03'], at: 7_000 });
      t.same(await ib.leastRecent(2), [{ digest: 'sha256:02', usedAt: 5_000 }, { digest: 'sha256:03', usedAt: 7_000 }], 'an older report does not lower 01 from 9000');
      t.same((await ia.leastRecent(10)).map((u) => u.digest), ['sha256:02', 'sha256:03', 'sha256:01']);
    });

    await t.test('index: forgetting un-counts a digest once and says its size', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const [ia, ib] = [a.scope(ns).index, b.scope(ns).index];
      await ia.update({ added: new Map([['sha256:cc', 70], ['sha256:dd', 5]]), forgotten: new Set(), used: ['sha256:stray'], at: 1_000 });
      t.equal(await ib.forget('sha256:cc'), 70);
      t.equal(await ia.forget('sha256:cc'), null, 'the second time: not counted');
      t.equal(await ia.forget('sha256:stray'), null, 'a recency entry without a size is not counted');
      t.equal(await ib.total(), 5);
      t.same((await ia.leastRecent(10)).map((u) => u.digest), ['sha256:dd'], 'forgotten digests leave the recency order');
      await ib.update({ added: new Map(), forgotten: new Set(['sha256:dd']), used: [], at: 2_000 });
      t.equal(await ia.total(), 0, 'a batch forgets too');
      t.same(await ia.leastRecent(10), []);
    });

    await t.test('index: evictions are announced until dropped', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const [ia, ib] = [a.scope(ns).index, b.scope(ns).index];
      await ia.evicted('sha256:e1', 1_000);
      await ia.evicted('sha256:e2', 2_000);
      t.same((await ib.evictedSince(1_500)).sort(), ['sha256:e2']);
      t.same((await ib.evictedSince(0)).sort(), ['sha256:e1', 'sha256:e2']);
      await ib.dropEvictedBefore(1_500);
      t.same(await ia.evictedSince(0), ['sha256:e2']);
    });

    await t.test('index: reconciling with a listing adds what is missing, drops what is gone, sets the total', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const [ia, ib] = [a.scope(ns).index, b.scope(ns).index];
      await ia.update({ added: new Map([['sha256:kept', 10], ['sha256:gone', 20]]), forgotten: new Set(), used: [], at: 50_000 });
      const listed = new Map([
        ['sha256:kept', { size: 10, mtime: 1_000 }],
        ['sha256:new', { size: 40, mtime: 3_000.4 }],
      ]);
      t.same(await ib.reconcile(listed), { added: 1, removed: 1 });
      t.equal(await ia.total(), 50);
      t.same(await ia.leastRecent(10), [{ digest: 'sha256:new', usedAt: 3_000 }, { digest: 'sha256:kept', usedAt: 50_000 }], 'a new file gets its mtime, a known one keeps its recency');
      t.equal(await ia.forget('sha256:gone'), null, 'gone from the records');
    });

    // ---- the invalidation bus ------------------------------------------------------------

    await t.test('bus: a tag moved on one replica reaches the subscribers of every replica', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const gotA: BusMessage[] = [];
      const gotB: BusMessage[] = [];
      await a.scope(ns).bus.subscribe((m) => gotA.push(m));
      await b.scope(ns).bus.subscribe((m) => gotB.push(m));
      const m = { from: 'replica-a', upstream: 'docker.io', name: 'library/alpine', tag: '3.19' };
      t.equal(await a.scope(ns).bus.publish(m), true);
      t.ok(await until(() => gotB.length > 0 && gotA.length > 0, 3_000), 'delivered');
      t.same(gotB, [m], 'the other replica gets it, once and whole');
      t.same(gotA, [m], 'the publisher\'s own subscription too (it tells its own messages by `from`)');
    });

    await t.test('bus: a warm-mark notice (pre-heat) reaches the subscribers of every process, whole', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const got: BusMessage[] = [];
      await b.scope(ns).bus.subscribe((m) => got.push(m));
      const m = { kind: 'warm-mark' as const, from: 'ci', id: '0123456789abcdef' };
      t.equal(await a.scope(ns).bus.publish(m), true);
      t.ok(await until(() => got.length > 0, 3_000), 'delivered');
      t.same(got, [m]);
    });

    await t.test('bus: another namespace hears nothing', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const got: BusMessage[] = [];
      const mine: BusMessage[] = [];
      await b.scope(`${ns}other:`).bus.subscribe((m) => got.push(m));
      await b.scope(ns).bus.subscribe((m) => mine.push(m));
      await a.scope(ns).bus.publish({ from: 'r', upstream: 'u', name: 'n', tag: 't' });
      t.ok(await until(() => mine.length > 0, 3_000));
      await sleep(100);
      t.same(got, []);
    });

    // ---- the holder directory ------------------------------------------------------------

    await t.test('directory: holders are those whose announcement has not expired', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const [da, db] = [a.scope(ns).directory, b.scope(ns).directory];
      await da.announce(['sha256:h1', 'sha256:h2'], 'http://10.0.0.1:5000', 10_000, 60_000);
      await db.announce(['sha256:h1'], 'http://10.0.0.2:5000', 20_000, 60_000);
      t.same((await da.holders('sha256:h1', 5_000)).sort(), ['http://10.0.0.1:5000', 'http://10.0.0.2:5000']);
      t.same(await db.holders('sha256:h1', 10_001), ['http://10.0.0.2:5000'], 'an expired announcement is not a holder');
      t.same((await db.holders('sha256:h1', 10_000)).sort(), ['http://10.0.0.1:5000', 'http://10.0.0.2:5000'], 'announced until 10000: still a holder at 10000');
      await db.withdraw(['sha256:h1', 'sha256:h2'], 'http://10.0.0.1:5000');
      t.same(await da.holders('sha256:h1', 5_000), ['http://10.0.0.2:5000'], 'withdrawn');
      t.same(await da.holders('sha256:h2', 5_000), []);
      t.same(await da.holders('sha256:none', 0), [], 'a digest nobody announced has no holders');
    });

    await t.test('directory: a record filled past MAX_HOLDERS members is read up to MAX_HOLDERS of them', async (t) => {
      const { a, ns } = await s.replicas(t);
      const d = a.scope(ns).directory;
      const members = Array.from({ length: MAX_HOLDERS + 50 }, (_, i) => `http://10.1.${i >> 8}.${i & 255}:5000`);
      for (let i = 0; i < members.length; i += 500) await Promise.all(members.slice(i, i + 500).map((m) => d.announce(['sha256:flood'], m, 50_000, 60_000)));
      const got = await d.holders('sha256:flood', 1_000);
      t.equal(got.length, MAX_HOLDERS);
      t.ok(got.every((m) => members.includes(m)), 'only announced members');
    });

    // ---- shared values -------------------------------------------------------------------

    await t.test('values: what one replica sets, another reads, until deleted', async (t) => {
      const { a, b } = await s.replicas(t);
      t.equal(await b.values.get('breaker:ghcr.io'), null);
      await a.values.set('breaker:ghcr.io', { failures: 2, openUntil: 0 }, 60_000);
      t.same(await b.values.get('breaker:ghcr.io'), { failures: 2, openUntil: 0 });
      await b.values.delete('breaker:ghcr.io');
      t.equal(await a.values.get('breaker:ghcr.io'), null);
    });

    await t.test('values: a value lives for its TTL', async (t) => {
      const { a, b } = await s.replicas(t);
      await a.values.set('cooldown:quay.io', { until: 1 }, 200);
      t.same(await b.values.get('cooldown:quay.io'), { until: 1 });
      await sleep(400);
      t.equal(await b.values.get('cooldown:quay.io'), null);
    });

    // ---- going away and coming back ------------------------------------------------------

    const outage = s.outage;
    if (!outage) {
      await t.test('always available: nothing to go away', async (t) => {
        const { a, ns } = await s.replicas(t);
        t.equal(a.available(), true);
        const held = await a.scope(ns).leases.acquire('x', 1_000);
        t.ok(held);
        await held!.release();
      });
      return;
    }

    await t.test('gone: leases fail at once, values answer from memory, the rest is silent; back: all of it shared again', async (t) => {
      const { a, b, ns } = await s.replicas(t);
      const gotB: BusMessage[] = [];
      await b.scope(ns).bus.subscribe((m) => gotB.push(m));
      let downs = 0;
      a.onAvailability((up) => {
        if (!up) downs++;
      });
      t.equal(a.available(), true);
      await outage.stop();
      t.ok(await until(() => !a.available() && !b.available(), 5_000), 'both replicas notice');
      t.equal(downs, 1, 'told once');

      const started = Date.now();
      await t.rejects(a.scope(ns).leases.acquire('x', 1_000), 'a lease cannot be taken');
      await t.rejects(a.scope(ns).leases.read('x'), 'nor read');
      await t.rejects(a.scope(ns).index.total(), 'the index cannot be read');
      t.ok(Date.now() - started < 1_000, 'failed fast instead of waiting');
      t.equal(await a.scope(ns).bus.publish({ from: 'a', upstream: 'u', name: 'n', tag: 'down' }), false, 'a message cannot be sent');
      await a.scope(ns).directory.announce(['sha256:d'], 'http://10.0.0.1:5000', Date.now() + 60_000, 60_000);
      await a.scope(ns).directory.withdraw(['sha256:d'], 'http://10.0.0.1:5000');
      t.pass('announcing and withdrawing do nothing, and do not throw');
      await a.values.set('tag:down', { at: 1 }, 60_000);
      t.same(await a.values.get('tag:down'), { at: 1 }, 'values: this replica\'s memory answers');
      t.equal(await b.values.get('tag:down'), null, 'and only this replica\'s');

      await outage.restart();
      t.ok(await until(() => a.available() && b.available(), 10_000), 'both rejoin');
      const held = await a.scope(ns).leases.acquire('x', 1_000);
      t.ok(held, 'leases work again');
      await held!.release();
      await a.values.set('tag:back', { at: 2 }, 60_000);
      t.same(await b.values.get('tag:back'), { at: 2 }, 'values are shared again');
      const back = { from: 'a', upstream: 'u', name: 'n', tag: 'back' };
      // The subscription comes back by itself, within its reconnection delay.
      t.ok(
        await until(async () => {
          await a.scope(ns).bus.publish(back);
          await sleep(100);
          return gotB.some((m) => 'tag' in m && m.tag === 'back');
        }, 10_000),
        'the other replica\'s subscription hears messages again',
      );
      t.notOk(gotB.some((m) => 'tag' in m && m.tag === 'down'), 'what was sent while away is lost (best effort)');
    });
  });
}
