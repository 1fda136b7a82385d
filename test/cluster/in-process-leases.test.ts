// In-process leases and notes (lib/cluster/in-process.ts): records that expire unread do not stay.
// Redis drops an expired key by itself; the in-process store drops one when it is read, so a note
// or lease never read again (a failure note per blob, a webhook's done mark) would otherwise stay
// for the life of the process.
import t from 'tap';
import { InProcessLeases } from '../../lib/cluster/in-process.js';

t.test('notes set once and never read again are swept once expired: the store does not grow with them', async (t) => {
  let now = 0;
  const leases = new InProcessLeases(() => now);
  for (let i = 0; i < 50_000; i++) {
    await leases.setNote(`failure:${i}`, 'x', 1_000);
    now += 1; // 50 s in all: most expired long before the last is set
  }
  t.ok(leases.stats().notes <= 4_096, `${leases.stats().notes} notes held after 50,000 set with a 1 s TTL`);
  t.equal(await leases.getNote('failure:49999'), 'x', 'a live one is still there');
  t.equal(await leases.getNote('failure:0'), null, 'an expired one is gone');
});

t.test('live notes are never swept; the bound grows with them', async (t) => {
  const leases = new InProcessLeases(() => 0);
  for (let i = 0; i < 5_000; i++) await leases.setNote(`k${i}`, String(i), 60_000);
  t.equal(leases.stats().notes, 5_000);
  t.equal(await leases.getNote('k0'), '0');
  t.equal(await leases.getNote('k4999'), '4999');
});

t.test('leases that expired unreleased are swept too; a held one stays held', async (t) => {
  let now = 0;
  const leases = new InProcessLeases(() => now);
  const held = await leases.acquire('held', 1_000_000);
  t.ok(held);
  for (let i = 0; i < 20_000; i++) {
    await leases.acquire(`abandoned:${i}`, 100);
    now += 1;
  }
  t.ok(leases.stats().leases <= 4_096, `${leases.stats().leases} leases held after 20,000 taken and abandoned`);
  t.equal(await leases.acquire('held', 1_000), null, 'the live lease is still held');
});
