/**
 * The benchmark's orchestrator: parses the options, builds stevedore, starts the upstream and the
 * load client, seeds the content, runs the selected scenarios in order (one file each under
 * bench/scenarios/, listed in bench/scenarios/index.ts) and writes the report.
 *
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
 * Options (after `--`): --quick, --prebuilt (the project's dist/ as it is, not a build of its own), --out FILE (Markdown), --json FILE (raw figures),
 * --only s1,s3,... (a subset of the scenarios), --runs N, --cpu-prof DIR (stevedore runs with
 * node --cpu-prof, one .cpuprofile per process written to DIR when it stops), --node-arg ARG
 * (repeatable: an extra node option for every stevedore process, e.g. --node-arg=--require=x.cjs),
 * --workers N|auto (server.workers of every stevedore; its RSS and CPU are then the host's: the
 * supervisor's and every worker's; without it the build's default, and a build older than the key starts),
 * --rollout-mib N (scenario 10's image size, e.g. 20 for a short check; default 200, 8 with --quick),
 * --s11-no-s3-backend (scenario 11 without stevedore's S3 backend, for a build that has none),
 * --baseline DIR (scenario 12 also against stevedore built from the checkout DIR, side by side),
 * --s12-runs N (scenario 12's measured runs of each build, default 3), --s12-size SIZE (its blob, e.g. 32MiB),
 * --soak-minutes N, --soak-window-minutes N, --soak-pause-ms N, --soak-cluster (the soak; any of them
 * without --only runs the soak alone).
 *
 * Scenario 11 (the S3 backend; not in the default run: --only s11) starts one Ceph RADOS gateway
 * and compares stevedore on the filesystem, stevedore on S3, distribution on its s3 driver (and
 * nginx) on one warm big blob and on many warm small ones; then clients hang up on stevedore-s3.
 *
 * The soak (not in the default run: --only soak or --soak-minutes N): stevedore (or three replicas)
 * for N minutes under warm, cold, hanging-up, Range and hostile clients, behind a fault proxy;
 * RSS, heap, descriptors and p99 per window and their slopes per hour (bench/scenarios/s13-soak.ts).
 *
 * Scenario 12 (cluster mode on the S3 backend; not in the default run: --only s12): three replicas
 * on one bucket of a RADOS gateway and one redis-server, 30 clients on one cold blob; with
 * --baseline DIR, the same against another build, interleaved: what followers verifying costs.
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { removeDir } from '../test/fixtures/util.js';
import { LoadClient } from './lib/client-api.js';
import { buildImage, contentBlob } from './lib/data.js';
import { params as paramsFor, type Params } from './lib/params.js';
import { cpuTicks, loadAvg } from './lib/proc.js';
import { pushGenerated, pushImage } from './lib/registry-api.js';
import { collectMeta, gitVersion, orderPeakRss, renderReport, type Meta } from './lib/report.js';
import { log, REPO_APP, REPO_BIG, REPO_BLOBS, REPO_PULL, type Ctx, type OptionSpecs, type OptionValues, type ReportCtx } from './lib/scenario.js';
import { buildStevedore, failureOf, prebuiltStevedore, ROOT, ServerFailure, setStevedoreWorkers } from './lib/servers.js';
import { startUpstream } from './lib/upstream.js';
import { SCENARIOS } from './scenarios/index.js';

const ALL = SCENARIOS.map((s) => s.id);
/**
 * What a run without --only runs: not scenarios 11 and 12 (the S3 backend), which need Ceph
 * (ceph-mon, ceph-osd, radosgw) and a few GiB of RAM for its in-memory OSD: run them with --only.
 */
const DEFAULT = SCENARIOS.filter((s) => s.inDefaultRun).map((s) => s.id);

/**
 * Runs one scenario, then checks every warm contender: one that died or logged a defect fails the
 * benchmark, naming the scenario (also when the scenario failed some other way because of it).
 */
async function runScenario(ctx: Ctx, id: string, fn: () => Promise<void>): Promise<void> {
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

/** The report: the shared header, then every scenario's targets, peak-RSS rows and section, in scenario order. */
function report(meta: Meta, p: Params, results: Record<string, unknown>): string {
  const ran = SCENARIOS.filter((s) => results[s.id] !== undefined);
  const rc: ReportCtx = { p, peakRss: [] };
  rc.peakRss = orderPeakRss(ran.flatMap((s) => s.peakRss?.(results[s.id], rc) ?? []));
  const targets = ran.flatMap((s) => s.targets?.(results[s.id], rc) ?? []);
  const sections = SCENARIOS.map((s) => (results[s.id] !== undefined ? (s.section?.(results[s.id], rc) ?? []) : (s.sectionWithout?.(rc) ?? [])));
  return renderReport(meta, p, targets, sections);
}

// ---- main -------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const scenarioOptions: OptionSpecs = Object.assign({}, ...SCENARIOS.map((sc) => sc.options ?? {}));
  const parsed = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      // The project's dist/ as it is (the test suite's quick run: tap's before script just compiled it) instead of a build of lib/ of its own.
      prebuilt: { type: 'boolean', default: false },
      out: { type: 'string' },
      json: { type: 'string' },
      only: { type: 'string' },
      runs: { type: 'string' },
      'cpu-prof': { type: 'string' },
      'node-arg': { type: 'string', multiple: true },
      workers: { type: 'string' },
      // Each scenario's own: --rollout-mib (s10), --s11-no-s3-backend (s11), --baseline, --s12-runs, --s12-size (s12).
      ...scenarioOptions,
    },
  });
  const all = parsed.values as OptionValues;
  const values = parsed.values as { quick: boolean; prebuilt: boolean; out?: string; json?: string; only?: string; runs?: string; 'cpu-prof'?: string; 'node-arg'?: string[] };
  const p = paramsFor(values.quick ? 'quick' : 'full');
  if (values.runs) p.runs = Number(values.runs);
  for (const sc of SCENARIOS) sc.applyOptions?.(all, p);
  // Without --only, a scenario's own options may select it alone (the soak: --soak-minutes N).
  const implied = SCENARIOS.filter((sc) => sc.impliedBy?.(all)).map((sc) => sc.id);
  const only = new Set<string>(values.only ? values.only.split(',').map((s) => s.trim()) : implied.length ? implied : DEFAULT);
  for (const s of only) if (!ALL.includes(s)) throw new Error(`unknown scenario ${s} (use ${ALL.join(',')})`);
  const out = path.resolve(values.out ?? (values.quick ? path.join(os.tmpdir(), `stevedore-bench-quick-${process.pid}.md`) : path.join(ROOT, 'bench', 'RESULTS.md')));
  const nodeArgs: string[] = [...(values['node-arg'] ?? [])];
  const workers = (all as { workers?: string }).workers;
  if (workers !== undefined) {
    if (workers !== 'auto' && !/^[1-9]\d*$/.test(workers)) throw new Error(`--workers: a number of processes or auto, not ${workers}`);
    setStevedoreWorkers(workers === 'auto' ? 'auto' : Number(workers));
  }
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
    const build = values.prebuilt ? await prebuiltStevedore() : await buildStevedore();
    if (!values.prebuilt) cleanups.push(() => removeDir(build.dir));
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
    if (SCENARIOS.some((sc) => sc.seeded && only.has(sc.id))) {
      await pushGenerated(upstream.directUrl, REPO_BIG, big);
      for (const b of s2blobs) await pushGenerated(upstream.directUrl, REPO_BLOBS, b);
      await pushImage(upstream.directUrl, REPO_APP, 'v1', app);
      await pushImage(upstream.directUrl, REPO_PULL, 'v1', pullImg);
    }

    const results: Record<string, unknown> = {};
    const ctx: Ctx = { p, values: all, upstream, client, build, git, nodeArgs, big, s2blobs, app, pullImg, cleanups, log };
    for (const sc of SCENARIOS) {
      if (!only.has(sc.id)) continue;
      await runScenario(ctx, sc.id, async () => {
        results[sc.id] = await sc.run(ctx);
      });
    }
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
    await fsp.writeFile(out, report(meta, p, results) + (changes ? `\n${changes}` : ''));
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
