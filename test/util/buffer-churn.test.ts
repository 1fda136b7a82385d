// Buffers streamed through and dropped are collected every CHURN_STEP bytes (lib/util/buffer-churn.ts),
// not only at V8's 64 MiB external-memory limit.
import { PerformanceObserver, constants } from 'node:perf_hooks';
import t from 'tap';
import { buffersPassed, churnCollections, CHURN_STEP } from '../../lib/util/buffer-churn.js';

t.test('one young-generation collection per CHURN_STEP bytes passed, none before, at most one per 20 ms', async (t) => {
  const minor: number[] = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (((e as unknown as { detail?: { kind?: number } }).detail)?.kind === constants.NODE_PERFORMANCE_GC_MINOR) minor.push(e.startTime);
  });
  obs.observe({ entryTypes: ['gc'] });
  t.teardown(() => obs.disconnect());
  const before = churnCollections();
  buffersPassed(CHURN_STEP / 2);
  buffersPassed(CHURN_STEP / 2 - 1);
  t.equal(churnCollections(), before, 'a byte short of the step: none');
  buffersPassed(1);
  t.equal(churnCollections(), before + 1, 'at the step: one');
  buffersPassed(CHURN_STEP);
  t.equal(churnCollections(), before + 1, 'not twice within 20 ms');
  await new Promise((r) => setTimeout(r, 25));
  buffersPassed(1);
  t.equal(churnCollections(), before + 2, 'the bytes counted meanwhile are collected at the next pass after it');
  await new Promise((r) => setTimeout(r, 25));
  for (let i = 0; i < 3; i++) buffersPassed(CHURN_STEP / 4);
  t.equal(churnCollections(), before + 2, 'the count started again after it');
  buffersPassed(CHURN_STEP / 4);
  t.equal(churnCollections(), before + 3);
  await new Promise((r) => setTimeout(r, 50));
  t.ok(minor.length >= 3, `V8 reported the young-generation collections (${minor.length})`);
});
