/**
 * The benchmark: stevedore side by side with CNCF distribution in proxy mode and nginx (sendfile),
 * every server a separate process on 127.0.0.1, the load from a separate client process (undici)
 * or wrk. Runs are interleaved (each run rotates which contender goes first), after one discarded
 * warm-up run per contender.
 *
 *   npm run bench          full run (~12 min), writes bench/RESULTS.md
 *   npm run bench:quick    seconds, tiny sizes, one run; writes to a temp file
 *
 * Options (after `--`): --quick, --out FILE (Markdown), --json FILE (raw figures),
 * --only s1,s3,... (a subset of the scenarios), --runs N, --cpu-prof DIR (stevedore runs with
 * node --cpu-prof, one .cpuprofile per process written to DIR when it stops), --node-arg ARG
 * (repeatable: an extra node option for every stevedore process, e.g. --node-arg=--require=x.cjs).
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { removeDir, tmpDir } from '../test/fixtures/util.js';
import { LoadClient } from './lib/client-api.js';
import { buildImage, contentBlob, MANIFEST_ACCEPT, MediaType } from './lib/data.js';
import { params as paramsFor, type Params } from './lib/params.js';
import { cpuTicks, loadAvg, memStatus, PeakRss } from './lib/proc.js';
import { pushGenerated, pushImage } from './lib/registry-api.js';
import { collectMeta, renderReport, type Results } from './lib/report.js';
import { buildStevedore, ROOT, startDistribution, startNginx, startStevedore, type Server, type StevedoreBuild } from './lib/servers.js';
import { rotate, shuffled, percentile } from './lib/stats.js';
import { fillStore } from './lib/store-fill.js';
import { startUpstream, type Upstream } from './lib/upstream.js';
import { runWrk, writeWrkScript } from './lib/wrk.js';

const REPO_BIG = 'bench/big';
const REPO_BLOBS = 'bench/blobs';
const REPO_APP = 'bench/app';
const REPO_PULL = 'bench/pull';
const ALL = ['s1', 's2', 's3', 's4', 's5', 's6', 's7'] as const;
type ScenarioId = (typeof ALL)[number];

function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function blobPath(repo: string, digest: string): string {
  return `/v2/${repo}/blobs/${digest}`;
}

function storeFile(root: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return path.join(root, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

interface Ctx {
  p: Params;
  upstream: Upstream;
  client: LoadClient;
  build: StevedoreBuild;
  nodeArgs: string[];
  results: Results;
  big: ReturnType<typeof contentBlob>;
  s2blobs: Array<ReturnType<typeof contentBlob>>;
  app: ReturnType<typeof buildImage>;
  pullImg: ReturnType<typeof buildImage>;
  /** Warm contenders, started on first use. */
  warm?: { stevedore: Server; distribution: Server; nginx: Server; all: Server[] };
  cleanups: Array<() => Promise<void>>;
}

async function check<T extends { failed: number; errors: string[] }>(what: string, r: Promise<T>): Promise<T> {
  const res = await r;
  if (res.failed > 0) throw new Error(`${what}: ${res.failed} request(s) failed: ${res.errors.join('; ')}`);
  return res;
}

/** Starts stevedore, distribution and nginx, and fills both proxies with everything the warm scenarios ask for. */
async function warmServers(ctx: Ctx): Promise<NonNullable<Ctx['warm']>> {
  if (ctx.warm) return ctx.warm;
  const storage = await tmpDir(undefined, 'stevedore-bench-store-');
  ctx.cleanups.push(() => removeDir(storage));
  const stevedore = await startStevedore({ build: ctx.build, storage, upstreamUrl: ctx.upstream.url, nodeArgs: ctx.nodeArgs });
  ctx.cleanups.push(() => stevedore.stop());
  const distribution = await startDistribution(ctx.upstream.url);
  ctx.cleanups.push(() => distribution.stop());
  const paths = [blobPath(REPO_BIG, ctx.big.digest), ...ctx.s2blobs.map((b) => blobPath(REPO_BLOBS, b.digest))];
  const manifests = [`/v2/${REPO_APP}/manifests/v1`, `/v2/${REPO_APP}/manifests/${ctx.app.manifestDigest}`];
  for (const s of [stevedore, distribution]) {
    log(`filling ${s.name} (cold pulls through it)`);
    await check(`fill ${s.name}`, ctx.client.fetch({ origin: s.url, paths, concurrency: 4 }));
    await check(`fill ${s.name} manifests`, ctx.client.fetch({ origin: s.url, paths: manifests, concurrency: 1, headers: { accept: MANIFEST_ACCEPT } }));
  }
  const nginx = await startNginx(storage, [
    { path: `/v2/${REPO_APP}/manifests/v1`, file: storeFile(storage, ctx.app.manifestDigest), contentType: MediaType.dockerManifest },
  ]);
  ctx.cleanups.push(() => nginx.stop());
  await check('nginx serves the store', ctx.client.fetch({ origin: nginx.url, paths: [...paths.slice(1), ...manifests], concurrency: 4 }));
  ctx.warm = { stevedore, distribution, nginx, all: [stevedore, distribution, nginx] };
  return ctx.warm;
}

/** One discarded warm-up run per contender, then `runs` interleaved runs. */
async function sideBySide<T>(
  ctx: Ctx,
  contenders: string[],
  measure: (name: string, run: number) => Promise<T>,
  record: (name: string, r: T) => void,
  warmup: boolean,
): Promise<void> {
  if (warmup) for (const c of contenders) await measure(c, -1);
  for (let run = 0; run < ctx.p.runs; run++) {
    for (const c of rotate(contenders, run)) record(c, await measure(c, run));
  }
}

// ---- scenario 1: one warm ~1 GiB blob, one client ---------------------------------------------

async function scenario1(ctx: Ctx): Promise<void> {
  const w = await warmServers(ctx);
  const path1 = blobPath(REPO_BIG, ctx.big.digest);
  log(`s1: warm blob of ${ctx.big.size} bytes, one client, ${ctx.p.s1Repeat} GET(s) in a row per run (raw HTTP client and undici, alternating)`);
  const out: Results['s1'] = {};
  const once = async (s: Server, engine: 'raw' | 'undici'): Promise<number> => {
    const n = ctx.p.s1Repeat;
    const r = await check(`s1 ${s.name}`, ctx.client.fetch({ origin: s.url, paths: Array.from({ length: n }, () => path1), concurrency: 1, engine }));
    if (r.bytes !== ctx.big.size * n) throw new Error(`s1 ${s.name}: ${r.bytes} of ${ctx.big.size * n} bytes`);
    return r.bytes / (1024 * 1024) / (r.wallMs / 1000);
  };
  await sideBySide(
    ctx,
    w.all.map((s) => s.name),
    async (name, run) => {
      const s = w.all.find((x) => x.name === name)!;
      const engines = rotate(['raw', 'undici'] as const, Math.max(0, run));
      const a = await once(s, engines[0]!);
      const b = await once(s, engines[1]!);
      return engines[0] === 'raw' ? { raw: a, undici: b } : { raw: b, undici: a };
    },
    (name, r) => {
      const o = (out[name] ??= { mibps: [], undici: [] });
      o.mibps.push(r.raw);
      o.undici.push(r.undici);
    },
    true,
  );
  ctx.results.s1 = out;
}

// ---- scenario 2: warm blobs of 1-32 MiB, 64 clients ---------------------------------------------

async function scenario2(ctx: Ctx): Promise<void> {
  const w = await warmServers(ctx);
  const { clients, repeat } = ctx.p.s2;
  const all = ctx.s2blobs.flatMap((b) => Array.from({ length: repeat }, () => blobPath(REPO_BLOBS, b.digest)));
  log(
    `s2: ${all.length} GETs of warm blobs (${ctx.s2blobs.length} blobs, ${ctx.p.s2.sizes[0]}..${ctx.p.s2.sizes.at(-1)} bytes), ` +
      `${clients} concurrent clients (raw HTTP client and undici, alternating)`,
  );
  const out: Results['s2'] = {};
  await sideBySide(
    ctx,
    w.all.map((s) => s.name),
    async (name, run) => {
      const s = w.all.find((x) => x.name === name)!;
      const paths = shuffled(all, 1000 + Math.max(0, run));
      const peak = new PeakRss(() => s.pids());
      const got: Record<string, { mibps: number; p50: number; p99: number }> = {};
      for (const engine of rotate(['raw', 'undici'] as const, Math.max(0, run))) {
        const r = await check(`s2 ${name}`, ctx.client.fetch({ origin: s.url, paths, concurrency: clients, engine }));
        got[engine] = { mibps: r.bytes / (1024 * 1024) / (r.wallMs / 1000), p50: percentile(r.latMs, 50), p99: percentile(r.latMs, 99) };
      }
      return { raw: got.raw!, undici: got.undici!, rss: peak.stop() };
    },
    (name, r) => {
      const o = (out[name] ??= { mibps: [], p50: [], p99: [], undici: [], undiciP50: [], undiciP99: [], rss: [] });
      o.mibps.push(r.raw.mibps);
      o.p50.push(r.raw.p50);
      o.p99.push(r.raw.p99);
      o.undici.push(r.undici.mibps);
      o.undiciP50.push(r.undici.p50);
      o.undiciP99.push(r.undici.p99);
      o.rss.push(r.rss);
    },
    true,
  );
  ctx.results.s2 = out;
}

// ---- scenarios 3 and 4: warm manifest by tag / by digest, wrk ---------------------------------

async function manifestScenario(ctx: Ctx, byTag: boolean): Promise<Results['s3']> {
  const w = await warmServers(ctx);
  const dir = await tmpDir(undefined, 'stevedore-bench-wrk-');
  try {
    const script = await writeWrkScript(dir, MANIFEST_ACCEPT);
    const ref = byTag ? 'v1' : ctx.app.manifestDigest;
    const { connections, threads, durationS, warmupS } = ctx.p.wrk;
    log(`${byTag ? 's3' : 's4'}: warm manifest by ${byTag ? 'tag' : 'digest'}, wrk ${connections} connections, ${durationS} s per run`);
    const out: Results['s3'] = {};
    await sideBySide(
      ctx,
      w.all.map((s) => s.name),
      async (name, run) => {
        const s = w.all.find((x) => x.name === name)!;
        const d = run < 0 ? warmupS : durationS;
        return d > 0 ? runWrk({ url: `${s.url}/v2/${REPO_APP}/manifests/${ref}`, script, connections, threads, durationS: d }) : null;
      },
      (name, r) => {
        if (!r) return;
        if (r.requests === 0) throw new Error(`${byTag ? 's3' : 's4'} ${name}: no request completed`);
        const o = (out[name] ??= { rps: [], p50: [], p99: [], errors: [] });
        o.rps.push(r.rps);
        o.p50.push(r.p50Ms);
        o.p99.push(r.p99Ms);
        o.errors.push(r.errors);
      },
      warmupS > 0,
    );
    return out;
  } finally {
    await removeDir(dir);
  }
}

// ---- scenario 5: cold pull of a whole image by 20 clients -----------------------------------

async function scenario5(ctx: Ctx): Promise<void> {
  const { clients, layerConcurrency, linkRate } = ctx.p.pull;
  const img = ctx.pullImg;
  log(`s5: cold pull of a ${img.totalBytes}-byte image (${img.layers.length} layers) by ${clients} clients; upstream link paced to ${linkRate} B/s`);
  const out: Results['s5'] = { imageBytes: img.totalBytes, linkRate, clients, modes: {} };
  const pull = async (origin: string, n: number, pid: number | null): Promise<{ wallS: number; upstreamBytes: number; upstreamRequests: number; rss: number | null }> => {
    ctx.upstream.resetCounts();
    ctx.upstream.setRate(linkRate);
    try {
      const r = await check('s5 pull', ctx.client.pull({ origin, repo: REPO_PULL, tag: 'v1', clients: n, layerConcurrency, accept: MANIFEST_ACCEPT }));
      if (r.bytes !== img.totalBytes * n) throw new Error(`s5: clients got ${r.bytes} bytes, expected ${img.totalBytes * n}`);
      const rss = pid === null ? null : (memStatus(pid)?.hwm ?? null);
      return { wallS: r.wallMs / 1000, upstreamBytes: ctx.upstream.bytes(), upstreamRequests: ctx.upstream.records().length, rss };
    } finally {
      ctx.upstream.setRate(null);
    }
  };
  for (let run = 0; run < ctx.p.runs; run++) {
    for (const mode of rotate(['direct', 'stevedore', 'distribution'], run)) {
      let r;
      if (mode === 'direct') {
        r = await pull(ctx.upstream.url, 1, null);
      } else if (mode === 'stevedore') {
        const storage = await tmpDir(undefined, 'stevedore-bench-cold-');
        const s = await startStevedore({ build: ctx.build, storage, upstreamUrl: ctx.upstream.url, nodeArgs: ctx.nodeArgs });
        try {
          r = await pull(s.url, clients, s.pid);
        } finally {
          await s.stop();
          await removeDir(storage);
        }
      } else {
        const s = await startDistribution(ctx.upstream.url);
        try {
          r = await pull(s.url, clients, s.pid);
        } finally {
          await s.stop();
        }
      }
      log(`s5 run ${run + 1} ${mode}: ${r.wallS.toFixed(2)} s, upstream ${r.upstreamBytes} bytes in ${r.upstreamRequests} requests`);
      const o = (out.modes[mode] ??= { wallS: [], upstreamBytes: [], upstreamRequests: [], rss: [] });
      o.wallS.push(r.wallS);
      o.upstreamBytes.push(r.upstreamBytes);
      o.upstreamRequests.push(r.upstreamRequests);
      if (r.rss !== null) o.rss.push(r.rss);
    }
  }
  ctx.results.s5 = out;
}

// ---- scenario 6 (separate part): 20 clients streaming a 1 GiB cold blob through stevedore ------

async function scenario6(ctx: Ctx): Promise<void> {
  const { clients, runs } = ctx.p.coldBlob;
  const blob = ctx.big;
  log(`s6: ${clients} clients streaming a cold ${blob.size}-byte blob through stevedore (link unpaced), ${runs} run(s)`);
  const out: Results['s6'] = { size: blob.size, clients, rss: [], wallS: [], upstreamBytes: [] };
  for (let run = 0; run < runs; run++) {
    const storage = await tmpDir(undefined, 'stevedore-bench-cold-');
    const s = await startStevedore({ build: ctx.build, storage, upstreamUrl: ctx.upstream.url, nodeArgs: ctx.nodeArgs });
    try {
      ctx.upstream.resetCounts();
      const peak = new PeakRss(() => [s.pid]);
      const r = await check('s6', ctx.client.fetch({ origin: s.url, paths: Array.from({ length: clients }, () => blobPath(REPO_BIG, blob.digest)), concurrency: clients }));
      const rss = peak.stop();
      if (r.bytes !== blob.size * clients) throw new Error(`s6: clients got ${r.bytes} bytes, expected ${blob.size * clients}`);
      out.rss.push(rss);
      out.wallS.push(r.wallMs / 1000);
      out.upstreamBytes.push(ctx.upstream.bytes());
      log(`s6 run ${run + 1}: peak RSS ${(rss / 2 ** 20).toFixed(1)} MiB, ${(r.wallMs / 1000).toFixed(2)} s`);
    } finally {
      await s.stop();
      await removeDir(storage);
    }
  }
  ctx.results.s6 = out;
}

// ---- scenario 7: start-up with 100k stored blobs ----------------------------------------------

async function scenario7(ctx: Ctx): Promise<void> {
  const { blobs, runs } = ctx.p.startup;
  const storage = await tmpDir(undefined, 'stevedore-bench-startup-');
  try {
    log(`s7: writing ${blobs} stored blobs`);
    fillStore(storage, blobs);
    const out: Results['s7'] = { blobs, startupMs: [], indexMs: [], rss: [] };
    for (let run = 0; run < runs; run++) {
      const s = await startStevedore({ build: ctx.build, storage, upstreamUrl: ctx.upstream.url, nodeArgs: ctx.nodeArgs });
      try {
        if (s.indexedBlobs !== blobs) throw new Error(`s7: stevedore indexed ${s.indexedBlobs} blobs, expected ${blobs}`);
        out.startupMs.push(s.startupMs);
        out.indexMs.push(s.indexMs);
        out.rss.push(memStatus(s.pid)?.hwm ?? NaN);
        log(`s7 run ${run + 1}: listening after ${s.startupMs} ms (index ${s.indexMs} ms)`);
      } finally {
        await s.stop();
      }
    }
    ctx.results.s7 = out;
  } finally {
    await removeDir(storage);
  }
}

// ---- main -------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      json: { type: 'string' },
      only: { type: 'string' },
      runs: { type: 'string' },
      'cpu-prof': { type: 'string' },
      'node-arg': { type: 'string', multiple: true },
    },
  });
  const p = paramsFor(values.quick ? 'quick' : 'full');
  if (values.runs) p.runs = Number(values.runs);
  const only = new Set<ScenarioId>(values.only ? (values.only.split(',').map((s) => s.trim()) as ScenarioId[]) : ALL);
  for (const s of only) if (!ALL.includes(s)) throw new Error(`unknown scenario ${s} (use ${ALL.join(',')})`);
  const out = path.resolve(values.out ?? (values.quick ? path.join(os.tmpdir(), `stevedore-bench-quick-${process.pid}.md`) : path.join(ROOT, 'bench', 'RESULTS.md')));
  const nodeArgs: string[] = [...(values['node-arg'] ?? [])];
  if (values['cpu-prof']) {
    await fsp.mkdir(values['cpu-prof'], { recursive: true });
    nodeArgs.push('--cpu-prof', '--cpu-prof-dir', path.resolve(values['cpu-prof']));
  }
  const started = performance.now();
  const ticks0 = cpuTicks();
  const load0 = loadAvg();
  const cleanups: Array<() => Promise<void>> = [];
  const stopAll = async (): Promise<void> => {
    while (cleanups.length) await cleanups.pop()!().catch((err: unknown) => log(`cleanup: ${String(err)}`));
  };
  process.once('SIGINT', () => {
    log('interrupted; stopping everything');
    void stopAll().then(() => process.exit(130));
  });
  try {
    log(`mode ${p.mode}, ${p.runs} run(s) per contender, scenarios ${[...only].join(',')}`);
    const build = await buildStevedore();
    cleanups.push(() => removeDir(build.dir));
    if (build.warnings) log(`tsc reported problems but emitted JavaScript:\n${build.warnings}`);
    const upstream = await startUpstream();
    cleanups.push(() => upstream.stop());
    const client = await LoadClient.start();
    cleanups.push(() => client.stop());

    log('generating and pushing content to the upstream');
    const big = contentBlob('big', p.bigBlob);
    const s2blobs = p.s2.sizes.map((size, i) => contentBlob(`s2/${i}`, size));
    const app = buildImage('app', [2 * 1024, 4 * 1024, 8 * 1024]);
    const pullImg = buildImage('pull', p.pull.layers);
    await pushGenerated(upstream.directUrl, REPO_BIG, big);
    for (const b of s2blobs) await pushGenerated(upstream.directUrl, REPO_BLOBS, b);
    await pushImage(upstream.directUrl, REPO_APP, 'v1', app);
    await pushImage(upstream.directUrl, REPO_PULL, 'v1', pullImg);

    const results: Results = {};
    const ctx: Ctx = { p, upstream, client, build, nodeArgs, results, big, s2blobs, app, pullImg, cleanups };
    if (only.has('s1')) await scenario1(ctx);
    if (only.has('s2')) await scenario2(ctx);
    if (only.has('s3')) results.s3 = await manifestScenario(ctx, true);
    if (only.has('s4')) results.s4 = await manifestScenario(ctx, false);
    if (only.has('s5')) await scenario5(ctx);
    if (only.has('s6')) await scenario6(ctx);
    if (only.has('s7')) await scenario7(ctx);
    await stopAll();

    const ticks1 = cpuTicks();
    const meta = await collectMeta(p, (performance.now() - started) / 1000, {
      loadStart: load0,
      loadEnd: loadAvg(),
      // USER_HZ is 100 on Linux.
      foreignCpuS: Math.max(0, ticks1.busy - ticks0.busy - (ticks1.own - ticks0.own)) / 100,
      stealS: (ticks1.steal - ticks0.steal) / 100,
    });
    // bench/CHANGES.md (what each hot-path change bought) is kept at the end of every full report.
    const changes = values.quick ? '' : await fsp.readFile(path.join(ROOT, 'bench', 'CHANGES.md'), 'utf8').catch(() => '');
    await fsp.writeFile(out, renderReport(meta, p, results) + (changes ? `\n${changes}` : ''));
    if (values.json) await fsp.writeFile(values.json, JSON.stringify({ meta, params: p, results }, null, 2));
    log(`done in ${meta.elapsedS.toFixed(0)} s; wrote ${out}${values.json ? ` and ${values.json}` : ''}`);
  } catch (err) {
    await stopAll();
    throw err;
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
