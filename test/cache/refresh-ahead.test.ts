// RefreshAhead's rules (lib/cache/refresh-ahead.ts): which answers are due for a background
// revalidation, and the cap per upstream. Pure bookkeeping: no clock, no upstream.
import t from 'tap';
import { RefreshAhead } from '../../lib/cache/refresh-ahead.js';

const OPTS = { enabled: true, before: 30_000, minRequests: 3, perUpstream: 2 };

t.test('a tag is due only once it had minRequests requests during its answer\'s life and less than `before` is left', async (t) => {
  const r = new RefreshAhead(OPTS);
  t.equal(r.note('a', 1, 300_000, 10_000), false, '1st request: not hot yet');
  t.equal(r.note('a', 1, 300_000, 10_000), false, '2nd request: not hot yet');
  t.equal(r.note('a', 1, 300_000, 10_000), true, '3rd request, 10 s left: due');
  const b = new RefreshAhead(OPTS);
  for (let i = 0; i < 10; i++) t.equal(b.note('b', 1, 300_000, 60_000), false, 'hot, but 60 s left: not due');
});

t.test('`before` is capped at half the TTL', async (t) => {
  const r = new RefreshAhead(OPTS);
  r.note('a', 1, 10_000, 6_000);
  r.note('a', 1, 10_000, 6_000);
  t.equal(r.note('a', 1, 10_000, 6_000), false, '6 s of a 10 s TTL left: not due, though less than before (30 s)');
  t.equal(r.note('a', 1, 10_000, 5_000), true, 'half of it left: due');
});

t.test('a new answer (another start) counts its requests afresh', async (t) => {
  const r = new RefreshAhead(OPTS);
  for (let i = 0; i < 5; i++) r.note('a', 1, 300_000, 60_000);
  t.equal(r.note('a', 2, 300_000, 1_000), false, 'the new answer has had one request');
});

t.test('one revalidation per answer: once started, the same answer is not due again', async (t) => {
  const r = new RefreshAhead(OPTS);
  for (let i = 0; i < 2; i++) r.note('a', 1, 300_000, 1_000);
  t.equal(r.note('a', 1, 300_000, 1_000), true);
  let finish!: () => void;
  t.equal(r.run('a', 'docker.io', () => new Promise<void>((res) => (finish = res))), true);
  t.equal(r.note('a', 1, 300_000, 900), false, 'already started for this answer');
  finish();
});

t.test('at most perUpstream revalidations run at once per upstream; other upstreams are not held back', async (t) => {
  const r = new RefreshAhead(OPTS);
  const finishers: Array<() => void> = [];
  const hold = (): Promise<void> => new Promise<void>((res) => finishers.push(res));
  t.equal(r.run('a', 'docker.io', hold), true, '1st');
  t.equal(r.run('b', 'docker.io', hold), true, '2nd');
  t.equal(r.run('c', 'docker.io', hold), false, '3rd on docker.io: over the cap, not started');
  t.equal(r.run('d', 'ghcr.io', hold), true, 'another upstream has its own cap');
  finishers[0]!();
  await new Promise((res) => setImmediate(res));
  t.equal(r.run('c', 'docker.io', hold), true, 'one finished: room again');
  t.equal(r.started, 4);
  for (const f of finishers) f();
});

t.test('a failing revalidation frees its slot and rejects nothing', async (t) => {
  const r = new RefreshAhead({ ...OPTS, perUpstream: 1 });
  t.equal(r.run('a', 'docker.io', () => Promise.reject(new Error('upstream down'))), true);
  await new Promise((res) => setImmediate(res));
  t.equal(r.run('b', 'docker.io', () => Promise.resolve()), true, 'the slot is free again');
});

t.test('disabled: never due', async (t) => {
  const r = new RefreshAhead({ ...OPTS, enabled: false });
  for (let i = 0; i < 10; i++) t.equal(r.note('a', 1, 300_000, 1), false);
});
