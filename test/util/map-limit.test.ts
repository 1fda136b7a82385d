// mapLimit: Promise.all with a bound on how many calls run at once.
import t from 'tap';
import { mapLimit } from '../../lib/util/map-limit.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

t.test('results come back in the order of the items', async (t) => {
  const out = await mapLimit([30, 10, 20], 2, async (ms) => {
    await new Promise((r) => setTimeout(r, ms));
    return ms * 2;
  });
  t.same(out, [60, 20, 40]);
});

t.test('never more than the limit run at once, and all of them run', async (t) => {
  let running = 0;
  let peak = 0;
  const seen: number[] = [];
  await mapLimit(Array.from({ length: 100 }, (_, i) => i), 8, async (i) => {
    running++;
    peak = Math.max(peak, running);
    await tick();
    seen.push(i);
    running--;
  });
  t.equal(peak, 8);
  t.equal(seen.length, 100);
});

t.test('after a failure no further item starts, the running ones finish, then the first error is thrown', async (t) => {
  const started: number[] = [];
  const finished: number[] = [];
  await t.rejects(
    mapLimit(Array.from({ length: 20 }, (_, i) => i), 3, async (i) => {
      started.push(i);
      await tick();
      if (i === 1) throw new Error('item 1 failed');
      if (i === 2) throw new Error('item 2 failed too');
      await tick();
      finished.push(i);
    }),
    { message: 'item 1 failed' },
  );
  t.same(started, [0, 1, 2], 'nothing started after the failure');
  t.same(finished, [0], 'the call running beside it was waited for');
});

t.test('no items: an empty result, fn never called', async (t) => {
  t.same(await mapLimit([], 4, async () => t.fail('called')), []);
});
