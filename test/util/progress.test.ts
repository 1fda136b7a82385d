// ProgressWatch: a body is stalled when fewer than minBytes arrive within any window, whether it is
// silent or dripping; time the reader spends waiting on its own side does not count.
import t from 'tap';
import { parseConfig } from '../../lib/config/config.js';
import { ProgressWatch } from '../../lib/util/progress.js';

/** A watch on a clock the test moves; check() is called by hand after each move. */
function watch(windowMs: number, minBytes: number): { w: ProgressWatch; advance(ms: number): void; stalls: number[] } {
  let now = 1_000_000;
  const stalls: number[] = [];
  const w = new ProgressWatch({ windowMs, minBytes }, (bytes) => stalls.push(bytes), () => now);
  t.teardown(() => w.stop());
  return {
    w,
    stalls,
    advance(ms) {
      for (let i = 0; i < ms / 100; i++) {
        now += 100;
        w.check();
      }
    },
  };
}

t.test('a silent body is stalled once a whole window passed, not before', async (t) => {
  const { advance, stalls } = watch(30_000, 16);
  advance(29_900);
  t.same(stalls, [], 'not before the window is over');
  advance(200);
  t.same(stalls, [0], 'stalled with 0 bytes in the window');
});

t.test('with the default rule (16 KiB per 30 s), a body dripping a byte every 5 s is stalled once 30 s have passed', async (t) => {
  const c = parseConfig({});
  const { w, advance, stalls } = watch(c.timeouts.stall, c.timeouts.minProgress);
  let elapsed = 0;
  while (stalls.length === 0 && elapsed < 120_000) {
    w.add(1);
    advance(5_000);
    elapsed += 5_000;
  }
  t.equal(stalls.length, 1, 'stalled once');
  t.ok(elapsed <= 35_000, `noticed after ${elapsed / 1000} s of dripping`);
  t.ok(stalls[0]! <= 7, `with a handful of bytes in the window (${stalls[0]})`);
});

t.test('a body delivering enough in every window is never stalled', async (t) => {
  const { w, advance, stalls } = watch(10_000, 1_000);
  for (let s = 0; s < 120; s++) {
    w.add(200); // 2,000 bytes per 10 s window
    advance(1_000);
  }
  t.same(stalls, []);
});

t.test('time paused by the reader (its own backpressure) does not count', async (t) => {
  const { w, advance, stalls } = watch(10_000, 1);
  w.add(10);
  advance(5_000);
  w.pause();
  advance(60_000);
  w.resume();
  advance(9_000);
  t.same(stalls, [], 'the window starts again on resume');
  advance(2_000);
  t.same(stalls, [0], 'and a stall after it is still seen');
});

t.test('a stopped watch reports nothing', async (t) => {
  const { w, advance, stalls } = watch(1_000, 1);
  w.stop();
  advance(5_000);
  t.same(stalls, []);
});
