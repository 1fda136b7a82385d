// The runtime: stevedore runs on Node.js 24 LTS (Node 20 is end-of-life). The project brings its
// own Node 24 (the `node` package puts it first on the PATH of npm scripts), so the test runner, and
// every stevedore process the tests start, run on it even on a machine whose own Node is older.
// .ci/run prints the comment below: the version a real `stevedore serve` reports.
import path from 'node:path';
import t from 'tap';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { tmpDir } from '../fixtures/util.js';

const SUPPORTED = /^v24\.\d+\.\d+$/;

t.test('a stevedore process started by the tests runs on Node.js 24 and says so when it listens', async (t) => {
  const dir = await tmpDir(t);
  const p = await spawnStevedore(t, { storage: { path: path.join(dir, 'store') }, upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } } });
  const listening = p.logs.find((l) => l.msg === 'stevedore listening');
  const node = listening?.node;
  t.comment(`stevedore serve (pid ${p.pid}) runs on Node.js ${String(node)}`);
  t.match(node, SUPPORTED, 'the listening line names a Node.js 24.x runtime');
  const health = await fetch(`${p.url}/healthz`);
  t.equal(health.status, 200, 'and it answers');
  await p.kill('SIGTERM');
});

t.test('the test runner itself runs on Node.js 24', async (t) => {
  t.match(process.version, SUPPORTED, `tap runs the tests on ${process.version} (${process.execPath})`);
});
