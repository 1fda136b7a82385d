// Caches bounded by a number of entries take memory as they fill, not for their bound up front
// (lib/util/lru-bound.ts): a fresh process holds no room for 200,000 links it has not seen.
import { LRUCache } from 'lru-cache';
import t from 'tap';
import { DescriptorSizes } from '../../lib/cache/descriptor-sizes.js';
import { LoginThrottle } from '../../lib/server/auth/login-throttle.js';
import type { Records } from '../../lib/storage/records.js';
import { RepoStore } from '../../lib/storage/repo-store.js';
import { upTo } from '../../lib/util/lru-bound.js';

const MiB = 1024 * 1024;

/** Bytes of array buffers that making `n` of something allocates (kept alive until measured). */
function arrayBuffersOf(n: number, make: () => unknown): number {
  const before = process.memoryUsage().arrayBuffers;
  const made = Array.from({ length: n }, make);
  const after = process.memoryUsage().arrayBuffers;
  t.equal(made.length, n);
  return after - before;
}

t.test('a cache bounded with upTo() holds at most that many entries, the least recently used going first', async (t) => {
  const c = new LRUCache<string, number>(upTo(3));
  for (const k of ['a', 'b', 'c']) c.set(k, 1);
  c.get('a');
  c.set('d', 1);
  t.same([...c.keys()].sort(), ['a', 'c', 'd']);
});

t.test('ten caches of up to 200,000 entries allocate under 1 MiB before anything is stored', async (t) => {
  const bytes = arrayBuffersOf(10, () => new LRUCache<string, true>(upTo(200_000)));
  t.ok(bytes < MiB, `${bytes} bytes`);
});

t.test("fresh RepoStores, DescriptorSizes and LoginThrottles allocate no room for entries they do not hold", async (t) => {
  const repos = arrayBuffersOf(10, () => new RepoStore({} as Records));
  t.ok(repos < MiB, `10 RepoStores: ${repos} bytes`);
  const sizes = arrayBuffersOf(10, () => new DescriptorSizes());
  t.ok(sizes < MiB, `10 DescriptorSizes: ${sizes} bytes`);
  const throttles = arrayBuffersOf(10, () => new LoginThrottle());
  t.ok(throttles < MiB, `10 LoginThrottles: ${throttles} bytes`);
});
