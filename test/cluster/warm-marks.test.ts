// Warm marks (pre-heat, lib/cluster/warm-marks.ts): what a node believes of a mark, and when a mark is done.
import t from 'tap';
import { InProcessCoordinator } from '../../lib/cluster/in-process.js';
import { markProgress, parseNodeSelection, parseWarmMark, recordMark, warmedKey, NODES_KEY, type WarmMark } from '../../lib/cluster/warm-marks.js';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;

function mark(over: Partial<WarmMark> = {}): WarmMark {
  const now = Date.now();
  return {
    v: 1,
    id: '0123456789abcdef',
    images: [
      { registry: 'docker.io', name: 'library/app', tag: 'v1', digest: D1 },
      { registry: 'ghcr.io', name: 'org/worker', tag: null, digest: D2 },
    ],
    platforms: null,
    nodes: { kind: 'all' },
    created: now,
    expires: now + 3600_000,
    by: 'test',
    ...over,
  };
}

t.test('--nodes takes all, a number of nodes or a percentage, and nothing else', async (t) => {
  t.same(parseNodeSelection('all'), { kind: 'all' });
  t.same(parseNodeSelection('3'), { kind: 'count', n: 3 });
  t.same(parseNodeSelection('50%'), { kind: 'percent', p: 50 });
  t.same(parseNodeSelection('100%'), { kind: 'percent', p: 100 });
  for (const bad of ['', '0', '-1', '1.5', '0%', '101%', 'most', '3 nodes', '1e3']) t.equal(parseNodeSelection(bad), null, `${JSON.stringify(bad)} refused`);
});

t.test('a mark from the coordinator is believed only when every field has its form', async (t) => {
  t.ok('mark' in parseWarmMark(JSON.stringify(mark())), 'a well-formed mark');
  const bad: Array<[string, unknown]> = [
    ['a digest that is not one', { ...mark(), images: [{ registry: 'docker.io', name: 'library/app', tag: 'v1', digest: 'sha256:abc' }] }],
    ['a name with ..', { ...mark(), images: [{ registry: 'docker.io', name: '../etc', tag: null, digest: D1 }] }],
    ['a bad tag', { ...mark(), images: [{ registry: 'docker.io', name: 'a/b', tag: '-x', digest: D1 }] }],
    ['no image', { ...mark(), images: [] }],
    ['33 images', { ...mark(), images: Array.from({ length: 33 }, () => ({ registry: 'docker.io', name: 'a/b', tag: null, digest: D1 })) }],
    ['an unknown key', { ...mark(), url: 'http://evil.example' }],
    ['a selection of 0 nodes', { ...mark(), nodes: { kind: 'count', n: 0 } }],
    ['more than 7 days', { ...mark(), expires: Date.now() + 8 * 24 * 3600_000 }],
    ['another version', { ...mark(), v: 2 }],
  ];
  for (const [what, m] of bad) {
    const r = parseWarmMark(JSON.stringify(m));
    t.ok('error' in r, `${what}: refused`);
  }
  t.ok('error' in parseWarmMark('not json'), 'not JSON: refused');
  t.ok('error' in parseWarmMark('x'.repeat(70_000)), 'over 64 KiB: refused');
});

t.test('a mark for all nodes is finished once every live node reported every image, warm or failed', async (t) => {
  const c = new InProcessCoordinator();
  const scope = c.scope('stevedore:peers:default:');
  const m = mark();
  await recordMark(scope, m);
  const until = Date.now() + 60_000;
  await scope.directory.announce([NODES_KEY], 'http://a', until, 120_000);
  await scope.directory.announce([NODES_KEY], 'http://b', until, 120_000);
  const report = (node: string, digest: string, ok: boolean): Promise<void> =>
    scope.directory.announce([warmedKey(m.id)], JSON.stringify({ node, digest, ok, ...(ok ? {} : { error: 'upstream said 404' }) }), until, 120_000);
  await report('http://a', D1, true);
  await report('http://a', D1, true);
  await report('http://a', D2, true);
  let p = await markProgress(scope, m, Date.now());
  t.equal(p.finished, false, 'one node of two is not finished, however often it reported');
  t.same(p.warm, ['http://a']);
  await report('http://b', D1, true);
  await report('http://b', D2, false);
  p = await markProgress(scope, m, Date.now());
  t.equal(p.finished, true, 'both reported');
  t.same(p.warm, ['http://a'], 'only a is warm');
  t.same(p.failed, [{ node: 'http://b', digest: D2, error: 'upstream said 404' }]);
  await scope.directory.announce([warmedKey(m.id)], '{"node":"http://c","digest":"nope","ok":true}', until, 120_000);
  t.same((await markProgress(scope, m, Date.now())).warm, ['http://a'], 'a malformed report counts for nothing');
  await c.close();
});

t.test('a mark for N nodes is finished when N nodes reported, or every live node when fewer run', async (t) => {
  const c = new InProcessCoordinator();
  const scope = c.scope('stevedore:peers:default:');
  const m = mark({ nodes: { kind: 'count', n: 3 }, images: [{ registry: 'docker.io', name: 'library/app', tag: 'v1', digest: D1 }] });
  const until = Date.now() + 60_000;
  for (const n of ['http://a', 'http://b']) await scope.directory.announce([NODES_KEY], n, until, 120_000);
  await scope.directory.announce([warmedKey(m.id)], JSON.stringify({ node: 'http://a', digest: D1, ok: true }), until, 120_000);
  let p = await markProgress(scope, m, Date.now());
  t.equal(p.wanted, 2, 'two nodes run: two are wanted');
  t.equal(p.finished, false);
  await scope.directory.announce([warmedKey(m.id)], JSON.stringify({ node: 'http://b', digest: D1, ok: true }), until, 120_000);
  p = await markProgress(scope, m, Date.now());
  t.equal(p.finished, true);
  await c.close();
});
