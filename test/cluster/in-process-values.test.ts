// The in-process shared values (tag freshness, upstream health and quota records of a process
// without Redis): bounded in count, least recently used first; expiry as before.
import t from 'tap';
import { IN_PROCESS_VALUES_MAX, InProcessValues } from '../../lib/cluster/in-process.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('holds at most its bound: a process pulling ever-new tags does not keep every record', async (t) => {
  const v = new InProcessValues(100);
  t.teardown(() => v.close());
  for (let i = 0; i < 150; i++) await v.set(`tag:docker.io/ci/app:sha-${i}`, { at: i, digest: `sha256:${String(i).padStart(64, '0')}` }, 86_400_000);
  t.equal(v.size, 100, 'the bound');
  t.same(await v.get('tag:docker.io/ci/app:sha-149'), { at: 149, digest: `sha256:${'149'.padStart(64, '0')}` }, 'the newest is there');
  t.equal(await v.get('tag:docker.io/ci/app:sha-0'), null, 'the oldest went (its tag is checked with the upstream again)');
});

t.test('a record read keeps its place', async (t) => {
  const v = new InProcessValues(10);
  t.teardown(() => v.close());
  await v.set('health:docker.io', { failures: 0 }, 86_400_000);
  for (let i = 0; i < 20; i++) {
    await v.set(`tag:docker.io/x:${i}`, { at: i }, 86_400_000);
    t.same(await v.get('health:docker.io'), { failures: 0 }, `still there after ${i + 1} more`);
  }
});

t.test('an expired record is gone', async (t) => {
  const v = new InProcessValues();
  t.teardown(() => v.close());
  await v.set('quota:docker.io', { left: 3 }, 50);
  t.same(await v.get('quota:docker.io'), { left: 3 });
  await sleep(80);
  t.equal(await v.get('quota:docker.io'), null);
  await v.set('k', 1, 60_000);
  await v.delete('k');
  t.equal(await v.get('k'), null, 'delete');
});

t.test('the default bound', async (t) => {
  t.equal(IN_PROCESS_VALUES_MAX, 20_000);
});
