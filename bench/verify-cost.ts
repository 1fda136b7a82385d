/**
 * Issue 29: the cost of a signature policy on a warm manifest by tag. Two `stevedore serve`
 * processes (dist/) in front of one registry holding a signed image (legacy cosign .sig): one with
 * `verify` mode require on the repository, one without a policy. wrk asks each for the manifest by
 * tag, alternately (off, require, require, off: ABBA), after one warm-up request each. Then the
 * cold pull: a fresh process and an empty store for each of `coldRuns` rounds per mode (ABBA), the
 * manifest by tag, its config and layer, timed from the first request to the last byte (under
 * `require` the first request also fetches and checks the signature).
 *
 *   TAP_TIMEOUT=0 TS_NODE_TRANSPILE_ONLY=1 node_modules/.bin/node --import @tapjs/typescript/import bench/verify-cost.ts [seconds] [coldRuns]
 * (the test fixtures it uses load tap, whose 30 s timeout would otherwise end the run; node_modules/.bin/node is the Node 24 of the repository)
 */
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildOciImage, MANIFEST_ACCEPT, pushImage } from '../test/fixtures/images.js';
import { startRegistry } from '../test/fixtures/registry.js';
import { keyPair, pushCosignSig } from '../test/fixtures/signing.js';
import { spawnStevedore } from '../test/fixtures/stevedore-process.js';
import { rawRequest } from '../test/fixtures/http-client.js';
import { runWrk, writeWrkScript } from './lib/wrk.js';

const seconds = Number(process.argv[2] ?? 5);
const coldRuns = Number(process.argv[3] ?? 6);
const teardowns: Array<() => unknown> = [];
const t = { teardown: (fn: () => unknown) => void teardowns.push(fn), fail: (m: string) => console.error(`FAIL ${m}`) };
try {
  const reg = await startRegistry();
  teardowns.push(() => reg.stop());
  const key = await keyPair(t, 'ec');
  const img = buildOciImage('bench/verify', { layers: 1, layerSize: 64 });
  await pushImage(reg.url, 'lab/app', 'v1', img);
  await pushCosignSig(reg.url, 'lab/app', img.manifest.digest, key.privateKey);
  const base = (dir: string): Record<string, unknown> => ({ upstreams: { 'ghcr.io': { url: reg.url } }, defaultUpstream: 'ghcr.io', storage: { path: dir } });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'verify-bench-'));
  const off = await spawnStevedore(t, base(path.join(dir, 'off')));
  const req = await spawnStevedore(t, { ...base(path.join(dir, 'require')), verify: { policies: [{ repository: 'ghcr.io/lab/**', mode: 'require', keys: [key.publicKeyFile] }] } });
  const script = await writeWrkScript(dir, MANIFEST_ACCEPT);
  const results: Record<string, number[]> = { off: [], require: [] };
  for (const [name, p] of [['off', off], ['require', req]] as const) {
    const r = await rawRequest(`${p.url}/v2/lab/app/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
    if (r.status !== 200) throw new Error(`${name}: warm-up answered ${r.status}`);
  }
  for (const [name, p] of [['off', off], ['require', req], ['require', req], ['off', off]] as const) {
    const w = await runWrk({ url: `${p.url}/v2/lab/app/manifests/v1`, script, connections: 32, threads: 1, durationS: seconds });
    if (w.errors) throw new Error(`${name}: ${w.errors} errors`);
    results[name]!.push(w.rps);
    console.log(`${name}: ${Math.round(w.rps)} req/s (p99 ${w.p99Ms.toFixed(2)} ms)`);
  }
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(`warm manifest by tag, require / off: ${(mean(results.require!) / mean(results.off!)).toFixed(3)}`);

  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const cold: Record<string, number[]> = { off: [], require: [] };
  for (let run = 0; run < coldRuns; run++) {
    for (const mode of run % 2 === 0 ? (['off', 'require'] as const) : (['require', 'off'] as const)) {
      const store = path.join(dir, `cold-${mode}-${run}`);
      const p = await spawnStevedore(t, mode === 'off' ? base(store) : { ...base(store), verify: { policies: [{ repository: 'ghcr.io/lab/**', mode: 'require', keys: [key.publicKeyFile] }] } });
      const started = performance.now();
      const m = await rawRequest(`${p.url}/v2/lab/app/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
      if (m.status !== 200) throw new Error(`cold ${mode}: the manifest answered ${m.status}`);
      for (const b of [img.config, ...img.layers]) {
        const r = await rawRequest(`${p.url}/v2/lab/app/blobs/${b.digest}`);
        if (r.status !== 200 || !r.body.equals(b.data)) throw new Error(`cold ${mode}: ${b.digest} answered ${r.status}`);
      }
      cold[mode]!.push(performance.now() - started);
      await p.kill('SIGTERM');
    }
  }
  console.log(`cold pull (manifest, config, layer), ms: off ${median(cold.off!).toFixed(1)} (${cold.off!.map((v) => v.toFixed(1)).join(', ')}), require ${median(cold.require!).toFixed(1)} (${cold.require!.map((v) => v.toFixed(1)).join(', ')})`);
  console.log(`cold pull, require / off (medians): ${(median(cold.require!) / median(cold.off!)).toFixed(2)}`);
} finally {
  for (const fn of teardowns.reverse()) await fn();
}
