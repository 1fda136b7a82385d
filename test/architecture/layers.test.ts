// The layers of lib/ (docs/ARCHITECTURE.md, section 2) are rules that `npm run check` enforces
// with dependency-cruiser: lib/ itself passes them, and a tree that breaks them is refused, each
// break named by its rule.
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { tmpDir } from '../fixtures/util.js';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const DEPCRUISE = path.join(ROOT, 'node_modules/.bin/depcruise');
const CONFIG = path.join(ROOT, '.dependency-cruiser.mjs');

async function cruise(cwd: string): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await run(DEPCRUISE, ['lib', '--config', CONFIG, '--output-type', 'err'], { cwd });
    return { code: 0, out: stdout };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

async function tree(t: Parameters<typeof tmpDir>[0], files: Record<string, string>): Promise<string> {
  const dir = await tmpDir(t, 'stevedore-layers-');
  await fsp.copyFile(path.join(ROOT, 'tsconfig.json'), path.join(dir, 'tsconfig.json'));
  for (const [name, text] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await fsp.writeFile(path.join(dir, name), text);
  }
  return dir;
}

t.test('lib/ keeps its layers and has no import cycle', async (t) => {
  const { code, out } = await cruise(ROOT);
  t.equal(code, 0, out);
});

t.test('an import from a lower layer into a higher one is refused, naming the layer', async (t) => {
  const dir = await tree(t, {
    'lib/storage/store.ts': "import { policy } from '../cache/policy.js';\nexport const store = policy;\n",
    'lib/cache/policy.ts': 'export const policy = 1;\n',
  });
  const { code, out } = await cruise(dir);
  t.not(code, 0);
  t.match(out, /layer-storage: lib\/storage\/store\.ts → lib\/cache\/policy\.ts/);
});

t.test('an import cycle is refused, even within one folder and through type imports', async (t) => {
  const dir = await tree(t, {
    'lib/cluster/a.ts': "import type { B } from './b.js';\nexport interface A { b: B }\n",
    'lib/cluster/b.ts': "import type { A } from './a.js';\nexport interface B { a: A }\n",
  });
  const { code, out } = await cruise(dir);
  t.not(code, 0);
  t.match(out, /no-circular/);
});

t.test('imports downwards pass', async (t) => {
  const dir = await tree(t, {
    'lib/cache/policy.ts': "import { store } from '../storage/store.js';\nexport const policy = store;\n",
    'lib/storage/store.ts': "import { name } from '../oci/name.js';\nexport const store = name;\n",
    'lib/oci/name.ts': "export const name = 'x';\n",
  });
  const { code, out } = await cruise(dir);
  t.equal(code, 0, out);
});
