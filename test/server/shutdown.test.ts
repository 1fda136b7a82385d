// The shutdown deadline (lib/server/shutdown.ts, rule 11): every closing step is waited for only
// until the grace period ends; a step that never finishes is left undone and named in the log.
import t from 'tap';
import pino from 'pino';
import { closingReserve, ShutdownDeadline } from '../../lib/server/shutdown.js';

function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

t.test('a step that never finishes is left undone at the deadline and named in the log; the next steps still run', async (t) => {
  const { log, lines } = capture();
  const d = new ShutdownDeadline(300, log);
  const started = performance.now();
  t.equal(await d.step('wait for Redis', () => new Promise(() => undefined)), false);
  const ms = performance.now() - started;
  t.ok(ms >= 250 && ms < 1_000, `waited until the deadline only (${Math.round(ms)} ms)`);
  t.equal(await d.step('save the snapshot', async () => undefined), true, 'a later quick step still runs');
  t.same(d.undone, ['wait for Redis']);
  t.ok(lines.some((l) => l.msg === 'shutdown: a closing step did not finish within the grace period; left undone' && l.step === 'wait for Redis'));
});

t.test('a step that fails is logged, never thrown', async (t) => {
  const { log, lines } = capture();
  const d = new ShutdownDeadline(1_000, log);
  t.equal(await d.step('close the store', () => Promise.reject(new Error('EIO'))), true);
  t.ok(lines.some((l) => l.msg === 'shutdown: a closing step failed' && l.step === 'close the store'));
  t.same(d.undone, []);
});

t.test('a cap shorter than what is left bounds a step', async (t) => {
  const d = new ShutdownDeadline(5_000, pino({ level: 'silent' }));
  const started = performance.now();
  t.equal(await d.step('let downloads settle', () => new Promise(() => undefined), 200), false);
  t.ok(performance.now() - started < 1_000);
});

t.test('the reserve kept for closing is a quarter of the grace, at most 2 s', async (t) => {
  t.equal(closingReserve(200), 50);
  t.equal(closingReserve(2_000), 500);
  t.equal(closingReserve(10_000), 2_000);
  t.equal(closingReserve(60_000), 2_000);
});
