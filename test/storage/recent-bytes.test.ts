// A download's latest bytes in pooled slabs: views stay unchanged while leased, slabs are reused
// only once out of the window and released, and a lease never released keeps its slab out of the pool.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { RECENT_SLAB, RecentBytes } from '../../lib/storage/recent-bytes.js';
import { sendBufferStats as poolStats } from '../../lib/storage/send-buffers.js';

/** Appends `data` in chunks of `step` from offset `start`. */
function fill(r: RecentBytes, data: Buffer, start: number, step: number): void {
  for (let off = 0; off < data.length; off += step) r.append([data.subarray(off, off + step)], start + off);
}

t.test('a leased view keeps its bytes while newer ones recycle every other slab', async (t) => {
  const r = new RecentBytes(RECENT_SLAB);
  const first = randomBytes(RECENT_SLAB);
  fill(r, first, 0, 64 * 1024);
  const lease = r.range(1000, RECENT_SLAB, RECENT_SLAB)!;
  const copy = Buffer.from(Buffer.concat(lease.views));
  // Ten slabs more: the leased one leaves the window, the others cycle through the pool.
  fill(r, randomBytes(10 * RECENT_SLAB), RECENT_SLAB, 64 * 1024);
  t.equal(r.range(1000, 11 * RECENT_SLAB, 100), null, 'out of the window');
  t.ok(Buffer.concat(lease.views).equals(copy), 'the leased bytes are unchanged');
  t.ok(copy.equals(first.subarray(1000)), 'and are the bytes appended');
  lease.release();
  r.clear();
});

t.test('slabs out of the window are reused: memory in use stays at the window however much passes', async (t) => {
  const before = poolStats().inUse;
  const r = new RecentBytes(2 * RECENT_SLAB);
  fill(r, randomBytes(20 * RECENT_SLAB), 0, 64 * 1024);
  t.equal(poolStats().inUse - before, 2 * RECENT_SLAB, 'the window: two full slabs');
  const pooled = poolStats().pooled;
  fill(r, randomBytes(RECENT_SLAB), 20 * RECENT_SLAB, 64 * 1024);
  t.equal(poolStats().pooled, pooled, 'one slab taken from the pool, one given back');
  r.clear();
  t.equal(poolStats().inUse, before, 'cleared: nothing in use');
});

t.test('a slab with a view out goes back to the pool only when the view is released', async (t) => {
  const r = new RecentBytes(RECENT_SLAB);
  fill(r, randomBytes(RECENT_SLAB), 0, 64 * 1024);
  const lease = r.range(0, RECENT_SLAB, 10)!;
  r.clear();
  const { inUse, pooled } = poolStats();
  lease.release();
  t.equal(poolStats().inUse, inUse - RECENT_SLAB, 'released: no longer in use');
  t.equal(poolStats().pooled, pooled + RECENT_SLAB, 'and pooled');
  lease.release();
  t.equal(poolStats().pooled, pooled + RECENT_SLAB, 'a second release changes nothing');
});

t.test('a lease never released keeps its slab out of the pool for good', async (t) => {
  const before = poolStats().inUse;
  const r = new RecentBytes(RECENT_SLAB);
  const data = randomBytes(RECENT_SLAB);
  fill(r, data, 0, 64 * 1024);
  const lease = r.range(0, RECENT_SLAB, RECENT_SLAB)!;
  r.clear();
  // Every slab the pool has is taken and given back many times over.
  for (let round = 0; round < 4; round++) {
    fill(r, randomBytes(8 * RECENT_SLAB), 0, 64 * 1024);
    r.clear();
  }
  t.ok(Buffer.concat(lease.views).equals(data), 'the leased bytes were never overwritten');
  t.equal(poolStats().inUse - before, RECENT_SLAB, 'the leased slab still counts as in use');
});

t.test('range: null before the window, at or past the end, and for an empty range', async (t) => {
  const S = RECENT_SLAB;
  const r = new RecentBytes(S);
  const data = randomBytes(3 * S);
  fill(r, data, 1000, 64 * 1024);
  // Slabs begin at 1000, 1000 + S, 1000 + 2S: the last alone holds S bytes, the first two went.
  t.equal(r.range(999, 1000 + 3 * S, S), null, 'before the first byte ever appended');
  t.equal(r.range(1000 + 2 * S - 1, 1000 + 3 * S, S), null, 'before the window');
  t.equal(r.range(1000 + 3 * S, 1000 + 4 * S, S), null, 'at the end');
  t.equal(r.range(1000 + 2 * S, 1000 + 2 * S, S), null, 'an empty range');
  const lease = r.range(1000 + 2 * S + 5, 1000 + 3 * S, 4 * S)!;
  t.ok(Buffer.concat(lease.views).equals(data.subarray(2 * S + 5)), 'the last slab, from inside it');
  lease.release();
  r.clear();
});

t.test('bytes that do not follow the last ones start the window over', async (t) => {
  const r = new RecentBytes(4 * RECENT_SLAB);
  const a = randomBytes(200);
  const b = randomBytes(50);
  fill(r, a, 0, 40);
  r.append([b], 0);
  t.equal(r.range(100, 200, 100), null, 'the old bytes are gone');
  const lease = r.range(0, 50, 100)!;
  t.ok(Buffer.concat(lease.views).equals(b), 'the new ones are kept');
  lease.release();
  r.clear();
});
