/**
 * Scenario "soak": stevedore under a mixed, hostile load for `--soak-minutes` (30 by default), its
 * resources sampled all along and reported per window, with their slope per hour. Not in the
 * default run: `--only soak`, or any `--soak-*` option alone.
 *
 * One fresh stevedore (or, with `--soak-cluster`, replicas on one store directory and one
 * redis-server) in front of the upstream registry through a fault proxy (bench/lib/fault-proxy.ts:
 * resets, stalls, 429 windows). The load runs in the load-generator process
 * (bench/lib/soak-load.ts): warm blobs and manifests at 64 connections, clients resetting at every
 * stage, cold pulls of images pushed during the run, Range requests, hostile input. In the cluster
 * variant a replica (or, once `server.workers` gives a replica children, one of its workers) is
 * killed with SIGKILL every few minutes and restarted, and Redis is killed and restarted once.
 *
 * Fails (the benchmark exits 1, the windows so far in its log) on any body that is whole and wrong,
 * and on a stevedore process that exits without the soak killing it, or logs a defect.
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { startRedis as startTestRedis, type RedisServer as TestRedis } from '../../test/fixtures/redis.js';
import { freePort, removeDir, tmpDir } from '../../test/fixtures/util.js';
import { buildImage, contentBlob, MANIFEST_ACCEPT, type BlobSpec } from '../lib/data.js';
import { startFaultProxy, type FaultCounts, type FaultProxy } from '../lib/fault-proxy.js';
import { childPids, cpuSeconds, memStatus, openFds } from '../lib/proc.js';
import { pushGenerated, pushImage } from '../lib/registry-api.js';
import { MiB, num, table, type Target } from '../lib/report.js';
import { blobPath, check, defineScenario, log, type Ctx } from '../lib/scenario.js';
import { startStevedore, type StevedoreServer } from '../lib/servers.js';
import type { SoakWindowStats } from '../lib/soak-load.js';

const REPO_WARM = 'bench/soak';
const REPO_COLD = 'bench/soak-cold';

/** Thresholds of a pass (besides no crash and every byte right). */
export const SOAK_LIMITS = { rssMiBPerH: 5, heapMiBPerH: 5, fdsPerH: 60 };

export interface SoakWindow {
  index: number;
  /** Seconds since the load started. */
  fromS: number;
  toS: number;
  /** The observed process (single: the stevedore; cluster: replica 1, never killed), its workers summed in. */
  rssMeanMiB: number;
  rssMaxMiB: number;
  /** stevedore_nodejs_heap_size_used_bytes from /metrics: the lowest sample (the live set after a GC) and the mean. */
  heapMinMiB: number;
  heapMeanMiB: number;
  /** Means of the samples: the V8 heap's size, and memory outside it (Buffers: stevedore_nodejs_external_memory_bytes). */
  heapTotalMiB: number;
  /** Of heapTotalMiB, the young generation (V8's new space: it grows to its maximum under a high allocation rate). */
  newSpaceMiB: number;
  externalMiB: number;
  /** CPU used by the observed process (and its children) over the window, % of one core. */
  cpuPct: number;
  /** Open descriptors (/proc/<pid>/fd): the lowest and highest sample. */
  fdsMin: number;
  fdsMax: number;
  samples: number;
  /** Cluster: the other replicas' mean RSS (restarts reset them). */
  othersRssMiB: number[];
  load: SoakWindowStats;
  faults: FaultCounts;
  events: string[];
}

export interface SoakResult {
  minutes: number;
  windowMinutes: number;
  cluster: boolean;
  replicas: number;
  seed: number;
  connections: number;
  pauseMs: number;
  /** storage.maxSize of the store (null: unbounded). */
  maxSize?: string | null;
  /** Distinct cold images cycled through (0: a new one every round; absent in older results). */
  coldImages?: number;
  windows: SoakWindow[];
  /** Least squares over the windows but the first (warm-up), per hour. */
  slopes: { rssMiBPerH: number; heapMiBPerH: number; fdsPerH: number; windowsUsed: number };
  wrong: string[];
  crashes: string[];
  kills: number;
  redisRestarts: number;
  pass: boolean;
}

/** Least-squares slope of y over x; NaN with fewer than two points. */
export function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i]! - mx) * (ys[i]! - my);
    sxx += (xs[i]! - mx) ** 2;
  }
  return sxx === 0 ? NaN : sxy / sxx;
}

/**
 * The pids the soak may kill to take down part of `pid`'s service: its children when it has any
 * (the workers of a `server.workers` primary: /proc/<pid>/task/<pid>/children), else itself.
 */
export function killablePids(pid: number): number[] {
  const kids = childPids(pid);
  return kids.length ? kids : [pid];
}

/** The processes of one stevedore: the primary and its children (workers), for RSS and descriptors. */
function tree(pid: number): number[] {
  return [pid, ...childPids(pid)];
}

/** From its /metrics (prom-client's default metrics): V8 heap used and total, the young generation's share of the total, memory outside the heap (Buffers). */
async function nodeMemory(url: string): Promise<{ heapUsed: number; heapTotal: number; newSpace: number; external: number }> {
  const none = { heapUsed: NaN, heapTotal: NaN, newSpace: NaN, external: NaN };
  try {
    const res = await request(`${url}/metrics`, { headersTimeout: 10_000, bodyTimeout: 10_000 });
    const text = await res.body.text();
    const metric = (name: string): number => {
      const m = new RegExp(`^stevedore_${name}(?:\\{[^}]*\\})? ([\\d.e+]+)`, 'm').exec(text);
      return m ? Number(m[1]) : NaN;
    };
    return res.statusCode === 200
      ? {
          heapUsed: metric('nodejs_heap_size_used_bytes'),
          heapTotal: metric('nodejs_heap_size_total_bytes'),
          newSpace: metric('nodejs_heap_space_size_total_bytes\\{space="new"\\}'),
          external: metric('nodejs_external_memory_bytes'),
        }
      : none;
  } catch {
    return none;
  }
}

interface Sample {
  rss: number;
  heap: number;
  heapTotal: number;
  newSpace: number;
  external: number;
  fds: number;
  othersRss: number[];
}

/** One replica (or the single process): how to start it again on the same port after a kill. */
interface Member {
  name: string;
  server: StevedoreServer;
  start: () => Promise<StevedoreServer>;
  /** Killed by the soak and not restarted yet. */
  down: boolean;
  /** Its children (workers) at the last look. */
  children: Set<number>;
}

const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

export default defineScenario<SoakResult>({
  id: 'soak',
  title: 'Soak: hours of mixed, hostile load with faults',
  inDefaultRun: false,
  seeded: false,
  options: {
    'soak-minutes': { type: 'string' },
    'soak-window-minutes': { type: 'string' },
    'soak-cluster': { type: 'boolean', default: false },
    'soak-pause-ms': { type: 'string' },
    'soak-max-size': { type: 'string' },
    'soak-cold-images': { type: 'string' },
  },
  applyOptions(values, p) {
    if (values['soak-minutes'] !== undefined) p.soak.minutes = Number(values['soak-minutes']);
    if (values['soak-window-minutes'] !== undefined) p.soak.windowMinutes = Number(values['soak-window-minutes']);
    if (values['soak-pause-ms'] !== undefined) p.soak.pauseMs = Number(values['soak-pause-ms']);
    if (typeof values['soak-max-size'] === 'string') p.soak.maxSize = values['soak-max-size'] === 'none' ? null : values['soak-max-size'];
    if (values['soak-cold-images'] !== undefined) p.soak.coldImages = Number(values['soak-cold-images']);
    else if (p.soak.maxSize === null) p.soak.coldImages = 0; // an unbounded store never evicts: a cycled image would be warm
    if (values['soak-cluster']) p.soak.cluster = true;
    if (!Number.isInteger(p.soak.coldImages) || p.soak.coldImages < 0) throw new Error(`--soak-cold-images must be a whole number ≥ 0 (got ${String(values['soak-cold-images'])})`);
    if (!(p.soak.minutes > 0)) throw new Error(`--soak-minutes must be a positive number (got ${String(values['soak-minutes'])})`);
  },
  impliedBy: (values) => values['soak-minutes'] !== undefined || values['soak-cluster'] === true || values['soak-window-minutes'] !== undefined,
  async run(ctx) {
    return runSoak(ctx);
  },
  report: {
    section: (r) => soakSection(r),
    targets(r): Target[] {
      const label = `soak, ${r.minutes} min${r.cluster ? `, cluster of ${r.replicas}` : ''}`;
      const s = r.slopes;
      return [
        { target: `${label}: no crash, every byte right`, measured: `${r.crashes.length} crash(es), ${r.wrong.length} wrong answer(s)`, met: r.crashes.length === 0 && r.wrong.length === 0, group: 'last' },
        ...(r.cluster ? [] : [{ target: `${label}: every warm request answered (whatever the upstream does)`, measured: `${warmErrors(r)} failed`, met: warmErrors(r) === 0, group: 'last' as const }]),
        { target: `${label}: RSS slope < ${SOAK_LIMITS.rssMiBPerH} MiB/h`, measured: `${num(s.rssMiBPerH, 2)} MiB/h (${s.windowsUsed} windows)`, met: Number.isFinite(s.rssMiBPerH) ? s.rssMiBPerH < SOAK_LIMITS.rssMiBPerH : null, group: 'last' },
        { target: `${label}: heap slope < ${SOAK_LIMITS.heapMiBPerH} MiB/h`, measured: `${num(s.heapMiBPerH, 2)} MiB/h`, met: Number.isFinite(s.heapMiBPerH) ? s.heapMiBPerH < SOAK_LIMITS.heapMiBPerH : null, group: 'last' },
        { target: `${label}: descriptors slope < ${SOAK_LIMITS.fdsPerH}/h`, measured: `${num(s.fdsPerH, 1)}/h`, met: Number.isFinite(s.fdsPerH) ? s.fdsPerH < SOAK_LIMITS.fdsPerH : null, group: 'last' },
      ];
    },
  },
});

async function runSoak(ctx: Ctx): Promise<SoakResult> {
  const sp = ctx.p.soak;
  const minutes = sp.minutes;
  const windowMinutes = sp.windowMinutes ?? (minutes < 15 ? 1 : 5);
  const seed = Number(process.env.SOAK_SEED ?? Date.now() % 1_000_000);
  const replicas = sp.cluster ? sp.replicas : 1;
  log(`soak: ${minutes} min in windows of ${windowMinutes} min, ${sp.cluster ? `a cluster of ${replicas} replicas (one store, one redis-server)` : 'one process'}, storage.maxSize ${sp.maxSize ?? 'none (unbounded)'}, seed ${seed} (SOAK_SEED repeats it)`);

  // ---- content: warm blobs, a big one for hang-ups, an image for the manifests ----------------
  const warmBlobs: BlobSpec[] = [4 * 1024, 64 * 1024, 256 * 1024, 1 * MiB].map((size, i) => contentBlob(`soak/warm/${i}`, size));
  const hangupBlob = contentBlob('soak/hangup', 16 * MiB);
  const app = buildImage('soak/app', [2 * 1024, 8 * 1024, 32 * 1024]);
  for (const b of [...warmBlobs, hangupBlob]) await pushGenerated(ctx.upstream.directUrl, REPO_WARM, b);
  await pushImage(ctx.upstream.directUrl, REPO_WARM, 'v1', app);

  // ---- the fault proxy, Redis, stevedore ---------------------------------------------------------
  const proxy: FaultProxy = await startFaultProxy(
    ctx.upstream.url,
    { blobResetBeforeHead: 0.05, blobResetMidBody: 0.1, blobStall: 0.08, blobCorrupt: Number(process.env.SOAK_CORRUPT ?? 0.03), manifestReset: 0.03, manifestStall: 0.03, stallMs: [1000, 8000] },
    seed,
  );
  const storage = await tmpDir(undefined, 'stevedore-bench-soak-');
  const redisDir = sp.cluster ? await tmpDir(undefined, 'stevedore-bench-soak-redis-') : null;
  let redis: TestRedis | null = null;
  const members: Member[] = [];
  const crashes: string[] = [];
  const killed = new Set<number>();
  const oldLogs: string[] = [];
  let redisDown = false;
  const cleanup = async (): Promise<void> => {
    for (const m of members) {
      if (m.down) continue;
      await m.server.stop().catch((err: unknown) => {
        crashes.push(`${m.name} at shutdown: ${(err as Error).message.split('\n')[0]}`);
      });
    }
    if (redis) await redis.stop().catch(() => undefined);
    await proxy.stop();
    await removeDir(storage);
    for (const l of oldLogs) await fsp.rm(l, { force: true });
    if (redisDir) await removeDir(redisDir);
  };
  try {
    if (sp.cluster) {
      redis = await startTestRedis({ teardown: () => undefined }, { logFile: path.join(redisDir!, 'redis.log') });
    }
    for (let i = 0; i < replicas; i++) {
      const port = await freePort();
      const name = sp.cluster ? `stevedore replica-${i + 1}` : 'stevedore';
      const start = (): Promise<StevedoreServer> =>
        startStevedore({
          build: ctx.build,
          storage,
          upstreamUrl: proxy.url,
          nodeArgs: ctx.nodeArgs,
          name,
          config: {
            listen: `127.0.0.1:${port}`,
            // Time compressed: the stall path, cool-downs and the breaker within seconds, and tags revalidated (through the faults) every 20 s.
            timeouts: { stall: '5s', firstByte: '15s' },
            upstreamPolicy: { retryAfterDefault: '5s', breakerOpenFor: '5s' },
            cache: { tagTTL: '20s' },
            ...(sp.maxSize !== null ? { storage: { path: storage, maxSize: sp.maxSize } } : {}),
            ...(redis ? { metadata: { redis: redis.url }, cluster: { replicaId: `replica-${i + 1}` } } : {}),
          },
        });
      const server = await start();
      members.push({ name, server, start, down: false, children: new Set(childPids(server.pid)) });
    }
    const origins = members.map((m) => m.server.url);

    // ---- fill: everything warm once, faults off ----------------------------------------------------
    const warmPaths = [...warmBlobs, hangupBlob].map((b) => blobPath(REPO_WARM, b.digest));
    const manifests = [`/v2/${REPO_WARM}/manifests/v1`, `/v2/${REPO_WARM}/manifests/${app.manifestDigest}`];
    await check('soak fill', ctx.client.fetch({ origin: origins[0]!, paths: warmPaths, concurrency: 2 }));
    await check('soak fill manifests', ctx.client.fetch({ origin: origins[0]!, paths: manifests, concurrency: 1, headers: { accept: MANIFEST_ACCEPT } }));
    for (const o of origins.slice(1)) await check('soak fill (replicas)', ctx.client.fetch({ origin: o, paths: warmPaths, concurrency: 2 }));

    // ---- the load ---------------------------------------------------------------------------------
    await ctx.client.soakStart({
      origins,
      upstreamDirect: ctx.upstream.directUrl,
      coldRepo: REPO_COLD,
      warmBlobs: [...warmBlobs, ...app.layers].map((b) => ({ path: blobPath(REPO_WARM, b.digest), digest: b.digest, size: b.size })),
      warmManifests: [
        { path: manifests[0]!, digest: app.manifestDigest },
        { path: manifests[1]!, digest: app.manifestDigest },
      ],
      hangupBlob: { path: blobPath(REPO_WARM, hangupBlob.digest), digest: hangupBlob.digest, size: hangupBlob.size },
      rangeBlob: { path: blobPath(REPO_WARM, warmBlobs[3]!.digest), digest: warmBlobs[3]!.digest, size: warmBlobs[3]!.size },
      hostileBase: { repo: REPO_WARM, tag: 'v1', blobDigest: warmBlobs[0]!.digest, manifestDigest: app.manifestDigest },
      connections: sp.connections,
      pauseMs: sp.pauseMs,
      hangupEveryMs: 1000,
      hangupsAtOnce: 4,
      rangeLoops: 2,
      rangePauseMs: 50,
      hostileEveryMs: 200,
      coldPauseMs: sp.coldPauseMs,
      coldClients: sp.coldClients,
      coldLayers: sp.coldLayers,
      coldImages: sp.coldImages,
      seed,
    });
    proxy.setFaults(true);
    const t0 = performance.now();
    const endAt = t0 + minutes * 60_000;
    const windowMs = windowMinutes * 60_000;
    const windows: SoakWindow[] = [];
    let samples: Sample[] = [];
    let events: string[] = [];
    let kills = 0;
    let redisRestarts = 0;
    const at = (): string => `${((performance.now() - t0) / 60_000).toFixed(1)} min`;

    /** Looks at every process: one that exited or lost a worker without the soak killing it, or logged a defect, is a crash. */
    const lookForCrashes = async (): Promise<void> => {
      for (const m of members) {
        if (m.down) continue;
        const ex = m.server.exited();
        if (ex !== null && !killed.has(m.server.pid)) crashes.push(`${m.name} (pid ${m.server.pid}) exited by itself at ${at()}: ${ex}\n${await m.server.logTail()}`);
        for (const d of await m.server.defects()) if (!crashes.some((c) => c.includes(d))) crashes.push(`${m.name} logged a defect at ${at()}: ${d}`);
        const now = new Set(childPids(m.server.pid));
        for (const pid of m.children) if (!now.has(pid) && !killed.has(pid)) crashes.push(`${m.name}: its child (worker) pid ${pid} exited at ${at()} without the soak killing it`);
        m.children = now;
      }
      if (redis && !redisDown && redis.child().exitCode !== null) crashes.push(`redis-server exited by itself at ${at()}`);
    };

    const takeSample = async (): Promise<void> => {
      const obs = members[0]!;
      const pids = tree(obs.server.pid);
      const rss = pids.reduce((n, pid) => n + (memStatus(pid)?.rss ?? 0), 0);
      const fds = pids.reduce((n, pid) => n + (openFds(pid) ?? 0), 0);
      const mem = await nodeMemory(obs.server.url);
      const othersRss = members.slice(1).map((m) => (m.down ? NaN : tree(m.server.pid).reduce((n, pid) => n + (memStatus(pid)?.rss ?? 0), 0)));
      samples.push({ rss, heap: mem.heapUsed, heapTotal: mem.heapTotal, newSpace: mem.newSpace, external: mem.external, fds, othersRss });
    };

    /** Kills one pid of `pids()` (a worker when the member has workers) with SIGKILL; restarts the member when that was its main process. */
    const killOne = async (m: Member, pids: () => number[]): Promise<void> => {
      const list = pids();
      const pid = list[kills % list.length]!;
      killed.add(pid);
      process.kill(pid, 'SIGKILL');
      kills++;
      if (pid !== m.server.pid) {
        // A worker (a child of the primary): the primary must start another in its place.
        events.push(`${at()}: kill -9 of ${m.name}'s worker ${pid}`);
        const before = list.length;
        const until = performance.now() + 30_000;
        while (childPids(m.server.pid).filter((c) => c !== pid).length < before && performance.now() < until) await sleep(250);
        const now = childPids(m.server.pid).filter((c) => c !== pid);
        if (now.length < before) crashes.push(`${m.name}: its worker ${pid} was killed and not replaced within 30 s (${now.length} of ${before} workers)`);
        else events.push(`${at()}: ${m.name} has ${now.length} workers again`);
        m.children = new Set(now);
        return;
      }
      m.down = true;
      events.push(`${at()}: kill -9 of ${m.name} (pid ${pid})`);
      const old = m.server;
      await sleep(200);
      // Its defects before the kill count; its "exited by itself" does not (the soak did it).
      for (const d of await old.defects()) crashes.push(`${m.name} logged a defect before its kill: ${d}`);
      // Its log is kept until the end (for a failure's report).
      const keptLog = path.join(os.tmpdir(), `stevedore-bench-soak-${process.pid}-${old.pid}.log`);
      await fsp.copyFile(old.logFile, keptLog).then(() => oldLogs.push(keptLog), () => undefined);
      await old.stop().catch(() => undefined);
      await sleep(2000);
      m.server = await m.start();
      m.children = new Set(childPids(m.server.pid));
      m.down = false;
      events.push(`${at()}: ${m.name} restarted (pid ${m.server.pid}, ${m.server.startupMs} ms)`);
    };

    /** CPU-seconds of the observed process and its children (live ones: a restarted worker starts from 0). */
    const cpuNow = (): number => tree(members[0]!.server.pid).reduce((n, pid) => n + (cpuSeconds(pid) ?? 0), 0);
    let cpuAtWindowStart = cpuNow();
    const closeWindow = async (final: boolean): Promise<void> => {
      const load = final ? await ctx.client.soakStop() : await ctx.client.soakWindow();
      const idx = windows.length;
      const from = idx * windowMs;
      const to = Math.min(performance.now() - t0, (idx + 1) * windowMs);
      const rss = samples.map((s) => s.rss);
      const heap = samples.map((s) => s.heap).filter(Number.isFinite);
      const fds = samples.map((s) => s.fds);
      const w: SoakWindow = {
        index: idx,
        fromS: from / 1000,
        toS: to / 1000,
        rssMeanMiB: mean(rss) / MiB,
        rssMaxMiB: Math.max(...rss) / MiB,
        heapMinMiB: heap.length ? Math.min(...heap) / MiB : NaN,
        heapMeanMiB: mean(heap) / MiB,
        heapTotalMiB: mean(samples.map((x) => x.heapTotal).filter(Number.isFinite)) / MiB,
        newSpaceMiB: mean(samples.map((x) => x.newSpace).filter(Number.isFinite)) / MiB,
        externalMiB: mean(samples.map((x) => x.external).filter(Number.isFinite)) / MiB,
        cpuPct: cpuNow() - cpuAtWindowStart,
        fdsMin: Math.min(...fds),
        fdsMax: Math.max(...fds),
        samples: samples.length,
        othersRssMiB: members.slice(1).map((_, i) => mean(samples.map((s) => s.othersRss[i]!).filter(Number.isFinite)) / MiB),
        load,
        faults: proxy.take(),
        events,
      };
      w.cpuPct = (100 * w.cpuPct) / ((to - from) / 1000);
      cpuAtWindowStart = cpuNow();
      windows.push(w);
      samples = [];
      events = [];
      const l = w.load;
      log(
        `soak window ${idx + 1} (${(w.fromS / 60).toFixed(0)}–${(w.toS / 60).toFixed(1)} min): RSS ${w.rssMeanMiB.toFixed(1)} MiB (max ${w.rssMaxMiB.toFixed(1)}), heap ${w.heapMinMiB.toFixed(1)} MiB (min; total ${w.heapTotalMiB.toFixed(1)} of which new space ${w.newSpaceMiB.toFixed(1)}, external ${w.externalMiB.toFixed(1)}), CPU ${w.cpuPct.toFixed(0)} %, fds ${w.fdsMin}–${w.fdsMax}; ` +
          `warm ${l.warm.ok} ok / ${l.warm.errors} errors, p99 ${l.warm.p99Ms.toFixed(1)} ms; cold ${l.cold.ok}/${l.cold.pulls} pulls${l.cold.cycled ? ` (${l.cold.cycled} rounds of an image pulled before)` : ''}; hangups ${l.hangups.total}; ` +
          `range ${l.range.ok} ok / ${l.range.unexpected} unexpected; hostile ${l.hostile.ok} ok / ${l.hostile.unexpected} unexpected; ` +
          `upstream ${w.faults.requests} requests, faults: ${w.faults.resetBeforeHead + w.faults.resetMidBody} resets, ${w.faults.stalls} stalls, ${w.faults.corrupted} corrupted, ${w.faults.tooManyRequests} 429s` +
          (w.events.length ? `; ${w.events.join('; ')}` : '') +
          (l.wrong.length ? `; WRONG: ${l.wrong.join('; ')}` : '') +
          (l.errorSamples.length ? `\n  errors, e.g.: ${l.errorSamples.join(' | ')}` : '') +
          (l.unexpectedSamples.length ? `\n  unexpected, e.g.: ${l.unexpectedSamples.slice(0, 4).join(' | ')}` : ''),
      );
    };

    // ---- the run: one tick a second ------------------------------------------------------------
    let nextSample = 0;
    let next429 = 30_000;
    // Every few minutes; a short run (a check of the soak itself) kills about four times.
    const killEveryMs = Math.min(sp.killEveryMinutes, Math.max(0.5, minutes / 4)) * 60_000;
    let nextKill = killEveryMs;
    const redisAt = sp.cluster ? (minutes * 60_000) / 2 : Infinity;
    let redisDone = false;
    let killTurn = 0;
    while (performance.now() < endAt && crashes.length === 0) {
      const el = performance.now() - t0;
      if (el >= nextSample) {
        await lookForCrashes();
        await takeSample();
        nextSample = el + sp.sampleMs;
      }
      if (el >= next429) {
        proxy.window429(sp.window429S * 1000, 3);
        events.push(`${at()}: upstream 429 window of ${sp.window429S} s`);
        next429 = el + sp.every429S * 1000;
      }
      if (sp.cluster && el >= nextKill) {
        // Replica 1 is observed (its slopes): never killed; the others in turn.
        const m = members[1 + (killTurn++ % (members.length - 1))]!;
        await killOne(m, () => killablePids(m.server.pid)).catch((err: unknown) => crashes.push(`restarting after a kill: ${(err as Error).message.split('\n')[0]}`));
        nextKill = el + killEveryMs;
      }
      if (redis && !redisDone && el >= redisAt) {
        redisDone = true;
        redisDown = true;
        events.push(`${at()}: kill -9 of redis-server`);
        await redis.stop({ hard: true });
        await sleep(3000);
        await redis.restart();
        redisDown = false;
        redisRestarts++;
        events.push(`${at()}: redis-server restarted (empty)`);
      }
      if (el >= (windows.length + 1) * windowMs && performance.now() < endAt) await closeWindow(false);
      await sleep(Math.min(1000, Math.max(0, endAt - performance.now())));
    }
    await lookForCrashes();
    await takeSample();
    proxy.setFaults(false);
    await closeWindow(true);

    // ---- after: every member answers, bytes of a warm blob still right ----------------------------
    if (crashes.length === 0) {
      for (const m of members) {
        const r = await ctx.client.fetch({ origin: m.server.url, paths: warmPaths, concurrency: 2 });
        if (r.failed) crashes.push(`${m.name} did not serve the warm blobs after the soak: ${r.errors.join('; ')}`);
      }
    }
    await lookForCrashes();

    const used = windows.slice(1).filter((w) => w.samples > 0);
    const xs = used.map((w) => (w.fromS + w.toS) / 2 / 3600);
    const slopes = {
      rssMiBPerH: slope(xs, used.map((w) => w.rssMeanMiB)),
      heapMiBPerH: slope(xs, used.map((w) => w.heapMinMiB)),
      fdsPerH: slope(xs, used.map((w) => w.fdsMin)),
      windowsUsed: used.length,
    };
    const wrong = windows.flatMap((w) => w.load.wrong);
    const result: SoakResult = {
      minutes,
      windowMinutes,
      cluster: sp.cluster,
      replicas,
      seed,
      connections: sp.connections,
      pauseMs: sp.pauseMs,
      maxSize: sp.maxSize,
      coldImages: sp.coldImages,
      windows,
      slopes,
      wrong,
      crashes,
      kills,
      redisRestarts,
      pass: false,
    };
    result.pass =
      crashes.length === 0 &&
      wrong.length === 0 &&
      // One process serves warm content through every upstream fault; in a cluster a killed replica's clients fail until it is back.
      (sp.cluster || warmErrors(result) === 0) &&
      slopes.rssMiBPerH < SOAK_LIMITS.rssMiBPerH &&
      slopes.heapMiBPerH < SOAK_LIMITS.heapMiBPerH &&
      slopes.fdsPerH < SOAK_LIMITS.fdsPerH;
    log(`soak: ${result.pass ? 'PASS' : 'FAIL'}; slopes per hour over windows 2–${windows.length} (the first is warm-up): RSS ${num(slopes.rssMiBPerH, 2)} MiB, heap ${num(slopes.heapMiBPerH, 2)} MiB, fds ${num(slopes.fdsPerH, 1)}`);
    if (crashes.length || wrong.length) {
      // The table so far goes to the log: a failed benchmark writes no report. The results and
      // every stevedore log are kept (a directory the benchmark does not remove).
      log(`soak FAILED:\n${soakSection(result).join('\n')}`);
      const kept = await fsp.mkdtemp(path.join(os.tmpdir(), 'stevedore-bench-soak-failed-'));
      const dump = path.join(kept, 'soak.json');
      await fsp.writeFile(dump, JSON.stringify(result, null, 2));
      for (const l of [...oldLogs, ...members.map((m) => m.server.logFile)]) await fsp.copyFile(l, path.join(kept, path.basename(l) === 'stevedore.log' ? `${path.basename(path.dirname(l))}.log` : path.basename(l))).catch(() => undefined);
      throw new Error(`soak: ${crashes.length} crash(es), ${wrong.length} wrong answer(s) (results in ${dump}):\n${[...crashes, ...wrong.slice(0, 10)].join('\n')}`);
    }
    return result;
  } finally {
    await ctx.client.soakStop().catch(() => undefined);
    await cleanup();
  }
}

/** Warm requests that got no answer or a wrong status, over every window. */
function warmErrors(r: Pick<SoakResult, 'windows'>): number {
  return r.windows.reduce((n, w) => n + w.load.warm.errors, 0);
}

export function soakSection(r: SoakResult): string[] {
  const L: string[] = [];
  const f = (x: number, d = 1): string => num(x, d);
  L.push(`## Soak: ${r.minutes} min of mixed, hostile load with upstream faults (${r.cluster ? `${r.replicas} replicas on one store and one redis-server` : 'one process'})`, '');
  const rows = r.windows.map((w) => {
    const l = w.load;
    return [
      `${f(w.fromS / 60, 0)}–${f(w.toS / 60, 0)}${w.index === 0 ? ' (warm-up)' : ''}`,
      `${f(w.rssMeanMiB)} (${f(w.rssMaxMiB)})`,
      `${f(w.heapMinMiB)} (${f(w.heapMeanMiB)})`,
      `${f(w.heapTotalMiB)} (${f(w.newSpaceMiB)}) / ${f(w.externalMiB)}`,
      f(w.cpuPct, 0),
      `${w.fdsMin}–${w.fdsMax}`,
      f(l.warm.p99Ms),
      `${l.warm.ok.toLocaleString('en-US')} / ${l.warm.errors}`,
      `${l.cold.ok} / ${l.cold.failed} (${l.cold.repullsOk}/${l.cold.repulls})`,
      String(l.hangups.total),
      `${l.range.ok} / ${l.range.unexpected} / ${l.range.errors}`,
      `${l.hostile.ok} / ${l.hostile.unexpected}`,
      `${w.faults.resetBeforeHead + w.faults.resetMidBody} / ${w.faults.stalls} / ${w.faults.corrupted} / ${w.faults.tooManyRequests}`,
      String(l.wrong.length),
      ...(r.cluster ? [w.othersRssMiB.map((x) => f(x, 0)).join(' / ')] : []),
      w.events.length ? w.events.join('; ') : '',
    ];
  });
  L.push(
    table(
      [
        'window (min)',
        'RSS MiB mean (max)',
        'heap used MiB min (mean)',
        'heap total (new space) / external MiB',
        'CPU % of a core',
        'fds min–max',
        'warm p99 ms',
        'warm ok / errors',
        'cold pulls ok / failed (re-pulls ok/all)',
        'hang-ups',
        'Range ok / unexpected / errors',
        'hostile ok / unexpected',
        'upstream resets / stalls / corrupted / 429s',
        'wrong bodies',
        ...(r.cluster ? ['other replicas RSS MiB'] : []),
        'events',
      ],
      rows,
    ),
    '',
  );
  const s = r.slopes;
  L.push(
    `Slopes per hour, least squares over windows 2–${r.windows.length} (the first window is warm-up and left out): ` +
      `**RSS ${f(s.rssMiBPerH, 2)} MiB/h**, **heap ${f(s.heapMiBPerH, 2)} MiB/h**, **descriptors ${f(s.fdsPerH, 1)}/h** ` +
      `(pass: < ${SOAK_LIMITS.rssMiBPerH} MiB/h, < ${SOAK_LIMITS.heapMiBPerH} MiB/h, < ${SOAK_LIMITS.fdsPerH}/h). ` +
      `Crashes: ${r.crashes.length}; wrong bodies: ${r.wrong.length}; warm requests failed: ${warmErrors(r)}${r.cluster ? `; kill -9: ${r.kills}; Redis restarts: ${r.redisRestarts}` : ''}. ` +
      `**${r.pass ? 'PASS' : 'FAIL'}**. Seed ${r.seed}.`,
    '',
  );
  L.push(
    `${r.cluster ? 'The figures are replica 1\'s (never killed; its workers summed in when it has any); the others restart after each kill. ' : ''}` +
      `RSS: the mean of samples every few seconds (VmRSS of the process and its children); heap: \`stevedore_nodejs_heap_size_used_bytes\` of its /metrics, the lowest sample of the window (the live set after a GC) and the mean; descriptors: /proc/<pid>/fd, lowest and highest sample. ` +
      `Warm: ${r.connections} connections, ${r.pauseMs} ms between two requests of one connection, half blobs (2 KiB – 1 MiB, every body hashed) and half manifests by tag or digest (hashed, Docker-Content-Digest checked); p99 from request to last byte. ` +
      (r.coldImages
        ? `Cold: ${r.coldImages} images (~2.3 MiB each, \`--soak-cold-images\`) in turn, each pushed to the upstream registry the first time, one per round pulled by 3 clients`
        : 'Cold: a new image pushed to the upstream registry each round, pulled by 3 clients') +
      ' through stevedore (manifest by tag and digest, config, layers, all hashed) while one more resets mid-body on its largest layer, and the previous image pulled again; the upstream is behind a fault proxy that resets or stalls a share of blob and manifest GETs and answers 429 for 10 s every 2 min (stevedore with `timeouts.stall: 5s`, `upstreamPolicy.retryAfterDefault: 5s`, `breakerOpenFor: 5s`, `cache.tagTTL: 20s` so these paths run within minutes). ' +
      (r.maxSize === undefined
        ? ''
        : r.maxSize === null
          ? 'The store is unbounded (`--soak-max-size none`): every cold image stays, and the index, links and memo grow with them. '
          : `The store is bounded (\`storage.maxSize: ${r.maxSize}\`, \`--soak-max-size\`): the cold images are evicted as they age, so the store reaches a steady state within the first window and eviction runs under the load${r.coldImages ? '; the images cycled through are more than it holds, so each comes back evicted and is fetched through the faulty upstream again, while what the process remembers per tag and per link stops growing once every image was pulled' : ''}. `) +
      'A failed cold pull (an upstream fault stevedore could not hide) is counted, never a wrong byte. Hang-ups: 4 raw clients a second reset (RST) after part of the request, inside the head or mid-body of a 16 MiB warm blob, a manifest or the newest cold layer. ' +
      'Range: valid (one range, suffix, open, overlapping merged) and invalid (unsatisfiable, malformed, several disjoint) headers on a 1 MiB blob, every status and byte checked. Hostile: the malformed names, digests, references and ns of test/e2e/bad-input.test.ts (status and OCI code) and malformed requests on raw sockets (oversized head, smuggling, NUL and control bytes, no Host, …: any 4xx), 5 a second. ' +
      'The machine (2 cores) was shared with other work during the run: p99 and request counts move with it; the slopes are what the soak is for.',
    '',
  );
  return L;
}
