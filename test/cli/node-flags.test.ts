// stevedore runs with NODE_FLAGS (lib/cli/node-flags.ts) however it is started: the bin's first
// line, `npm start`, the image's ENTRYPOINT (and the tests' and the benchmark's processes, which
// import the list). The flag bounds V8's young generation, which only the command line can do.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';
import { NODE_FLAGS } from '../../lib/cli/node-flags.js';
import { STEVEDORE_MAIN, stevedoreArgv } from '../fixtures/entry.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

t.test('the stevedore bin, npm start and the image start node with NODE_FLAGS', async (t) => {
  const main = await readFile(path.join(ROOT, 'lib/cli/main.ts'), 'utf8');
  t.equal(main.split('\n')[0], `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`, 'the bin (dist/cli/main.js keeps this line)');
  const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string>; bin: Record<string, string> };
  t.equal(pkg.bin.stevedore, 'dist/cli/main.js');
  t.match(pkg.scripts.start, new RegExp(`(^|&& )node ${NODE_FLAGS.join(' ')} dist/cli/main\\.js serve$`), 'npm start');
  const dockerfile = await readFile(path.join(ROOT, 'Dockerfile'), 'utf8');
  const entrypoints = dockerfile.split('\n').filter((l) => l.startsWith('ENTRYPOINT '));
  t.same(entrypoints.map((l) => JSON.parse(l.slice('ENTRYPOINT '.length)) as unknown), [['node', ...NODE_FLAGS, 'dist/cli/main.js']], 'the image');
  t.same(stevedoreArgv(['serve'], ['--x']), [process.execPath, ...NODE_FLAGS, '--x', STEVEDORE_MAIN, 'serve'], "the tests' processes (the benchmark's import the list too)");
});

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
  const semi = Number(/^--max-semi-space-size=(\d+)$/.exec(NODE_FLAGS.find((f) => f.startsWith('--max-semi-space-size=')) ?? '')?.[1]);
  t.ok(semi > 0, 'NODE_FLAGS set --max-semi-space-size');
  const bounded = await youngGeneration([...NODE_FLAGS]);
  t.ok(bounded > 0 && bounded <= 2 * semi, `with NODE_FLAGS: ${bounded} MiB ≤ 2 × ${semi}`);
  const unbounded = await youngGeneration([]);
  t.ok(unbounded > 2 * semi, `without: ${unbounded} MiB (Node's default is larger, so the flag is needed)`);
  const inProcess = await youngGeneration([], NODE_FLAGS.join(' '));
  t.ok(inProcess > 2 * semi, `v8.setFlagsFromString at run time: ${inProcess} MiB (no effect: the flag must be on the command line)`);
});
