/**
 * Issue 31, item 4: the cost of tracing on a warm manifest by tag. Two `stevedore serve` processes
 * (dist/) in front of one registry: one with `tracing` on (every request sampled: sampleRatio 1,
 * the worst case) exporting to an OTLP/HTTP receiver this script starts (it decodes nothing: it
 * counts bytes and answers 200, as a collector does), one with tracing off. wrk asks each for the
 * manifest by tag, alternately (off, on, on, off: ABBA), after one warm-up request each, in the
 * same run.
 *
 *   TAP_TIMEOUT=0 TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import bench/tracing-cost.ts [seconds] [sampleRatio]
 *
 * (TAP_TIMEOUT=0: the fixtures load tap, whose 30 s timeout would end runs of more than 5 s each.)
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildOciImage, MANIFEST_ACCEPT, pushImage } from '../test/fixtures/images.js';
import { startRegistry } from '../test/fixtures/registry.js';
import { spawnStevedore } from '../test/fixtures/stevedore-process.js';
import { rawRequest } from '../test/fixtures/http-client.js';
import { runWrk, writeWrkScript } from './lib/wrk.js';

const seconds = Number(process.argv[2] ?? 5);
const sampleRatio = Number(process.argv[3] ?? 1);
const teardowns: Array<() => unknown> = [];
const t = { teardown: (fn: () => unknown) => void teardowns.push(fn), fail: (m: string) => console.error(`FAIL ${m}`) };
try {
  // The OTLP/HTTP receiver: takes every export, counts it.
  let exports = 0;
  let exportedBytes = 0;
  const receiver = createServer((req, res) => {
    req.on('data', (c: Buffer) => (exportedBytes += c.length));
    req.on('end', () => {
      exports++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  teardowns.push(() => new Promise<void>((resolve) => receiver.close(() => resolve())));
  const endpoint = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/v1/traces`;

  const reg = await startRegistry();
  teardowns.push(() => reg.stop());
  const img = buildOciImage('bench/tracing', { layers: 1, layerSize: 64 });
  await pushImage(reg.url, 'lab/app', 'v1', img);
  const base = (dir: string): Record<string, unknown> => ({ upstreams: { 'ghcr.io': { url: reg.url } }, defaultUpstream: 'ghcr.io', storage: { path: dir } });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tracing-bench-'));
  const off = await spawnStevedore(t, base(path.join(dir, 'off')));
  const on = await spawnStevedore(t, { ...base(path.join(dir, 'on')), tracing: { enabled: true, endpoint, sampleRatio, exportInterval: '1s' } });
  const script = await writeWrkScript(dir, MANIFEST_ACCEPT);
  const results: Record<string, number[]> = { off: [], on: [] };
  for (const [name, p] of [['off', off], ['on', on]] as const) {
    const r = await rawRequest(`${p.url}/v2/lab/app/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
    if (r.status !== 200) throw new Error(`${name}: warm-up answered ${r.status}`);
  }
  for (const [name, p] of [['off', off], ['on', on], ['on', on], ['off', off]] as const) {
    const w = await runWrk({ url: `${p.url}/v2/lab/app/manifests/v1`, script, connections: 32, threads: 1, durationS: seconds });
    if (w.errors) throw new Error(`${name}: ${w.errors} errors`);
    results[name]!.push(w.rps);
    console.log(`${name}: ${Math.round(w.rps)} req/s (p99 ${w.p99Ms.toFixed(2)} ms)`);
  }
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(`warm manifest by tag, tracing on (sampleRatio ${sampleRatio}) / off: ${(mean(results.on!) / mean(results.off!)).toFixed(3)}`);
  // The exporter's queue is bounded (2048 spans by default): past it spans are dropped, not buffered.
  await new Promise((r) => setTimeout(r, 1500));
  console.log(`exports received: ${exports} (${(exportedBytes / 1024 / 1024).toFixed(1)} MiB)`);
} finally {
  for (const fn of teardowns.reverse()) await fn();
}
