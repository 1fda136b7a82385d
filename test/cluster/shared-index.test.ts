// The cluster's eviction policy (SharedIndex) over the in-process coordinator's records, with a
// store that only records what is asked of it: replicas' batches are counted once, the evictor
// (the one holding the `evict` lease) deletes the least recently used files down to the bound,
// never what was served within two flushes nor a pinned file, and the other replicas drop what it
// evicted from their index on their next flush.
import t from 'tap';
import pino from 'pino';
import { digestOf, type Digest } from '../../lib/oci/digest.js';
import { InProcessCoordinator } from '../../lib/cluster/in-process.js';
import { SharedIndex, type EvictableStore } from '../../lib/cluster/shared-index.js';

const log = pino({ level: 'silent' });
const FLUSH_MS = 1_000;

class FakeStore implements EvictableStore {
  readonly files = new Map<string, { size: number; mtime: number; pinned: boolean }>();
  readonly dropped: string[] = [];
  readonly reading = new Set<string>();

  forget(d: string): void {
    this.dropped.push(d);
  }

  readingNow(): Iterable<string> {
    return this.reading;
  }

  async evictChosen(d: Digest, _size: number): Promise<boolean> {
    const f = this.files.get(d.value);
    if (!f || f.pinned) return false;
    this.files.delete(d.value);
    return true;
  }

  async *listStored(): AsyncGenerator<{ digest: string; size: number; mtime: number; pinned: boolean }> {
    for (const [digest, f] of this.files) yield { digest, ...f };
  }
}

const D = (n: number): string => digestOf(`blob ${n}`).value;

function replicas(maxSize: number | null) {
  let now = 1_000_000;
  const clock = () => now;
  const coordinator = new InProcessCoordinator(clock);
  const scope = coordinator.scope('stevedore:test:');
  const store = new FakeStore();
  const other = new FakeStore();
  const opts = { maxSize, recencyFlushMs: FLUSH_MS, evictionIntervalMs: 60_000, leaseTtlMs: 10_000, now: clock };
  const a = new SharedIndex(scope.index, scope.leases, store, log, opts);
  const b = new SharedIndex(scope.index, scope.leases, other, log, opts);
  return { a, b, store, other, scope, advance: (ms: number) => void (now += ms) };
}

t.test('two replicas report one file: it is counted once', async (t) => {
  const { a, b, store } = replicas(1_000);
  store.files.set(D(1), { size: 300, mtime: 0, pinned: false });
  a.committed(D(1), 300, false);
  b.committed(D(1), 300, false);
  b.committed(D(2), 50, true);
  await a.flush();
  await b.flush();
  t.equal(await a.total(), 300, 'a pinned commit is not counted');
});

t.test('the evictor deletes least recently used files down to the bound, and the others drop them on their next flush', async (t) => {
  const { a, b, store, other, advance } = replicas(250);
  for (let i = 1; i <= 4; i++) {
    store.files.set(D(i), { size: 100, mtime: 0, pinned: false });
    a.committed(D(i), 100, false);
    await a.flush();
    advance(10);
  }
  b.used(D(1));
  await b.flush(); // 1 is now the most recently used
  advance(10 * FLUSH_MS);
  t.equal(await a.total(), 400);
  t.equal(await a.evictOver(250), 2, 'two files over the bound');
  t.same([...store.files.keys()].sort(), [D(1), D(4)].sort(), 'the two least recently used went (2 and 3), not 1, served later by the other replica');
  t.equal(await b.total(), 200);
  await b.flush();
  t.same(other.dropped.sort(), [D(2), D(3)].sort(), 'the other replica drops what was evicted from its index');
});

t.test('what was served within two flushes is not evicted, even over the bound', async (t) => {
  const { a, store, advance } = replicas(0);
  store.files.set(D(7), { size: 10, mtime: 0, pinned: false });
  a.committed(D(7), 10, false);
  await a.flush();
  advance(FLUSH_MS);
  t.equal(await a.evictOver(0), 0);
  t.ok(store.files.has(D(7)));
  advance(3 * FLUSH_MS);
  t.equal(await a.evictOver(0), 1, 'evicted once it was not served for two flushes');
});

t.test('a file being sent counts as used at every flush', async (t) => {
  const { a, store, advance } = replicas(0);
  store.files.set(D(8), { size: 10, mtime: 0, pinned: false });
  a.committed(D(8), 10, false);
  await a.flush();
  store.reading.add(D(8));
  advance(10 * FLUSH_MS);
  await a.flush();
  t.equal(await a.evictOver(0), 0, 'still being sent: recent');
});

t.test('a file the records count but the store holds pinned is kept, and the total read again', async (t) => {
  const { a, store, advance } = replicas(0);
  store.files.set(D(9), { size: 10, mtime: 0, pinned: true });
  a.committed(D(9), 10, false); // the records say cached (another replica's view, or a hostile record)
  await a.flush();
  advance(10 * FLUSH_MS);
  t.equal(await a.evictOver(0), 0);
  t.ok(store.files.has(D(9)), 'pinned on disk: never deleted');
  t.equal(await a.total(), 0, 'and no longer counted');
});

t.test('a record that is not a digest is dropped, nothing deleted', async (t) => {
  const { a, scope, store, advance } = replicas(0);
  store.files.set(D(10), { size: 10, mtime: 0, pinned: false });
  await scope.index.update({ added: new Map([['../../etc/passwd', 5]]), forgotten: new Set(), used: [], at: 0 });
  advance(10 * FLUSH_MS);
  t.equal(await a.evictOver(0), 0);
  t.ok(store.files.has(D(10)));
  t.same(await scope.index.leastRecent(10), [], 'the stray record is gone');
});

t.test('reconciling counts what the store lists, and only that', async (t) => {
  const { a, scope, store } = replicas(null);
  store.files.set(D(11), { size: 70, mtime: 5, pinned: false });
  store.files.set(D(12), { size: 30, mtime: 6, pinned: true });
  await scope.index.update({ added: new Map([[D(13), 999]]), forgotten: new Set(), used: [], at: 0 });
  await a.reconcile();
  t.equal(await a.total(), 70, 'the listed cached file only: not the pinned one, not the one gone');
  t.same(await scope.index.leastRecent(10), [{ digest: D(11), usedAt: 5 }]);
});
