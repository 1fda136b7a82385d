// The image's production node_modules without what only a developer reads: source maps
// (*.map), TypeScript declarations (*.d.ts, *.d.mts, *.d.cts), and the directories `npm prune`
// leaves empty (the scopes of dev dependencies). Node loads none of them at run time.
//   node scripts/prune-node-modules.mjs node_modules
import { readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';

const DEV_ONLY = /\.(?:map|d\.ts|d\.mts|d\.cts)$/;
let removed = 0;

/** Prunes `dir`; true when it is left empty. */
function prune(dir) {
  let left = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && prune(p)) {
      rmdirSync(p);
    } else if (e.isFile() && DEV_ONLY.test(e.name)) {
      unlinkSync(p);
      removed++;
    } else {
      left++;
    }
  }
  return left === 0;
}

const root = process.argv[2];
if (!root) throw new Error('usage: prune-node-modules.mjs DIR');
prune(root);
process.stdout.write(`prune-node-modules: ${removed} files removed from ${root}\n`);
