/**
 * Request-rate load with wrk (a C load generator, separate process). A Lua script sets the Accept
 * header every registry client sends and prints wrk's summary and latency percentiles as JSON.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { run, which } from '../../test/fixtures/util.js';

export interface WrkResult {
  requests: number;
  durationS: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Non-2xx/3xx answers plus socket errors and timeouts. */
  errors: number;
}

export async function writeWrkScript(dir: string, accept: string): Promise<string> {
  const file = path.join(dir, 'registry.lua');
  await fsp.writeFile(
    file,
    [
      'wrk.method = "GET"',
      `wrk.headers["Accept"] = ${JSON.stringify(accept)}`,
      'done = function(summary, latency, requests)',
      '  local e = summary.errors',
      '  io.write(string.format("BENCHJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"errors\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d,\\"max_us\\":%d}\\n",',
      '    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,',
      '    latency:percentile(50), latency:percentile(99), latency.max))',
      'end',
      '',
    ].join('\n'),
  );
  return file;
}

export async function runWrk(opts: { url: string; script: string; connections: number; threads: number; durationS: number }): Promise<WrkResult> {
  const r = await run(
    which('wrk'),
    ['-t', String(opts.threads), '-c', String(opts.connections), '-d', `${opts.durationS}s`, '--timeout', '10s', '-s', opts.script, opts.url],
    { timeoutMs: (opts.durationS + 30) * 1000 },
  );
  const line = r.stdout.split('\n').find((l) => l.startsWith('BENCHJSON '));
  if (r.code !== 0 || !line) throw new Error(`wrk failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  const j = JSON.parse(line.slice('BENCHJSON '.length)) as {
    requests: number;
    duration_us: number;
    errors: number;
    p50_us: number;
    p99_us: number;
    max_us: number;
  };
  const durationS = j.duration_us / 1e6;
  return {
    requests: j.requests,
    durationS,
    rps: j.requests / durationS,
    p50Ms: j.p50_us / 1000,
    p99Ms: j.p99_us / 1000,
    maxMs: j.max_us / 1000,
    errors: j.errors,
  };
}
