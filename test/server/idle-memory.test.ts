// server.idleMemoryReturn (lib/server/idle-memory.ts): a memory-reducing collection at start-up and
// once quiet after activity; never while a request or a download is in flight; probes are not activity.
import v8 from 'node:v8';
import pino from 'pino';
import t, { type Test } from 'tap';
import { IdleMemory, returnMemory } from '../../lib/server/idle-memory.js';

const log = pino({ level: 'silent' });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const youngGeneration = (): number => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')!.physical_space_size;

/** An IdleMemory started (its start-up return done), looking every 10 ms, stopped with the test. */
function watching(t: Test, quietMs: number, busy: () => boolean = () => false): IdleMemory {
  const idle = new IdleMemory({ quietMs, checkMs: 10, busy, log });
  t.teardown(() => idle.stop());
  idle.start();
  return idle;
}

/** Waits until `idle.returns` reaches `n` (true), or `ms` passes (false). */
async function returnsReach(idle: IdleMemory, n: number, ms = 5_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (idle.returns >= n) return true;
    await sleep(20);
  }
  return idle.returns >= n;
}

t.test('a return shrinks the young generation that garbage grew', async (t) => {
  let keep: unknown[] = [];
  for (let round = 0; round < 20; round++) keep = Array.from({ length: 50_000 }, (_, i) => ({ i, s: `x${i}` }));
  t.equal(keep.length, 50_000, 'the last round is still referenced');
  const before = youngGeneration();
  const r = returnMemory('idle');
  const after = youngGeneration();
  t.comment(`young generation ${(before / 1048576).toFixed(1)} → ${(after / 1048576).toFixed(1)} MiB in ${r.ms.toFixed(0)} ms`);
  t.ok(before > 4 * 1048576, 'the garbage grew it past 4 MiB');
  t.ok(after < before / 4, 'a quarter of it or less is left');
  t.equal(r.reason, 'idle');
  t.ok(r.heapTotal[1] < r.heapTotal[0], 'the heap committed shrank');
});

t.test('one return at start-up, none more while nothing happens', async (t) => {
  const idle = watching(t, 100);
  t.equal(idle.returns, 1, 'start-up');
  await sleep(400);
  t.equal(idle.returns, 1, 'no request since: nothing to return');
});

t.test('after a request, once quiet for quietMs', async (t) => {
  const idle = watching(t, 300);
  idle.requestStarted();
  idle.requestEnded('manifest');
  await sleep(100);
  t.equal(idle.returns, 1, 'not before quietMs');
  t.ok(await returnsReach(idle, 2), 'returned once quiet');
  await sleep(500);
  t.equal(idle.returns, 2, 'once per busy spell');
});

t.test('never while a request is in flight', async (t) => {
  const idle = watching(t, 100);
  idle.requestStarted();
  await sleep(500);
  t.equal(idle.returns, 1, 'a long answer keeps it from running');
  idle.requestEnded('blob');
  t.ok(await returnsReach(idle, 2), 'then it runs, quietMs after the answer ended');
});

t.test('never while busy (a download running)', async (t) => {
  let downloading = true;
  const idle = watching(t, 100, () => downloading);
  idle.requestStarted();
  idle.requestEnded('base');
  await sleep(500);
  t.equal(idle.returns, 1, 'the download keeps it from running');
  downloading = false;
  t.ok(await returnsReach(idle, 2), 'then it runs');
});

t.test('probes and scrapes are not activity', async (t) => {
  const idle = watching(t, 100);
  for (const route of ['healthz', 'readyz', 'metrics']) {
    idle.requestStarted();
    idle.requestEnded(route);
  }
  await sleep(400);
  t.equal(idle.returns, 1, 'nothing to return after probes alone');
});

t.test('requests every few ms keep it from running', async (t) => {
  const idle = watching(t, 200);
  const until = Date.now() + 600;
  while (Date.now() < until) {
    idle.requestStarted();
    idle.requestEnded('base');
    await sleep(20);
  }
  t.equal(idle.returns, 1, 'no collection under load');
  t.ok(await returnsReach(idle, 2), 'one once the load stops');
});
