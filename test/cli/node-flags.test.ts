// stevedore runs with NODE_FLAGS (lib/cli/node-flags.ts) however it is started: the bin's first
// line, `npm start`, the image's ENTRYPOINT (and the tests' and the benchmark's processes, which
// import the list). The flags bound V8's young generation and the old generation's growth, which
// only the command line can do.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { NODE_ENV, NODE_FLAGS } from '../../lib/cli/node-flags.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { tmpDir } from '../fixtures/util.js';
import { STEVEDORE_MAIN, stevedoreArgv } from '../fixtures/entry.js';

const envWords = Object.entries(NODE_ENV)
  .map(([k, v]) => `${k}=${v}`)
  .join(' ');
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

t.test('the stevedore bin, npm start and the image start node with NODE_FLAGS', async (t) => {
  const main = await readFile(path.join(ROOT, 'lib/cli/main.ts'), 'utf8');
  t.equal(main.split('\n')[0], `#!/usr/bin/env -S ${envWords} node ${NODE_FLAGS.join(' ')}`, 'the bin (dist/cli/main.js keeps this line)');
  const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string>; bin: Record<string, string> };
  t.equal(pkg.bin.stevedore, 'dist/cli/main.js');
  t.match(pkg.scripts.start, new RegExp(`(^|&& )${envWords} node ${NODE_FLAGS.join(' ')} dist/cli/main\\.js serve$`), 'npm start');
  const dockerfile = await readFile(path.join(ROOT, 'Dockerfile'), 'utf8');
  const entrypoints = dockerfile.split('\n').filter((l) => l.startsWith('ENTRYPOINT '));
  t.same(entrypoints.map((l) => JSON.parse(l.slice('ENTRYPOINT '.length)) as unknown), [['node', ...NODE_FLAGS, 'dist/cli/main.js']], 'the image');
  for (const [k, v] of Object.entries(NODE_ENV)) t.match(dockerfile, new RegExp(`\\n(ENV |    )[^\\n]*\\b${k}=${v}\\b`), `the image's ENV sets ${k}`);
  t.same(stevedoreArgv(['serve'], ['--x']), [process.execPath, ...NODE_FLAGS, '--x', STEVEDORE_MAIN, 'serve'], "the tests' processes (the benchmark's import the list too)");
});

/** The number NODE_FLAGS give `--name=N`; NaN when they do not set it. */
function flagValue(name: string): number {
  return Number(NODE_FLAGS.find((f) => f.startsWith(`${name}=`))?.slice(name.length + 1) ?? NaN);
}

// Allocates short-lived objects and reports the largest size the young generation reached (MiB).
const YOUNG = `
const v8 = require('node:v8');
if (process.argv[1]) v8.setFlagsFromString(process.argv[1]);
const keep = [];
let max = 0;
for (let i = 0; i < 2e6; i++) {
  keep.push({ i, s: 'x' + i, a: [i] });
  if (keep.length > 20000) keep.splice(0, 10000);
  if (i % 50000 === 0) max = Math.max(max, v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size);
}
console.log(max / 1048576);
`;

async function youngGeneration(nodeArgs: string[], inProcess = ''): Promise<number> {
  const { stdout } = await promisify(execFile)(process.execPath, [...nodeArgs, '-e', YOUNG, '--', inProcess], { timeout: 60_000 });
  return Number(stdout.trim());
}

t.test('NODE_FLAGS bound the young generation, which setting the flag from inside the process does not', async (t) => {
  const semi = flagValue('--max-semi-space-size');
  t.ok(semi > 0, 'NODE_FLAGS set --max-semi-space-size');
  const bounded = await youngGeneration([...NODE_FLAGS]);
  // Two semi-spaces, and at times up to a third's worth of pages V8 holds through a scavenge (with
  // 4 MiB semi-spaces: 8 MiB in 7 runs of 12, 8.25–12.25 in the others; 64 MiB without the flag).
  t.ok(bounded > 0 && bounded <= 3 * semi + 1, `with NODE_FLAGS: ${bounded} MiB ≤ 3 × ${semi} + 1`);
  const unbounded = await youngGeneration([]);
  t.ok(unbounded > 3 * semi + 1, `without: ${unbounded} MiB (Node's default is larger, so the flag is needed)`);
  const inProcess = await youngGeneration([], NODE_FLAGS.join(' '));
  t.ok(inProcess > 3 * semi + 1, `v8.setFlagsFromString at run time: ${inProcess} MiB (no effect: the flag must be on the command line)`);
});

// Fills the old generation with ~16 MiB that stays alive, then collects: V8 prints the limit at
// which it will collect again ("[HeapController] Limit: old size: N KB, new limit: M KB").
const OLD = `const keep = []; for (let i = 0; i < 3e5; i++) keep.push({ i }); gc();`;

async function oldGenerationLimit(nodeArgs: string[]): Promise<{ size: number; limit: number }> {
  const { stdout } = await promisify(execFile)(process.execPath, [...nodeArgs, '--expose-gc', '--trace-gc-verbose', '-e', OLD], { timeout: 60_000, maxBuffer: 64 * 1024 * 1024 });
  const m = [...stdout.matchAll(/\[HeapController\] Limit: old size: (\d+) KB, new limit: (\d+) KB/g)].pop();
  if (!m) throw new Error(`no "[HeapController] Limit" line in node's --trace-gc-verbose output:\n${stdout.slice(-2000)}`);
  return { size: Number(m[1]) / 1024, limit: Number(m[2]) / 1024 };
}

t.test("NODE_FLAGS hold the old generation to 1.2× what a full collection left (V8's floor of 8 MiB more aside)", async (t) => {
  const percent = flagValue('--heap-growing-percent');
  t.ok(percent > 0, 'NODE_FLAGS set --heap-growing-percent');
  const semi = flagValue('--max-semi-space-size');
  // V8: limit = max(size × factor, size + 8 MiB) + the young generation's capacity (≤ one semi-space).
  const bound = (size: number): number => Math.max(size * (1 + percent / 100), size + 8) + semi + 1;
  const withFlags = await oldGenerationLimit([...NODE_FLAGS]);
  t.ok(withFlags.limit <= bound(withFlags.size), `with NODE_FLAGS: next full collection at ${withFlags.limit.toFixed(1)} MiB for ${withFlags.size.toFixed(1)} MiB alive (≤ ${bound(withFlags.size).toFixed(1)})`);
  const without = await oldGenerationLimit(NODE_FLAGS.filter((f) => !f.startsWith('--heap-growing-percent=')));
  t.ok(without.limit > bound(without.size), `without the flag: at ${without.limit.toFixed(1)} MiB for ${without.size.toFixed(1)} MiB (V8 alone lets it grow further, so the flag is needed)`);
});

/** The environment of a running process, from /proc. */
async function environOf(pid: number): Promise<Record<string, string>> {
  const text = await readFile(`/proc/${pid}/environ`, 'utf8');
  return Object.fromEntries(text.split('\0').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
}

/** The pids whose parent is `pid`. */
async function childrenOf(pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8');
  return text.split(' ').filter(Boolean).map(Number);
}

async function workersStartedWith(t: Test, env: Record<string, string | undefined>): Promise<Array<Record<string, string>>> {
  const storage = await tmpDir(t, 'node-env-');
  const sd = await spawnStevedore(t, { storage: { path: storage }, upstreams: { up: { url: 'http://127.0.0.1:9' } }, defaultUpstream: 'up', server: { workers: 2 } }, { env });
  t.teardown(() => sd.kill());
  const kids = await childrenOf(sd.pid);
  t.equal(kids.length, 2, 'two workers');
  return Promise.all(kids.map(environOf));
}

t.test('workers forked by the supervisor get NODE_ENV when stevedore was started without it', async (t) => {
  const envs = await workersStartedWith(t, Object.fromEntries(Object.keys(NODE_ENV).map((k) => [k, undefined])));
  for (const e of envs) for (const [k, v] of Object.entries(NODE_ENV)) t.equal(e[k], v, `worker: ${k}`);
});

t.test("a value of NODE_ENV's variables set by the user is the workers' too", async (t) => {
  const envs = await workersStartedWith(t, { MALLOC_MMAP_THRESHOLD_: '65536' });
  for (const e of envs) t.equal(e.MALLOC_MMAP_THRESHOLD_, '65536');
});
