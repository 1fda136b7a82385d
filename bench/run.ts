/**
 * The benchmark: stevedore side by side with CNCF distribution in proxy mode and nginx (sendfile),
 * every server a separate process on 127.0.0.1, the load from a separate client process (undici)
 * or wrk. Runs are interleaved (each run rotates which contender goes first), after one discarded
 * warm-up run per contender.
 *
 * Scenario 9 pulls the image of scenario 5 through three stevedore replicas in cluster mode (one
 * store, one redis-server), beside three independent distribution proxies.
 *
 * Scenario 10 rolls an image out to five node instances (node mode) at once, in front of one cold
 * central stevedore: with peers (one redis-server) and without; it measures what the central cache
 * serves, on the wire, as a multiple of the image. One more client on one node hangs up mid-body.
 *
 * Scenario 8 hits every warm contender with clients that hang up mid-body (wrk ending its runs, raw
 * sockets resetting at a random byte, on warm and on cold blobs). After every scenario each contender
 * is checked: one that died or logged a defect fails the benchmark (exit 1), never a missing number.
 *
 *   npm run bench          full run (~20 min), writes bench/RESULTS.md
 *   npm run bench:quick    seconds, tiny sizes, one run; writes to a temp file
 *
 * Options (after `--`): --quick, --out FILE (Markdown), --json FILE (raw figures),
 * --only s1,s3,... (a subset of the scenarios), --runs N, --cpu-prof DIR (stevedore runs with
 * node --cpu-prof, one .cpuprofile per process written to DIR when it stops), --node-arg ARG
 * (repeatable: an extra node option for every stevedore process, e.g. --node-arg=--require=x.cjs),
 * --rollout-mib N (scenario 10's image size, e.g. 20 for a short check; default 200, 8 with --quick),
 * --s11-no-s3-backend (scenario 11 without stevedore's S3 backend, for a build that has none),
 * --baseline DIR (scenario 12 also against stevedore built from the checkout DIR, side by side),
 * --s12-runs N (scenario 12's measured runs of each build, default 3), --s12-size SIZE (its blob, e.g. 32MiB).
 *
 * Scenario 11 (the S3 backend; not in the default run: --only s11) starts one Ceph RADOS gateway
 * and compares stevedore on the filesystem, stevedore on S3, distribution on its s3 driver (and
 * nginx) on one warm big blob and on many warm small ones; then clients hang up on stevedore-s3.
 *
 * Scenario 12 (cluster mode on the S3 backend; not in the default run: --only s12): three replicas
 * on one bucket of a RADOS gateway and one redis-server, 30 clients on one cold blob; with
 * --baseline DIR, the same against another build, interleaved: what followers verifying costs.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { request } from 'undici';
import { startRgw, type Rgw } from '../test/fixtures/ceph.js';
import { hangUp, requestHead } from '../test/fixtures/hangup.js';
import { freePort, removeDir, tmpDir, waitFor } from '../test/fixtures/util.js';
import { LoadClient } from './lib/client-api.js';
import { buildImage, contentBlob, MANIFEST_ACCEPT, MediaType, type ImageSpec } from './lib/data.js';
import { startMeter, type Meter } from './lib/meter.js';
import { MiB, params as paramsFor, rolloutLayers, type Params } from './lib/params.js';
import { cpuSeconds, cpuTicks, loadAvg, memStatus, openFds, PeakRss } from './lib/proc.js';
import { pushGenerated, pushImage } from './lib/registry-api.js';
import { collectMeta, gitVersion, renderReport, type Results } from './lib/report.js';
import {
  accessLog,
  assertAlive,
  buildStevedore,
  failureOf,
  ROOT,
  ServerFailure,
  startDistribution,
  startNginx,
  startRedis,
  startStevedore,
  stopEach,
  type RedisServer,
  type Server,
  type StevedoreBuild,
  type StevedoreServer,
} from './lib/servers.js';
import { median, percentile, prng, rotate, shuffled } from './lib/stats.js';
import { fillStore } from './lib/store-fill.js';
import { parseSize } from '../lib/config/units.js';
import { startUpstream, type Upstream } from './lib/upstream.js';
import { runWrk, writeWrkScript } from './lib/wrk.js';

const REPO_BIG = 'bench/big';
const REPO_BLOBS = 'bench/blobs';
const REPO_APP = 'bench/app';
const REPO_PULL = 'bench/pull';
const REPO_HANGUP = 'bench/hangup';
const REPO_ROLLOUT = 'bench/rollout';
const REPO_S3 = 'bench/s3';
const ALL = ['s1', 's2', 's3', 's4', 's5', 's6', 's7', 's8', 's9', 's10', 's11', 's12'] as const;
type ScenarioId = (typeof ALL)[number];
/**
 * What a run without --only runs: not scenarios 11 and 12 (the S3 backend), which need Ceph
 * (ceph-mon, ceph-osd, radosgw) and a few GiB of RAM for its in-memory OSD: run them with --only.
 */
const DEFAULT: readonly ScenarioId[] = ALL.filter((s) => s !== 's11' && s !== 's12');
/** The scenarios that use the content every run pushes to the upstream first (the others bring their own, or none). */
const SEEDED: readonly ScenarioId[] = ['s1', 's2', 's3', 's4', 's5', 's6', 's8', 's9'];

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
  /** The commit `build` is made from (gitVersion). */
  git: string;
  nodeArgs: string[];
  results: Results;
  big: ReturnType<typeof contentBlob>;
  s2blobs: Array<ReturnType<typeof contentBlob>>;
  app: ReturnType<typeof buildImage>;
  pullImg: ReturnType<typeof buildImage>;
  /** Warm contenders, started on first use. */
  warm?: { stevedore: StevedoreServer; distribution: Server; nginx: Server; all: Server[] };
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
  runs = ctx.p.runs,
): Promise<void> {
  if (warmup) for (const c of contenders) await measure(c, -1);
  for (let run = 0; run < runs; run++) {
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
          // stop() throws if the process died or logged a defect: that failure wins over a failed pull.
          await s.stop().finally(() => removeDir(storage));
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
      await s.stop().finally(() => removeDir(storage));
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

// ---- scenario 8: clients that hang up --------------------------------------------------------

function fdsOf(s: Server): number {
  return s.pids().reduce((n, pid) => n + (openFds(pid) ?? 0), 0);
}

function rssOf(s: Server): number {
  return s.pids().reduce((n, pid) => n + (memStatus(pid)?.rss ?? 0), 0);
}

/** Null when `s` answers as it should (a proxy: 200 on /v2/; nginx: below 500 on /), else what it did. */
async function answerProblem(s: Server): Promise<string | null> {
  const p = s.name === 'nginx' ? '/' : '/v2/';
  try {
    // reset: a fresh connection, closed after the answer (nothing left open in the fd count).
    const res = await request(`${s.url}${p}`, { reset: true, headersTimeout: 5000, bodyTimeout: 5000 });
    await res.body.dump();
    const ok = s.name === 'nginx' ? res.statusCode < 500 : res.statusCode === 200;
    return ok ? null : `GET ${p} answered ${res.statusCode}`;
  } catch (err) {
    return `GET ${p} failed: ${(err as Error).message}`;
  }
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file) as AsyncIterable<Buffer>) h.update(c);
  return `sha256:${h.digest('hex')}`;
}

interface HangupRound {
  clients: number;
  /** Reset at the byte chosen for them (the others found the connection closed first, or timed out). */
  cut: number;
}

/** `clients` raw clients at once GET `urlPath` and reset the connection at a random byte of the answer. */
async function hangupRound(s: Server, urlPath: string, size: number, clients: number, rand: () => number): Promise<HangupRound> {
  const port = Number(new URL(s.url).port);
  const targets = Array.from({ length: clients }, () => 1 + Math.floor(rand() * size));
  const got = await Promise.all(targets.map((at) => hangUp(port, [requestHead('GET', urlPath)], { afterReceived: at, reset: true, timeoutMs: 30_000 })));
  return { clients, cut: got.filter((g, i) => !g.serverClosed && g.received >= targets[i]!).length };
}

async function scenario8(ctx: Ctx): Promise<void> {
  const w = await warmServers(ctx);
  const h = ctx.p.hangup;
  const wrkBlob = ctx.s2blobs[0]!;
  const candidates = [...ctx.s2blobs.map((b) => ({ repo: REPO_BLOBS, blob: b })), { repo: REPO_BIG, blob: ctx.big }];
  const warm = candidates.reduce((a, b) => (Math.abs(b.blob.size - h.warmSize) < Math.abs(a.blob.size - h.warmSize) ? b : a));
  const seed = Number(process.env.HANGUP_SEED ?? Date.now() % 1_000_000);
  const rand = prng(seed);
  log(
    `s8: clients that hang up (HANGUP_SEED=${seed}): wrk -c${h.connections} -t${h.threads} -d${h.wrkDurationS}s ×${h.wrkRuns} on a ${wrkBlob.size}-byte blob; ` +
      `${h.rounds} round(s) of ${h.clients} clients resetting a ${warm.blob.size}-byte blob at a random byte; ` +
      `one round on a cold ${h.coldSize}-byte blob through each proxy (link ${h.coldLinkRate} B/s)`,
  );
  const dir = await tmpDir(undefined, 'stevedore-bench-wrk-');
  const out: NonNullable<Results['s8']> = { wrkBlob: wrkBlob.size, warmBlob: warm.blob.size, coldBlob: h.coldSize, contenders: {} };
  try {
    // The blob GET ignores Accept.
    const script = await writeWrkScript(dir, '*/*');
    await sideBySide(
      ctx,
      w.all.map((s) => s.name),
      async (name, run) => {
        const s = w.all.find((x) => x.name === name)!;
        await sleep(h.settleMs);
        const fdsBefore = fdsOf(s);
        const rssBefore = rssOf(s);

        // Part A: wrk closes its connections mid-body when each run ends.
        const rps: number[] = [];
        let wrkErrors = 0;
        for (let i = 0; i < h.wrkRuns && s.exited() === null; i++) {
          const r = await runWrk({ url: `${s.url}${blobPath(REPO_BLOBS, wrkBlob.digest)}`, script, connections: h.connections, threads: h.threads, durationS: h.wrkDurationS });
          rps.push(r.rps);
          wrkErrors += r.errors;
        }

        // Part B: raw clients resetting at a random byte, on a warm blob...
        let hangups = 0;
        let cut = 0;
        for (let i = 0; i < h.rounds && s.exited() === null; i++) {
          const r = await hangupRound(s, blobPath(warm.repo, warm.blob.digest), warm.blob.size, h.clients, rand);
          hangups += r.clients;
          cut += r.cut;
        }
        // ... and, through a proxy, on a blob it has never seen, while it downloads it.
        let coldStored: boolean | null = null;
        let cold: ReturnType<typeof contentBlob> | null = null;
        if (s !== w.nginx && s.exited() === null) {
          cold = contentBlob(`hangup/${name}/${run}/${randomBytes(8).toString('hex')}`, h.coldSize);
          await pushGenerated(ctx.upstream.directUrl, REPO_HANGUP, cold);
          ctx.upstream.setRate(h.coldLinkRate);
          try {
            const r = await hangupRound(s, blobPath(REPO_HANGUP, cold.digest), cold.size, h.clients, rand);
            hangups += r.clients;
            cut += r.cut;
          } finally {
            ctx.upstream.setRate(null);
          }
        }

        await sleep(h.settleMs);
        if (cold && s === w.stevedore) {
          // Every client left; the download goes on into the store all the same.
          const file = storeFile(w.stevedore.storage, cold.digest);
          const there = await waitFor('the cold blob in the store', async () => (await fsp.stat(file).catch(() => null))?.size === cold.size, 30_000, 100).then(
            () => true,
            () => false,
          );
          coldStored = there && (await sha256File(file)) === cold.digest;
          if (!coldStored) log(`s8: stevedore's store has no verified copy of the cold blob ${cold.digest}`);
        }
        const fdsAfter = fdsOf(s);
        const rssAfter = rssOf(s);
        // A process that died or logged a defect fails the benchmark here.
        await assertAlive(s);
        const problem = await answerProblem(s);
        if (problem) log(`s8: ${name} is alive but ${problem}`);
        log(
          `s8 run ${run + 1} ${name}: wrk ${median(rps).toFixed(0)} req/s (${wrkErrors} errors), ${hangups} clients hung up (${cut} at their byte), ` +
            `fds ${fdsBefore} → ${fdsAfter}, RSS ${(rssBefore / MiB).toFixed(1)} → ${(rssAfter / MiB).toFixed(1)} MiB${coldStored === null ? '' : `, cold blob stored: ${coldStored}`}`,
        );
        return { survived: problem === null, problem, rps, wrkErrors, hangups, cut, fdsBefore, fdsAfter, rssBefore, rssAfter, coldStored };
      },
      (name, r) => {
        const o = (out.contenders[name] ??= {
          survived: [],
          problems: [],
          rps: [],
          wrkErrors: [],
          hangups: [],
          cut: [],
          fdsBefore: [],
          fdsAfter: [],
          rssBefore: [],
          rssAfter: [],
          coldStored: [],
        });
        o.survived.push(r.survived);
        if (r.problem) o.problems.push(r.problem);
        o.rps.push(...r.rps);
        o.wrkErrors.push(r.wrkErrors);
        o.hangups.push(r.hangups);
        o.cut.push(r.cut);
        o.fdsBefore.push(r.fdsBefore);
        o.fdsAfter.push(r.fdsAfter);
        o.rssBefore.push(r.rssBefore);
        o.rssAfter.push(r.rssAfter);
        if (r.coldStored !== null) o.coldStored.push(r.coldStored);
      },
      false,
      h.runs,
    );
  } finally {
    await removeDir(dir);
  }
  ctx.results.s8 = out;
}

// ---- scenario 9: cluster mode, replicas on one store, many clients on a cold image ------------

async function scenario9(ctx: Ctx): Promise<void> {
  const { replicas, clients, runs, peerRuns } = ctx.p.cluster;
  const { layerConcurrency, linkRate } = ctx.p.pull;
  const img = ctx.pullImg;
  log(
    `s9: cold pull of a ${img.totalBytes}-byte image (${img.layers.length} layers) by ${clients} clients spread over ${replicas} stevedore replicas ` +
      `(one store, one redis-server) and over ${replicas} distribution proxies; upstream link paced to ${linkRate} B/s`,
  );
  const out: NonNullable<Results['s9']> = { imageBytes: img.totalBytes, linkRate, clients, replicas, modes: {} };
  const pull = async (origins: string[], n: number, pids: number[]): Promise<{ repeated: string[]; wallS: number; upstreamBytes: number; upstreamRequests: number; rss: number[] }> => {
    ctx.upstream.resetCounts();
    ctx.upstream.setRate(linkRate);
    try {
      const r = await check('s9 pull', ctx.client.pull({ origin: origins[0]!, origins, repo: REPO_PULL, tag: 'v1', clients: n, layerConcurrency, accept: MANIFEST_ACCEPT }));
      if (r.bytes !== img.totalBytes * n) throw new Error(`s9: clients got ${r.bytes} bytes, expected ${img.totalBytes * n}`);
      // Fresh processes: VmHWM is the peak since start.
      const rss = pids.map((pid) => memStatus(pid)?.hwm ?? NaN);
      // What the upstream was asked more than once (the point of the cluster is that nothing is), for the log.
      const seen = new Map<string, number>();
      for (const q of ctx.upstream.records()) seen.set(`${q.method} ${q.path}`, (seen.get(`${q.method} ${q.path}`) ?? 0) + 1);
      const repeated = [...seen].filter(([, k]) => k > 1).map(([what, k]) => `${what} ×${k}`);
      return { repeated, wallS: r.wallMs / 1000, upstreamBytes: ctx.upstream.bytes(), upstreamRequests: ctx.upstream.records().length, rss };
    } finally {
      ctx.upstream.setRate(null);
    }
  };
  for (let run = 0; run < runs; run++) {
    const modes = run < peerRuns ? ['direct', 'stevedore', 'distribution'] : ['direct', 'stevedore'];
    for (const mode of rotate(modes, run)) {
      let r;
      let warmWallS: number | null = null;
      if (mode === 'direct') {
        r = await pull([ctx.upstream.url], 1, []);
      } else if (mode === 'stevedore') {
        const storage = await tmpDir(undefined, 'stevedore-bench-cluster-');
        let redis: RedisServer | null = null;
        const started: StevedoreServer[] = [];
        try {
          redis = await startRedis();
          // One after the other: the first creates the store the others join (as test/fixtures/cluster.ts).
          for (let i = 0; i < replicas; i++) {
            started.push(
              await startStevedore({
                build: ctx.build,
                storage,
                upstreamUrl: ctx.upstream.url,
                nodeArgs: ctx.nodeArgs,
                name: `stevedore replica-${i + 1}`,
                config: { metadata: { redis: redis.redisUrl }, cluster: { replicaId: `replica-${i + 1}` } },
              }),
            );
          }
          r = await pull(
            started.map((s) => s.url),
            clients,
            started.map((s) => s.pid),
          );
          // The control: the same pull again, everything now in the store (link unpaced, nothing
          // asked of it but what the replicas revalidate): what delivering ${clients} copies costs this box.
          const again = await check(
            's9 warm re-pull',
            ctx.client.pull({ origin: started[0]!.url, origins: started.map((s) => s.url), repo: REPO_PULL, tag: 'v1', clients, layerConcurrency, accept: MANIFEST_ACCEPT }),
          );
          if (again.bytes !== img.totalBytes * clients) throw new Error(`s9 warm re-pull: clients got ${again.bytes} bytes, expected ${img.totalBytes * clients}`);
          warmWallS = again.wallMs / 1000;
        } finally {
          // Replicas first (a shutdown hands over through Redis), then Redis. stop() throws if a
          // process died or logged a defect: that failure wins over a failed pull.
          await stopEach([...started, ...(redis ? [redis] : [])]).finally(() => removeDir(storage));
        }
      } else {
        const started: Server[] = [];
        try {
          for (let i = 0; i < replicas; i++) started.push(await startDistribution(ctx.upstream.url, `distribution ${i + 1}`));
          r = await pull(
            started.map((s) => s.url),
            clients,
            started.map((s) => s.pid),
          );
        } finally {
          await stopEach(started);
        }
      }
      log(
        `s9 run ${run + 1} ${mode}: ${r.wallS.toFixed(2)} s${warmWallS === null ? '' : ` (warm re-pull ${warmWallS.toFixed(2)} s)`}, upstream ${r.upstreamBytes} bytes (${(r.upstreamBytes / img.totalBytes).toFixed(4)}× the image) in ${r.upstreamRequests} requests` +
          (r.rss.length ? `, peak RSS ${r.rss.map((x) => (x / MiB).toFixed(1)).join(' / ')} MiB` : '') +
          (mode === 'stevedore' && r.repeated.length ? `; asked of the upstream more than once: ${r.repeated.join(', ')}` : ''),
      );
      const o = (out.modes[mode] ??= { wallS: [], warmWallS: [], upstreamBytes: [], upstreamRequests: [], rss: [], rssEach: [] });
      o.wallS.push(r.wallS);
      if (warmWallS !== null) o.warmWallS.push(warmWallS);
      o.upstreamBytes.push(r.upstreamBytes);
      o.upstreamRequests.push(r.upstreamRequests);
      if (r.rss.length) {
        o.rss.push(Math.max(...r.rss));
        o.rssEach.push(r.rss);
      }
    }
  }
  ctx.results.s9 = out;
}

// ---- scenario 10: a rollout through the node-local tier ----------------------------------------

/** The node instances' shared secret (node.peers.token). */
const PEER_TOKEN = 'stevedore-bench-peer-token-0123456789';
const PEER_PATH = '/_stevedore/peer/';

type RolloutMode = 'peers' | 'central';

interface RolloutRun {
  wallS: number;
  /** Seconds until each node's client had the whole image, by node. */
  nodeS: number[];
  /** What the central cache sent the nodes through the meter (heads included). */
  centralBytes: number;
  /** Its access log: requests answered, blobs asked more often than the mode needs, answers cut short. */
  centralRequests: number;
  centralRepeated: string[];
  /** Where the logs of the central one and the nodes were copied when a blob was asked of it too often. */
  keptLogs: string | null;
  centralAborted: number;
  /** The nodes' access logs: blob transfers they served each other, and their bytes. */
  peerTransfers: number;
  peerBytes: number;
  upstreamBytes: number;
  upstreamRequests: number;
  rssCentral: number;
  rssNodes: number[];
  hangup: { node: number; at: number; size: number; cut: boolean; problem: string | null };
}

/**
 * A client that pulls like the others (manifest by tag first, so the node knows the repository
 * links the layer), then GETs `layer` and resets the connection at byte `at` of the answer.
 */
async function hangUpMidLayer(node: Server, layer: ImageSpec['layers'][number], at: number): Promise<{ cut: boolean }> {
  // reset: a connection of its own, closed after the answer (nothing left open for the node's shutdown).
  const m = await request(`${node.url}/v2/${REPO_ROLLOUT}/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT }, reset: true, headersTimeout: 120_000, bodyTimeout: 120_000 });
  await m.body.dump();
  if (m.statusCode !== 200) throw new Error(`s10: the client that hangs up got ${m.statusCode} for the manifest from ${node.name}`);
  const got = await hangUp(Number(new URL(node.url).port), [requestHead('GET', blobPath(REPO_ROLLOUT, layer.digest))], { afterReceived: at, reset: true, timeoutMs: 120_000 });
  return { cut: !got.serverClosed && got.received >= at };
}

/** One rollout: fresh central (cold), Redis (with peers) and nodes; every node's client starts at once. */
async function rolloutOnce(ctx: Ctx, img: ImageSpec, mode: RolloutMode, run: number, rand: () => number): Promise<RolloutRun> {
  const { nodes } = ctx.p.rollout;
  const { layerConcurrency, linkRate } = ctx.p.pull;
  const dirs: string[] = [];
  const fresh = async (prefix: string): Promise<string> => {
    const d = await tmpDir(undefined, prefix);
    dirs.push(d);
    return d;
  };
  let redis: RedisServer | null = null;
  let central: StevedoreServer | null = null;
  let meter: Meter | null = null;
  const started: StevedoreServer[] = [];
  try {
    if (mode === 'peers') redis = await startRedis();
    central = await startStevedore({ build: ctx.build, storage: await fresh('stevedore-bench-central-'), upstreamUrl: ctx.upstream.url, nodeArgs: ctx.nodeArgs, name: 'stevedore central' });
    meter = await startMeter(central.url);
    // One after the other, each with a store of its own; the peers are advertised on a fixed port.
    for (let i = 0; i < nodes; i++) {
      const port = await freePort();
      started.push(
        await startStevedore({
          build: ctx.build,
          storage: await fresh('stevedore-bench-node-'),
          // The registry (through the link) stays the last source, as in a real node config.
          upstreamUrl: ctx.upstream.url,
          nodeArgs: ctx.nodeArgs,
          name: `stevedore node-${i + 1}`,
          config: {
            listen: `127.0.0.1:${port}`,
            ...(redis ? { metadata: { redis: redis.redisUrl } } : {}),
            node: { central: { url: meter.url }, ...(redis ? { peers: { advertise: `http://127.0.0.1:${port}`, token: PEER_TOKEN } } : {}) },
          },
        }),
      );
    }
    const origins = started.map((s) => s.url);
    const victim = run % nodes;
    const layer = img.layers.reduce((a, b) => (b.size > a.size ? b : a));
    const at = 1 + Math.floor(rand() * layer.size);
    ctx.upstream.resetCounts();
    meter.resetCounts();
    ctx.upstream.setRate(linkRate);
    let r;
    let hung;
    try {
      [r, hung] = await Promise.all([
        check(
          `s10 pull (${mode})`,
          ctx.client.pull({ origin: origins[0]!, origins, repo: REPO_ROLLOUT, tag: 'v1', clients: nodes, layerConcurrency, accept: MANIFEST_ACCEPT, verify: true, manifestDigest: img.manifestDigest }),
        ),
        hangUpMidLayer(started[victim]!, layer, at),
      ]);
    } finally {
      ctx.upstream.setRate(null);
    }
    if (r.bytes !== img.totalBytes * nodes) throw new Error(`s10 (${mode}): clients got ${r.bytes} bytes, expected ${img.totalBytes * nodes}`);
    // Fresh processes: VmHWM is the peak since start.
    const rssCentral = memStatus(central.pid)?.hwm ?? NaN;
    const rssNodes = started.map((s) => memStatus(s.pid)?.hwm ?? NaN);
    const nodeS = origins.map((o) => {
      const k = r.clientOrigins.indexOf(o);
      return k < 0 ? NaN : r.clientMs[k]! / 1000;
    });
    // Whatever the nodes still do after their clients left (the layer whose client hung up) counts too.
    await sleep(ctx.p.hangup.settleMs);
    const problem = await answerProblem(started[victim]!);
    const lines = await accessLog(central);
    const seen = new Map<string, number>();
    for (const l of lines) {
      const what = `${l.method} ${l.path.replace(/\?.*$/, '')}`;
      seen.set(what, (seen.get(what) ?? 0) + 1);
    }
    let peerTransfers = 0;
    let peerBytes = 0;
    for (const s of started) {
      for (const l of await accessLog(s)) {
        if (!l.path.startsWith(PEER_PATH) || l.method !== 'GET') continue;
        peerTransfers++;
        peerBytes += l.bytes;
      }
    }
    // Blobs asked of it more often than the mode needs: once with peers, once per node without.
    const centralRepeated = [...seen]
      .filter(([what, k]) => what.includes('/blobs/') && k > (mode === 'peers' ? 1 : nodes))
      .map(([what, k]) => `${what.replace(/^(GET|HEAD) \/v2\/.*\/blobs\/sha256:(\w{12})\w*$/, '$1 $2…')} ×${k}`);
    let keptLogs: string | null = null;
    if (centralRepeated.length) {
      // The evidence, before the processes and their logs go (a directory of its own, not removed).
      keptLogs = await fsp.mkdtemp(path.join(os.tmpdir(), 'stevedore-bench-s10-logs-'));
      for (const s of [central, ...started]) await fsp.copyFile(s.logFile, path.join(keptLogs, `${s.name.replace(/^stevedore /, '')}.log`));
    }
    return {
      wallS: r.wallMs / 1000,
      nodeS,
      centralBytes: meter.bytes(),
      centralRequests: lines.length,
      centralRepeated,
      keptLogs,
      centralAborted: lines.filter((l) => l.aborted).length,
      peerTransfers,
      peerBytes,
      upstreamBytes: ctx.upstream.bytes(),
      upstreamRequests: ctx.upstream.records().length,
      rssCentral,
      rssNodes,
      hangup: { node: victim, at, size: layer.size, cut: hung.cut, problem },
    };
  } finally {
    // Nodes first (with peers they withdraw their announcements through Redis), then the central
    // one, then Redis. stop() throws if a process died or logged a defect: that failure wins.
    await stopEach([...started, ...(central ? [central] : []), ...(redis ? [redis] : [])]).finally(async () => {
      await meter?.stop();
      for (const d of dirs) await removeDir(d);
    });
  }
}

async function scenario10(ctx: Ctx): Promise<void> {
  const { nodes, runs, imageBytes, layers } = ctx.p.rollout;
  const { linkRate } = ctx.p.pull;
  const img = buildImage('rollout', rolloutLayers(imageBytes, layers));
  await pushImage(ctx.upstream.directUrl, REPO_ROLLOUT, 'v1', img);
  const seed = Number(process.env.HANGUP_SEED ?? Date.now() % 1_000_000);
  const rand = prng(seed);
  log(
    `s10: rollout of a ${img.totalBytes}-byte image (${img.layers.length} layers) to ${nodes} node instances at once, each pulled by one client, ` +
      `through one cold central stevedore; with peers (one redis-server) and without; upstream link paced to ${linkRate} B/s; ` +
      `one more client per run hangs up mid-layer on one node (HANGUP_SEED=${seed})`,
  );
  const out: NonNullable<Results['s10']> = { imageBytes: img.totalBytes, layers: img.layers.length, nodes, linkRate, modes: {} };
  for (let run = 0; run < runs; run++) {
    for (const mode of rotate(['peers', 'central'] as const, run)) {
      const r = await rolloutOnce(ctx, img, mode, run, rand);
      const h = r.hangup;
      log(
        `s10 run ${run + 1} ${mode === 'peers' ? 'with peers' : 'without peers'}: the last node had the image after ${r.wallS.toFixed(2)} s ` +
          `(each: ${r.nodeS.map((x) => x.toFixed(2)).join(' / ')} s); central served ${r.centralBytes.toLocaleString('en-US')} bytes = ${(r.centralBytes / img.totalBytes).toFixed(4)}× the image ` +
          `in ${r.centralRequests} requests${r.centralAborted ? ` (${r.centralAborted} cut short)` : ''}` +
          (r.centralRepeated.length ? `, blobs asked ${mode === 'peers' ? 'more than once' : 'more than once per node'}: ${r.centralRepeated.join(', ')} (logs kept in ${r.keptLogs})` : '') +
          `; nodes served each other ${(r.peerBytes / MiB).toFixed(1)} MiB in ${r.peerTransfers} transfers; upstream ${(r.upstreamBytes / img.totalBytes).toFixed(4)}× in ${r.upstreamRequests} requests; ` +
          `peak RSS central ${(r.rssCentral / MiB).toFixed(1)} MiB, nodes ${r.rssNodes.map((x) => (x / MiB).toFixed(1)).join(' / ')} MiB; ` +
          `a client on node-${h.node + 1} hung up at byte ${h.at} of ${h.size} (${h.cut ? 'cut there' : 'not cut there'}), the node ${h.problem === null ? 'answers' : h.problem}`,
      );
      const o = (out.modes[mode] ??= {
        wallS: [],
        nodeS: [],
        centralBytes: [],
        centralRequests: [],
        peerBytes: [],
        upstreamBytes: [],
        rssCentral: [],
        rssNode: [],
        rssEach: [],
        hangupCut: [],
        hangupAnswered: [],
      });
      o.wallS.push(r.wallS);
      o.nodeS.push(r.nodeS);
      o.centralBytes.push(r.centralBytes);
      o.centralRequests.push(r.centralRequests);
      o.peerBytes.push(r.peerBytes);
      o.upstreamBytes.push(r.upstreamBytes);
      o.rssCentral.push(r.rssCentral);
      o.rssNode.push(Math.max(...r.rssNodes));
      o.rssEach.push(r.rssNodes);
      o.hangupCut.push(h.cut);
      o.hangupAnswered.push(h.problem === null);
    }
  }
  ctx.results.s10 = out;
}

// ---- scenario 11: the S3 backend, one RADOS gateway ----------------------------------------

const S3_BUCKET_STEVEDORE = 'stevedore-bench';
const S3_BUCKET_DISTRIBUTION = 'distribution-bench';
const S3_NAMES = { fs: 'stevedore-fs', s3: 'stevedore-s3', dist: 'distribution-s3', nginx: 'nginx' } as const;

/** Every key of `bucket` with its size (ListObjectsV2, page after page). */
async function listBucket(s3: S3Client, bucket: string): Promise<Array<{ key: string; size: number }>> {
  const out: Array<{ key: string; size: number }> = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const o of page.Contents ?? []) out.push({ key: o.Key ?? '', size: o.Size ?? 0 });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

/**
 * Waits until every one of `blobs` is an object of `bucket` (a key naming its hex digest, of its
 * size): what "warm" means for a proxy on S3. Returns the bucket's objects and bytes then.
 */
async function blobsInBucket(s3: S3Client, bucket: string, blobs: Array<{ digest: string; size: number }>, who: string): Promise<{ objects: number; bytes: number; example: string }> {
  let missing: string[] = [];
  let listed: Array<{ key: string; size: number }> = [];
  const found = (): boolean => {
    missing = blobs.filter((b) => !listed.some((o) => o.key.includes(b.digest.slice('sha256:'.length)) && o.size === b.size)).map((b) => b.digest);
    return missing.length === 0;
  };
  try {
    await waitFor(`${who}'s blobs in bucket ${bucket}`, async () => {
      listed = await listBucket(s3, bucket);
      return found();
    }, 60_000, 250);
  } catch {
    throw new Error(
      `s11: after the warm-up, ${missing.length} of ${blobs.length} blob(s) fetched through ${who} are not objects of bucket ${bucket} ` +
        `(e.g. ${missing[0]}); the bucket has ${listed.length} object(s)${listed.length ? `, e.g. ${listed.slice(0, 3).map((o) => o.key).join(', ')}` : ''}`,
    );
  }
  const hex = blobs[0]!.digest.slice('sha256:'.length);
  return { objects: listed.length, bytes: listed.reduce((n, o) => n + o.size, 0), example: listed.find((o) => o.key.includes(hex))?.key ?? '' };
}

/** Bytes of the files under `dir` (stevedore-s3's local working space). */
async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await fsp.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) n += (await fsp.stat(path.join(e.parentPath, e.name)).catch(() => null))?.size ?? 0;
  }
  return n;
}

/** Null when `s` serves `urlPath` whole (`size` bytes, 200) within 30 s, else what happened. */
async function servesWhole(s: Server, urlPath: string, size: number): Promise<string | null> {
  try {
    const res = await request(`${s.url}${urlPath}`, { reset: true, headersTimeout: 30_000, bodyTimeout: 30_000 });
    let n = 0;
    for await (const c of res.body as AsyncIterable<Buffer>) n += c.length;
    return res.statusCode === 200 && n === size ? null : `GET ${urlPath} answered ${res.statusCode} with ${n} of ${size} bytes`;
  } catch (err) {
    return `GET ${urlPath} failed: ${(err as Error).message}`;
  }
}

async function scenario11(ctx: Ctx, withS3Backend: boolean): Promise<void> {
  const q = ctx.p.s3;
  const big = contentBlob('s11/big', q.bigBlob);
  const small = Array.from({ length: q.smallBlobs }, (_, i) => contentBlob(`s11/small/${i}`, q.smallSize));
  await pushGenerated(ctx.upstream.directUrl, REPO_S3, big);
  for (const b of small) await pushGenerated(ctx.upstream.directUrl, REPO_S3, b);
  const bigPath = blobPath(REPO_S3, big.digest);
  const smallPaths = small.map((b) => blobPath(REPO_S3, b.digest));
  const seed = Number(process.env.HANGUP_SEED ?? Date.now() % 1_000_000);
  const rand = prng(seed);
  log(
    `s11: the S3 backend, one Ceph RADOS gateway on 127.0.0.1: (a) one client on a warm ${big.size}-byte blob, ${q.bigRepeat} GET(s) per run; ` +
      `(b) ${q.clients} clients on ${small.length} warm ${q.smallSize}-byte blobs (${small.length * q.smallRepeat} GETs per run); ` +
      `then ${q.hangupRounds} round(s) of ${q.hangupClients} clients resetting the big blob on stevedore-s3 (HANGUP_SEED=${seed})` +
      (withS3Backend ? '' : '; WITHOUT stevedore-s3 (--s11-no-s3-backend)'),
  );
  const teardowns: Array<() => unknown> = [];
  const started: Server[] = [];
  let s3: S3Client | null = null;
  let rgw: Rgw | null = null;
  try {
    const t0 = performance.now();
    rgw = await startRgw({ teardown: (fn) => void teardowns.push(fn) });
    log(`s11: RADOS gateway up at ${rgw.endpoint} after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const gateway = rgw.gateway;
    const gatewayDied = (): string | null => (gateway.exitCode !== null ? `exit code ${gateway.exitCode}` : gateway.signalCode !== null ? `signal ${gateway.signalCode}` : null);
    s3 = new S3Client({
      endpoint: rgw.endpoint,
      region: rgw.region,
      forcePathStyle: true,
      credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
    });
    for (const b of [S3_BUCKET_STEVEDORE, S3_BUCKET_DISTRIBUTION]) await s3.send(new CreateBucketCommand({ Bucket: b }));

    const fsStore = await tmpDir(undefined, 'stevedore-bench-s11-fs-');
    teardowns.push(() => removeDir(fsStore));
    const fs = await startStevedore({ build: ctx.build, storage: fsStore, upstreamUrl: ctx.upstream.url, nodeArgs: ctx.nodeArgs, name: S3_NAMES.fs });
    started.push(fs);
    let sds3: StevedoreServer | null = null;
    let work: string | null = null;
    if (withS3Backend) {
      work = await tmpDir(undefined, 'stevedore-bench-s11-work-');
      const w = work;
      teardowns.push(() => removeDir(w));
      sds3 = await startStevedore({
        build: ctx.build,
        storage: work,
        upstreamUrl: ctx.upstream.url,
        nodeArgs: ctx.nodeArgs,
        name: S3_NAMES.s3,
        config: {
          storage: {
            path: work,
            maxSize: null,
            backend: 's3',
            s3: {
              bucket: S3_BUCKET_STEVEDORE,
              prefix: '',
              endpoint: rgw.endpoint,
              region: rgw.region,
              forcePathStyle: true,
              accessKeyId: rgw.accessKeyId,
              secretAccessKey: rgw.secretAccessKey,
            },
          },
        },
      });
      started.push(sds3);
    }
    const dist = await startDistribution(ctx.upstream.url, S3_NAMES.dist, {
      endpoint: rgw.endpoint,
      region: rgw.region,
      bucket: S3_BUCKET_DISTRIBUTION,
      accessKeyId: rgw.accessKeyId,
      secretAccessKey: rgw.secretAccessKey,
      rootDirectory: '/distribution',
    });
    started.push(dist);
    const proxies = started.slice();
    const allPaths = [bigPath, ...smallPaths];
    for (const s of proxies) {
      log(`s11: filling ${s.name} (cold pulls through it)`);
      await check(`s11 fill ${s.name}`, ctx.client.fetch({ origin: s.url, paths: allPaths, concurrency: 4 }));
    }
    // Warm on S3 means the blobs are objects in the bucket, not only in a process's local space.
    const buckets: NonNullable<Results['s11']>['buckets'] = {};
    const blobs = [big, ...small];
    for (const [name, bucket] of [...(sds3 ? [[S3_NAMES.s3, S3_BUCKET_STEVEDORE] as const] : []), [S3_NAMES.dist, S3_BUCKET_DISTRIBUTION] as const]) {
      const b = await blobsInBucket(s3, bucket, blobs, name);
      buckets[name] = { bucket, objects: b.objects, bytes: b.bytes, example: b.example };
      log(`s11: bucket ${bucket} (${name}) holds every blob: ${b.objects} objects, ${(b.bytes / MiB).toFixed(1)} MiB; the big blob is ${b.example}`);
    }
    // With backend s3, storage.path is working space only: what stays there after the warm-up.
    const workBytes = work === null ? null : await dirBytes(work);
    if (workBytes !== null) log(`s11: ${S3_NAMES.s3}'s local working space holds ${workBytes} bytes after the warm-up`);
    const nginx = await startNginx(fsStore, []);
    started.push(nginx);
    await check('s11 nginx serves the filesystem store', ctx.client.fetch({ origin: nginx.url, paths: allPaths, concurrency: 4 }));
    const byName = new Map(started.map((s) => [s.name, s]));
    const aliveAll = async (): Promise<void> => {
      for (const s of started) await assertAlive(s);
      const g = gatewayDied();
      if (g) throw new ServerFailure('radosgw', `exited by itself (${g})`, '(its log is in the Ceph fixture\'s temp directory)');
    };

    // (a) one client, the warm big blob.
    const out: NonNullable<Results['s11']> = {
      bigBlob: big.size,
      bigRepeat: q.bigRepeat,
      smallSize: q.smallSize,
      smallBlobs: small.length,
      smallGets: small.length * q.smallRepeat,
      clients: q.clients,
      s3Backend: withS3Backend,
      buckets,
      workBytes,
      workBytesEnd: null,
      single: {},
      many: {},
      hangup: null,
    };
    await sideBySide(
      ctx,
      started.map((s) => s.name),
      async (name) => {
        const s = byName.get(name)!;
        const peak = new PeakRss(() => s.pids());
        const r = await check(`s11 (a) ${name}`, ctx.client.fetch({ origin: s.url, paths: Array.from({ length: q.bigRepeat }, () => bigPath), concurrency: 1, engine: 'raw' }));
        const rss = peak.stop();
        if (r.bytes !== big.size * q.bigRepeat) throw new Error(`s11 (a) ${name}: ${r.bytes} of ${big.size * q.bigRepeat} bytes`);
        return { mibps: r.bytes / MiB / (r.wallMs / 1000), rss };
      },
      (name, r) => {
        const o = (out.single[name] ??= { mibps: [], rss: [] });
        o.mibps.push(r.mibps);
        o.rss.push(r.rss);
      },
      true,
      q.runs,
    );
    log(`s11 (a): ${Object.entries(out.single).map(([n, o]) => `${n} ${median(o.mibps).toFixed(0)} MiB/s (peak RSS ${(Math.max(...o.rss) / MiB).toFixed(1)} MiB)`).join(', ')}`);
    await aliveAll();

    // (b) many clients, the warm small blobs.
    const many = smallPaths.flatMap((p) => Array.from({ length: q.smallRepeat }, () => p));
    await sideBySide(
      ctx,
      started.map((s) => s.name),
      async (name, run) => {
        const s = byName.get(name)!;
        const paths = shuffled(many, 1100 + Math.max(0, run));
        const peak = new PeakRss(() => s.pids());
        const r = await check(`s11 (b) ${name}`, ctx.client.fetch({ origin: s.url, paths, concurrency: q.clients, engine: 'raw' }));
        const rss = peak.stop();
        if (r.bytes !== q.smallSize * paths.length) throw new Error(`s11 (b) ${name}: ${r.bytes} of ${q.smallSize * paths.length} bytes`);
        const wallS = r.wallMs / 1000;
        return { rps: paths.length / wallS, mibps: r.bytes / MiB / wallS, p50: percentile(r.latMs, 50), p99: percentile(r.latMs, 99), rss };
      },
      (name, r) => {
        const o = (out.many[name] ??= { rps: [], mibps: [], p50: [], p99: [], rss: [] });
        o.rps.push(r.rps);
        o.mibps.push(r.mibps);
        o.p50.push(r.p50);
        o.p99.push(r.p99);
        o.rss.push(r.rss);
      },
      true,
      q.runs,
    );
    log(`s11 (b): ${Object.entries(out.many).map(([n, o]) => `${n} ${median(o.rps).toFixed(0)} req/s, p99 ${median(o.p99).toFixed(1)} ms`).join(', ')}`);
    await aliveAll();

    // Clients that hang up on stevedore-s3 mid-blob: it must survive and serve afterwards.
    if (sds3) {
      await sleep(q.settleMs);
      const fdsBefore = fdsOf(sds3);
      const rssBefore = rssOf(sds3);
      const peak = new PeakRss(() => sds3.pids());
      let hung = 0;
      let cut = 0;
      for (let i = 0; i < q.hangupRounds && sds3.exited() === null; i++) {
        const r = await hangupRound(sds3, bigPath, big.size, q.hangupClients, rand);
        hung += r.clients;
        cut += r.cut;
      }
      const peakRss = peak.stop();
      await sleep(q.settleMs);
      // A process that died or logged a defect fails the benchmark here.
      await assertAlive(sds3);
      const problem = await answerProblem(sds3);
      // Every S3 stream the clients left must have been given back: the blobs still come whole.
      const servesAfter = problem === null ? ((await servesWhole(sds3, smallPaths[0]!, q.smallSize)) ?? (await servesWhole(sds3, bigPath, big.size))) : null;
      const fdsAfter = fdsOf(sds3);
      const rssAfter = rssOf(sds3);
      out.hangup = { clients: hung, cut, answered: problem === null, problem, servesAfter: servesAfter === null && problem === null, servesProblem: servesAfter, fdsBefore, fdsAfter, rssBefore, rssAfter, peakRss };
      log(
        `s11 hang-ups on ${S3_NAMES.s3}: ${hung} clients reset the ${big.size}-byte blob (${cut} at their byte); ` +
          `${problem === null ? 'it answers' : `it is alive but ${problem}`}${servesAfter ? `; but ${servesAfter}` : problem === null ? ', and serves the blobs whole' : ''}; ` +
          `fds ${fdsBefore} → ${fdsAfter}, RSS ${(rssBefore / MiB).toFixed(1)} → ${(rssAfter / MiB).toFixed(1)} MiB (peak ${(peakRss / MiB).toFixed(1)} MiB)`,
      );
    }
    await aliveAll();
    if (work !== null) {
      out.workBytesEnd = await dirBytes(work);
      log(`s11: ${S3_NAMES.s3}'s local working space holds ${out.workBytesEnd} bytes at the end`);
    }
    ctx.results.s11 = out;
  } finally {
    // stop() throws if a process died or logged a defect: that failure wins over anything else.
    try {
      await stopEach(started.reverse());
    } finally {
      s3?.destroy();
      for (const fn of teardowns.reverse()) await Promise.resolve(fn()).catch((err: unknown) => log(`s11 cleanup: ${String(err)}`));
    }
  }
}

// ---- scenario 12: cluster mode on the S3 backend, before and after (followers verifying) ------

const REPO_S12 = 'bench/s12';
/** The replicas' shared secret (cluster.token). */
const S12_TOKEN = 'stevedore-bench-replicas-token-0123456789';
/** The line a replica logs when it takes a blob's lease and downloads it for the cluster (pull-through.ts). */
const HOLDING = 'downloading a blob for the cluster (holding its lease)';

/** A build of stevedore scenario 12 runs: this checkout ('current') or `--baseline DIR` ('baseline'). */
interface S12Build {
  key: 'baseline' | 'current';
  build: StevedoreBuild;
  git: string;
  dir: string;
}

interface S12Run {
  /** Clients started → the last client had its last byte. */
  wallS: number;
  /** The upstream GET: request in → last byte out of the link. */
  downloadS: number;
  /** Relative to the end of the upstream download (negative: before it ended), s. */
  followerTtfb: number[];
  followerDone: number[];
  holderDone: number[];
  /** The followers' first byte from their request, s. */
  followerTtfbAbs: number[];
  upstreamGets: number;
  upstreamBytes: number;
  /** Replicas that logged holding the blob's lease (2: a takeover). */
  holders: number;
  /** Per replica, holder first: its id, peak RSS (VmHWM, fresh process), CPU-seconds from the clients' start until the object was in the bucket. */
  replicas: Array<{ id: string; holder: boolean; rss: number; cpuS: number }>;
  /** The blob was an object of the bucket (key naming its digest, of its size) within 60 s of the last client. */
  stored: boolean;
}

const sLast = (xs: number[]): number => Math.max(...xs);

/** Every object and unfinished multipart upload of `bucket` removed, then the bucket (the OSD keeps objects in RAM). */
async function emptyAndDeleteBucket(s3: S3Client, bucket: string): Promise<void> {
  for (;;) {
    const keys = (await listBucket(s3, bucket)).map((o) => ({ Key: o.key }));
    if (keys.length === 0) break;
    for (let i = 0; i < keys.length; i += 1000) await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1000), Quiet: true } }));
  }
  const ups = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  for (const u of ups.Uploads ?? []) await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
  await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
}

async function s12Once(ctx: Ctx, b: S12Build, rgw: Rgw, s3: S3Client, blob: ReturnType<typeof contentBlob>, bucket: string): Promise<S12Run> {
  const q = ctx.p.s12;
  const dirs: string[] = [];
  let redis: RedisServer | null = null;
  const started: StevedoreServer[] = [];
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  try {
    redis = await startRedis();
    for (let i = 0; i < q.replicas; i++) {
      const work = await tmpDir(undefined, 'stevedore-bench-s12-work-');
      dirs.push(work);
      const port = await freePort();
      started.push(
        await startStevedore({
          build: b.build,
          storage: work,
          upstreamUrl: ctx.upstream.url,
          nodeArgs: ctx.nodeArgs,
          name: `stevedore ${b.key} replica-${i + 1}`,
          // Keys both builds know (the baseline has no cluster.allowedNetworks: its default covers 127.0.0.0/8 in the new one).
          config: {
            listen: `127.0.0.1:${port}`,
            storage: {
              path: work,
              maxSize: null,
              backend: 's3',
              s3: { bucket, prefix: '', endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
            },
            metadata: { redis: redis.redisUrl },
            cluster: { replicaId: `replica-${i + 1}`, advertise: `http://127.0.0.1:${port}`, token: S12_TOKEN },
          },
        }),
      );
    }
    const origins = started.map((s) => s.url);
    const cpu0 = started.map((s) => cpuSeconds(s.pid) ?? NaN);
    ctx.upstream.resetCounts();
    ctx.upstream.setRate(q.linkRate);
    let r;
    try {
      r = await ctx.client.spread({ origins, path: blobPath(REPO_S12, blob.digest), clients: q.clients });
    } finally {
      ctx.upstream.setRate(null);
    }
    const wrong = r.clients.filter((c) => c.status !== 200 || c.bytes !== blob.size || c.digest !== blob.digest);
    if (wrong.length) {
      throw new Error(
        `s12 (${b.key}): ${wrong.length} of ${q.clients} client(s) did not get the blob right, e.g. ` +
          wrong
            .slice(0, 3)
            .map((c) => `${c.origin}: status ${c.status}, ${c.bytes} of ${blob.size} bytes, ${c.digest === blob.digest ? 'digest right so far' : `digest ${c.digest.slice(0, 19)}…`}${c.error ? `, ${c.error}` : ''}`)
            .join('; '),
      );
    }
    const last = sLast(r.clients.map((c) => c.endAt));
    const gets = ctx.upstream.records().filter((x) => x.method === 'GET' && x.path.includes(blob.digest));
    const upstreamBytes = ctx.upstream.bytes();
    // The download whose end the followers are measured against: the (first) GET that delivered the whole blob.
    const download = gets.find((x) => x.finishedAt !== null && x.bytes === blob.size);
    if (!download || download.finishedAt === null) throw new Error(`s12 (${b.key}): no upstream GET delivered the whole blob (${gets.length} GET(s): ${gets.map((x) => `${x.status} ${x.bytes} bytes`).join(', ')})`);
    const end = download.finishedAt;
    const holding: number[] = [];
    for (let i = 0; i < started.length; i++) {
      const text = await fsp.readFile(started[i]!.logFile, 'utf8').catch(() => '');
      if (text.includes(HOLDING)) holding.push(i);
    }
    if (holding.length === 0) throw new Error(`s12 (${b.key}): no replica logged "${HOLDING}"`);
    const holder = origins[holding[0]!]!;
    const followers = r.clients.filter((c) => c.origin !== holder);
    const mine = r.clients.filter((c) => c.origin === holder);
    // The object in the bucket: the holder's work is done (the CPU figures include its last parts and the completion).
    const key = `blobs/sha256/${blob.digest.slice(7, 9)}/${blob.digest.slice(7)}`;
    const stored = await waitFor(
      'the blob in the bucket',
      async () => {
        const h = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).catch(() => null);
        return h?.ContentLength === blob.size;
      },
      60_000,
      100,
    ).then(
      () => true,
      () => false,
    );
    const cpu1 = started.map((s) => cpuSeconds(s.pid) ?? NaN);
    const rss = started.map((s) => memStatus(s.pid)?.hwm ?? NaN);
    const order = [holding[0]!, ...started.map((_, i) => i).filter((i) => i !== holding[0])];
    const toS = (ms: number): number => ms / 1000;
    return {
      wallS: toS(last - r.startAt),
      downloadS: toS(end - download.startedAt),
      followerTtfb: followers.map((c) => toS(c.firstByteAt - end)),
      followerDone: followers.map((c) => toS(c.endAt - end)),
      holderDone: mine.map((c) => toS(c.endAt - end)),
      followerTtfbAbs: followers.map((c) => toS(c.firstByteAt - c.startAt)),
      upstreamGets: gets.length,
      upstreamBytes,
      holders: holding.length,
      replicas: order.map((i) => ({ id: `replica-${i + 1}`, holder: i === holding[0], rss: rss[i]!, cpuS: cpu1[i]! - cpu0[i]! })),
      stored,
    };
  } finally {
    // Replicas first, then Redis. stop() throws if a process died or logged a defect: that failure wins.
    await stopEach([...started, ...(redis ? [redis] : [])]).finally(async () => {
      for (const d of dirs) await removeDir(d);
      await emptyAndDeleteBucket(s3, bucket).catch((err: unknown) => log(`s12: could not remove bucket ${bucket}: ${String(err)}`));
    });
  }
}

async function scenario12(ctx: Ctx, baselineDir: string | null): Promise<void> {
  const q = ctx.p.s12;
  const blob = contentBlob('s12/blob', q.blobBytes);
  await pushGenerated(ctx.upstream.directUrl, REPO_S12, blob);
  const builds: S12Build[] = [];
  if (baselineDir !== null) {
    const dir = path.resolve(baselineDir);
    for (const need of ['lib', 'node_modules', 'tsconfig.build.json']) {
      await fsp.access(path.join(dir, need)).catch(() => {
        throw new Error(`--baseline ${dir}: no ${need} there (a checkout of stevedore with npm ci run in it)`);
      });
    }
    const git = await gitVersion(dir);
    log(`s12: building the baseline from ${dir} (git ${git})`);
    const build = await buildStevedore(dir);
    ctx.cleanups.push(() => removeDir(build.dir));
    if (build.warnings) log(`s12: tsc reported problems in the baseline but emitted JavaScript:\n${build.warnings}`);
    builds.push({ key: 'baseline', build, git, dir });
  }
  builds.push({ key: 'current', build: ctx.build, git: ctx.git, dir: ROOT });
  log(
    `s12: cluster mode on the S3 backend: ${q.replicas} replicas on one bucket of one RADOS gateway and one redis-server, ${q.clients} clients at once on one cold ${blob.size}-byte blob, ` +
      `upstream link paced to ${q.linkRate} B/s; ${builds.map((b) => `${b.key} (git ${b.git})`).join(' and ')}, one warm-up run of each, then ${q.runs} interleaved run(s) of each`,
  );
  const teardowns: Array<() => unknown> = [];
  let s3: S3Client | null = null;
  const out: NonNullable<Results['s12']> = { blobBytes: blob.size, clients: q.clients, replicas: q.replicas, linkRate: q.linkRate, runs: q.runs, builds: {} };
  try {
    const t0 = performance.now();
    const rgw = await startRgw({ teardown: (fn) => void teardowns.push(fn) });
    log(`s12: RADOS gateway up at ${rgw.endpoint} after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const gateway = rgw.gateway;
    s3 = new S3Client({ endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } });
    let n = 0;
    for (let run = -1; run < q.runs; run++) {
      for (const b of rotate(builds, Math.max(0, run))) {
        const r = await s12Once(ctx, b, rgw, s3, blob, `stevedore-s12-${++n}`);
        if (gateway.exitCode !== null || gateway.signalCode !== null) throw new ServerFailure('radosgw', `exited by itself (${gateway.exitCode ?? gateway.signalCode})`, "(its log is in the Ceph fixture's temp directory)");
        const f = (xs: number[]): string => `${median(xs).toFixed(2)}/${sLast(xs).toFixed(2)}`;
        log(
          `s12 ${run < 0 ? 'warm-up' : `run ${run + 1}`} ${b.key}: all ${q.clients} clients done after ${r.wallS.toFixed(2)} s (upstream download ${r.downloadS.toFixed(2)} s, ${r.upstreamGets} GET(s), ${r.upstreamBytes} bytes); ` +
            `followers relative to the download's end: first byte ${f(r.followerTtfb)} s, done ${f(r.followerDone)} s (median/max); the holder's clients done ${f(r.holderDone)} s; ` +
            `${r.replicas.map((x) => `${x.id}${x.holder ? ' (holder)' : ''} ${(x.rss / MiB).toFixed(1)} MiB, ${x.cpuS.toFixed(2)} CPU-s`).join('; ')}` +
            (r.holders > 1 ? `; ${r.holders} replicas held the lease in turn` : '') +
            (r.stored ? '' : '; THE BLOB WAS NOT AN OBJECT OF THE BUCKET 60 s after the last client'),
        );
        if (run < 0) continue;
        const o = (out.builds[b.key] ??= {
          git: b.git,
          dir: b.dir,
          wallS: [],
          downloadS: [],
          followerTtfbMed: [],
          followerTtfbMax: [],
          followerTtfbAbsMed: [],
          followerDoneMed: [],
          followerDoneMax: [],
          holderDoneMed: [],
          upstreamGets: [],
          holders: [],
          rssHolder: [],
          rssFollower: [],
          cpuHolder: [],
          cpuFollower: [],
          cpuTotal: [],
          replicas: [],
          stored: [],
        });
        const followers = r.replicas.filter((x) => !x.holder);
        o.wallS.push(r.wallS);
        o.downloadS.push(r.downloadS);
        o.followerTtfbMed.push(median(r.followerTtfb));
        o.followerTtfbMax.push(sLast(r.followerTtfb));
        o.followerTtfbAbsMed.push(median(r.followerTtfbAbs));
        o.followerDoneMed.push(median(r.followerDone));
        o.followerDoneMax.push(sLast(r.followerDone));
        o.holderDoneMed.push(median(r.holderDone));
        o.upstreamGets.push(r.upstreamGets);
        o.holders.push(r.holders);
        o.rssHolder.push(r.replicas[0]!.rss);
        o.rssFollower.push(sLast(followers.map((x) => x.rss)));
        o.cpuHolder.push(r.replicas[0]!.cpuS);
        o.cpuFollower.push(median(followers.map((x) => x.cpuS)));
        o.cpuTotal.push(r.replicas.reduce((a, x) => a + x.cpuS, 0));
        o.replicas.push(r.replicas);
        o.stored.push(r.stored);
      }
    }
    ctx.results.s12 = out;
  } finally {
    s3?.destroy();
    for (const fn of teardowns.reverse()) await Promise.resolve(fn()).catch((err: unknown) => log(`s12 cleanup: ${String(err)}`));
  }
}

/**
 * Runs one scenario, then checks every warm contender: one that died or logged a defect fails the
 * benchmark, naming the scenario (also when the scenario failed some other way because of it).
 */
async function runScenario(ctx: Ctx, id: ScenarioId, fn: () => Promise<void>): Promise<void> {
  let error: unknown = null;
  try {
    await fn();
  } catch (err) {
    error = err;
  }
  for (const s of ctx.warm?.all ?? []) {
    const f = await failureOf(s);
    if (f) {
      const also = error && !(error instanceof ServerFailure) ? `\n(the scenario itself failed with: ${(error as Error).message ?? String(error)})` : '';
      throw new Error(`scenario ${id}: ${f.message}${also}`, { cause: f });
    }
  }
  if (error instanceof ServerFailure) throw new Error(`scenario ${id}: ${error.message}`, { cause: error });
  if (error) throw error;
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
      'rollout-mib': { type: 'string' },
      's11-no-s3-backend': { type: 'boolean', default: false },
      baseline: { type: 'string' },
      's12-runs': { type: 'string' },
      's12-size': { type: 'string' },
    },
  });
  const p = paramsFor(values.quick ? 'quick' : 'full');
  if (values.runs) p.runs = Number(values.runs);
  if (values['rollout-mib'] !== undefined) {
    const mib = Number(values['rollout-mib']);
    if (!(mib > 0)) throw new Error(`--rollout-mib: a size in MiB above 0, not ${values['rollout-mib']}`);
    p.rollout.imageBytes = Math.round(mib * MiB);
  }
  if (values['s12-runs'] !== undefined) {
    const n = Number(values['s12-runs']);
    if (!(Number.isInteger(n) && n >= 1)) throw new Error(`--s12-runs: a whole number ≥ 1, not ${values['s12-runs']}`);
    p.s12.runs = n;
  }
  if (values['s12-size'] !== undefined) {
    const n = parseSize(values['s12-size']);
    if (n === null || n < 1) throw new Error(`--s12-size: a size such as 32MiB, not ${values['s12-size']}`);
    p.s12.blobBytes = n;
  }
  const only = new Set<ScenarioId>(values.only ? (values.only.split(',').map((s) => s.trim()) as ScenarioId[]) : DEFAULT);
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
  /** Stops everything; returns the first contender that had died or logged a defect by then. */
  const stopAll = async (): Promise<ServerFailure | null> => {
    let failed: ServerFailure | null = null;
    while (cleanups.length) {
      await cleanups.pop()!().catch((err: unknown) => {
        if (err instanceof ServerFailure) failed ??= err;
        log(`cleanup: ${String(err).split('\n')[0]}`);
      });
    }
    return failed;
  };
  process.once('SIGINT', () => {
    log('interrupted; stopping everything');
    void stopAll().then(() => process.exit(130));
  });
  try {
    log(`mode ${p.mode}, ${p.runs} run(s) per contender, scenarios ${[...only].join(',')}`);
    const git = await gitVersion();
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
    if (SEEDED.some((id) => only.has(id))) {
      await pushGenerated(upstream.directUrl, REPO_BIG, big);
      for (const b of s2blobs) await pushGenerated(upstream.directUrl, REPO_BLOBS, b);
      await pushImage(upstream.directUrl, REPO_APP, 'v1', app);
      await pushImage(upstream.directUrl, REPO_PULL, 'v1', pullImg);
    }

    const results: Results = {};
    const ctx: Ctx = { p, upstream, client, build, git, nodeArgs, results, big, s2blobs, app, pullImg, cleanups };
    const scenarios: Record<ScenarioId, () => Promise<void>> = {
      s1: () => scenario1(ctx),
      s2: () => scenario2(ctx),
      s3: async () => {
        results.s3 = await manifestScenario(ctx, true);
      },
      s4: async () => {
        results.s4 = await manifestScenario(ctx, false);
      },
      s5: () => scenario5(ctx),
      s6: () => scenario6(ctx),
      s7: () => scenario7(ctx),
      s8: () => scenario8(ctx),
      s9: () => scenario9(ctx),
      s10: () => scenario10(ctx),
      s11: () => scenario11(ctx, !values['s11-no-s3-backend']),
      s12: () => scenario12(ctx, values.baseline ?? null),
    };
    for (const id of ALL) if (only.has(id)) await runScenario(ctx, id, scenarios[id]);
    const failed = await stopAll();
    if (failed) throw new Error(`after the scenarios, at shutdown: ${failed.message}`, { cause: failed });

    const ticks1 = cpuTicks();
    const meta = await collectMeta(p, (performance.now() - started) / 1000, {
      loadStart: load0,
      loadEnd: loadAvg(),
      // USER_HZ is 100 on Linux.
      foreignCpuS: Math.max(0, ticks1.busy - ticks0.busy - (ticks1.own - ticks0.own)) / 100,
      stealS: (ticks1.steal - ticks0.steal) / 100,
    }, git);
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
