/**
 * Warm manifests, two builds side by side (issue 28): stevedore built from each checkout given
 * (default /work/main, then this one), each on its own store in front of one upstream registry
 * holding scenario 3's image, then wrk (64 connections, 2 threads, as scenarios 3 and 4) on the
 * manifest by tag and by digest: one warm-up run each, then `--runs` runs each, alternating which
 * build goes first (ABBA). Per run: req/s, p50, p99 and the stevedore process's CPU time per
 * request (utime + stime of its processes, supervisor and workers, over the run / requests answered), the figure least moved by
 * other load on a shared machine. Prints every run and the medians.
 *
 *   TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import bench/manifest-ab.ts \
 *     [--roots /work/main,/work/wt-x] [--runs 4] [--seconds 4] [--only tag|digest] [--cpu-prof DIR] [--node-arg I:ARG]
 *     [--workers N|auto]
 *
 * `--node-arg I:ARG` (repeatable): an extra node option for the I-th build's process only (0-based,
 * after the shipped NODE_FLAGS, so a V8 flag given here wins): one checkout twice
 * (`--roots /work/main,/work/main --node-arg 1:--max-semi-space-size=8`) compares a setting.
 * `--cpu-prof DIR`: each stevedore under node --cpu-prof, its profile in DIR/<i>/ (bench/profile-top.ts reads it).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { removeDir, tmpDir } from '../test/fixtures/util.js';
import { buildImage, MANIFEST_ACCEPT } from './lib/data.js';
import { pushImage } from './lib/registry-api.js';
import { cpuSecondsOf } from './lib/proc.js';
import { REPO_APP } from './lib/scenario.js';
import { buildStevedore, ROOT, setStevedoreWorkers, startStevedore, type StevedoreServer } from './lib/servers.js';
import { startUpstream } from './lib/upstream.js';
import { runWrk, writeWrkScript } from './lib/wrk.js';

const { values } = parseArgs({
  options: {
    roots: { type: 'string', default: `/work/main,${ROOT}` },
    runs: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '4' },
    only: { type: 'string' },
    'cpu-prof': { type: 'string' },
    'node-arg': { type: 'string', multiple: true },
    workers: { type: 'string', default: 'auto' },
  },
});
const roots = values.roots.split(',');
const runs = Number(values.runs);
const seconds = Number(values.seconds);
setStevedoreWorkers(values.workers === 'auto' ? 'auto' : Number(values.workers));
const kinds = values.only ? [values.only] : ['tag', 'digest'];
/** The extra node options of the i-th build (`--node-arg I:ARG`). */
function extraArgs(i: number): string[] {
  return (values['node-arg'] ?? []).flatMap((a) => {
    const m = /^(\d+):(.+)$/.exec(a);
    if (!m) throw new Error(`--node-arg ${a}: expected I:ARG (the build's index, from 0, then a node option)`);
    return Number(m[1]) === i ? [m[2]!] : [];
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const upstream = await startUpstream();
const dir = await tmpDir(undefined, 'stevedore-bench-ab-');
const servers: Array<{ root: string; s: StevedoreServer }> = [];
try {
  const app = buildImage('app', [2 * 1024, 4 * 1024, 8 * 1024]);
  await pushImage(upstream.directUrl, REPO_APP, 'v1', app);
  const script = await writeWrkScript(dir, MANIFEST_ACCEPT);
  for (const [i, root] of roots.entries()) {
    const build = await buildStevedore(root);
    const storage = path.join(dir, `store-${i}`);
    await fsp.mkdir(storage);
    const nodeArgs = values['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', path.join(path.resolve(values['cpu-prof']), String(i))] : [];
    const extra = extraArgs(i);
    nodeArgs.push(...extra);
    const label = `${root}${extra.length > 0 ? ` ${extra.join(' ')}` : ''} #${i}`;
    const s = await startStevedore({ build, storage, upstreamUrl: upstream.url, nodeArgs, name: `stevedore (${label})` });
    servers.push({ root: label, s });
    for (const ref of ['v1', app.manifestDigest]) {
      const r = await fetch(`${s.url}/v2/${REPO_APP}/manifests/${ref}`, { headers: { accept: MANIFEST_ACCEPT } });
      await r.arrayBuffer();
      if (r.status !== 200) throw new Error(`${root}: warming ${ref} answered ${r.status}`);
    }
  }
  const out: Record<string, Record<string, Array<{ rps: number; p50: number; p99: number; cpuUs: number }>>> = {};
  for (const kind of kinds) {
    const ref = kind === 'tag' ? 'v1' : app.manifestDigest;
    const url = (s: StevedoreServer): string => `${s.url}/v2/${REPO_APP}/manifests/${ref}`;
    for (const { s } of servers) await runWrk({ url: url(s), script, connections: 64, threads: 2, durationS: 1 });
    for (let run = 0; run < runs; run++) {
      for (const { root, s } of run % 2 === 0 ? servers : [...servers].reverse()) {
        const cpu0 = cpuSecondsOf(s.pids());
        const w = await runWrk({ url: url(s), script, connections: 64, threads: 2, durationS: seconds });
        if (w.errors > 0 || w.requests === 0) throw new Error(`${root} ${kind}: ${w.errors} errors, ${w.requests} requests`);
        const cpuUs = ((cpuSecondsOf(s.pids()) - cpu0) * 1e6) / w.requests;
        ((out[kind] ??= {})[root] ??= []).push({ rps: w.rps, p50: w.p50Ms, p99: w.p99Ms, cpuUs });
        console.log(`${kind} run ${run + 1} ${root}: ${Math.round(w.rps)} req/s, p50 ${w.p50Ms} ms, p99 ${w.p99Ms} ms, ${cpuUs.toFixed(1)} µs CPU/request`);
      }
    }
  }
  for (const [kind, byRoot] of Object.entries(out)) {
    for (const [root, xs] of Object.entries(byRoot)) {
      const f = (k: 'rps' | 'p50' | 'p99' | 'cpuUs'): string => `${median(xs.map((x) => x[k])).toFixed(k === 'rps' ? 0 : 1)} (${Math.min(...xs.map((x) => x[k])).toFixed(k === 'rps' ? 0 : 1)} – ${Math.max(...xs.map((x) => x[k])).toFixed(k === 'rps' ? 0 : 1)})`;
      console.log(`MEDIAN ${kind} ${root}: req/s ${f('rps')}, p50 ms ${f('p50')}, p99 ms ${f('p99')}, µs CPU/request ${f('cpuUs')}`);
    }
  }
} finally {
  for (const { s } of servers) await s.stop().catch((err: unknown) => console.error(err));
  await upstream.stop();
  await removeDir(dir);
}
