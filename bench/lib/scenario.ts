/**
 * What a benchmark scenario is (one file each under bench/scenarios/), the context every scenario
 * runs in (parameters, the upstream, the load client, the stevedore build, the seeded content, the
 * warm contenders), and the run helpers several scenarios share.
 */
import path from 'node:path';
import { removeDir, tmpDir } from '../../test/fixtures/util.js';
import type { LoadClient } from './client-api.js';
import { MANIFEST_ACCEPT, MediaType, type BlobSpec, type ImageSpec } from './data.js';
import type { Params } from './params.js';
import type { PeakRssRow, Target } from './report.js';
import { startDistribution, startNginx, startStevedore, type Server, type StevedoreBuild, type StevedoreServer } from './servers.js';
import { rotate } from './stats.js';
import type { Upstream } from './upstream.js';

export const REPO_BIG = 'bench/big';
export const REPO_BLOBS = 'bench/blobs';
export const REPO_APP = 'bench/app';
export const REPO_PULL = 'bench/pull';

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export function blobPath(repo: string, digest: string): string {
  return `/v2/${repo}/blobs/${digest}`;
}

/** Where a stevedore store on the filesystem keeps a blob. */
export function storeFile(root: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return path.join(root, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

/** The values of the command line's options (bench/run.ts and every scenario's `options`). */
export type OptionValues = Record<string, string | boolean | string[] | undefined>;

/** A scenario's `--name N` option as a whole number ≥ `min`; null when not given; throws on anything else. */
export function wholeOption(values: OptionValues, name: string, min: number): number | null {
  const v = values[name];
  if (typeof v !== 'string') return null;
  const n = Number(v);
  if (!(Number.isInteger(n) && n >= min)) throw new Error(`--${name}: a whole number ≥ ${min}, not ${v}`);
  return n;
}

/** What every scenario runs with: started once by bench/run.ts. */
export interface Ctx {
  p: Params;
  /** The command line's options (a scenario's own ones included, e.g. `--baseline`). */
  values: OptionValues;
  upstream: Upstream;
  client: LoadClient;
  build: StevedoreBuild;
  /** The commit `build` is made from (gitVersion). */
  git: string;
  nodeArgs: string[];
  /** The content pushed to the upstream first when a `seeded` scenario is selected. */
  big: BlobSpec;
  s2blobs: BlobSpec[];
  app: ImageSpec;
  pullImg: ImageSpec;
  /** Warm contenders, started on first use (warmServers). */
  warm?: Warm;
  /** Run at the end (last pushed, first run): stops what lives as long as the benchmark. */
  cleanups: Array<() => Promise<void>>;
  log: (msg: string) => void;
}

export interface Warm {
  stevedore: StevedoreServer;
  distribution: Server;
  nginx: Server;
  all: Server[];
}

/** What rendering a scenario's part of the report gets besides its own results. */
export interface ReportCtx {
  p: Params;
  /** Section 6's rows, from every scenario that ran (in their order: see PeakRssRow). */
  peakRss: PeakRssRow[];
}

/** The parseArgs declaration of a scenario's own command-line options. */
export type OptionSpecs = Record<string, { type: 'string' | 'boolean'; default?: string | boolean; multiple?: boolean }>;

/**
 * One scenario. `run` measures and returns its results (the JSON's `results.<id>`); `report` turns
 * them into its section of RESULTS.md, its rows of the Targets table and of section 6 (peak RSS).
 */
export interface Scenario<R> {
  /** 's1' … : what `--only` names, and the key of its results. */
  id: string;
  title: string;
  /** In a run without `--only`. */
  inDefaultRun: boolean;
  /** Uses the content every run pushes to the upstream first (Ctx.big, s2blobs, app, pullImg). */
  seeded: boolean;
  /** Its own command-line options (all declared to parseArgs), and how they change the parameters. */
  options?: OptionSpecs;
  applyOptions?(values: OptionValues, p: Params): void;
  /** Selected without `--only` when these options are given (the soak: any `--soak-*`); the run is then this scenario alone. */
  impliedBy?(values: OptionValues): boolean;
  run(ctx: Ctx): Promise<R>;
  report: {
    /** Its section of RESULTS.md (lines). */
    section?(r: R, rc: ReportCtx): string[];
    /** Its section when it did not run (scenario 6: the peak RSS of the others). */
    sectionWithout?(rc: ReportCtx): string[];
    targets?(r: R, rc: ReportCtx): Target[];
    /** Its rows of section 6 (peak RSS of the proxies). */
    peakRss?(r: R, rc: ReportCtx): PeakRssRow[];
  };
}

/** A scenario with its results' type erased, as bench/run.ts holds them in one list. */
export interface AnyScenario {
  id: string;
  title: string;
  inDefaultRun: boolean;
  seeded: boolean;
  options?: OptionSpecs;
  applyOptions?(values: OptionValues, p: Params): void;
  impliedBy?(values: OptionValues): boolean;
  run(ctx: Ctx): Promise<unknown>;
  section?(r: unknown, rc: ReportCtx): string[];
  sectionWithout?(rc: ReportCtx): string[];
  targets?(r: unknown, rc: ReportCtx): Target[];
  peakRss?(r: unknown, rc: ReportCtx): PeakRssRow[];
}

/** Checks the shape of a scenario where it is written, and erases its results' type for the list. */
export function defineScenario<R>(s: Scenario<R>): AnyScenario {
  const { report, ...rest } = s;
  return {
    ...rest,
    section: report.section && ((r, rc) => report.section!(r as R, rc)),
    sectionWithout: report.sectionWithout,
    targets: report.targets && ((r, rc) => report.targets!(r as R, rc)),
    peakRss: report.peakRss && ((r, rc) => report.peakRss!(r as R, rc)),
  };
}

export async function check<T extends { failed: number; errors: string[] }>(what: string, r: Promise<T>): Promise<T> {
  const res = await r;
  if (res.failed > 0) throw new Error(`${what}: ${res.failed} request(s) failed: ${res.errors.join('; ')}`);
  return res;
}

/** Starts stevedore, distribution and nginx, and fills both proxies with everything the warm scenarios ask for. */
export async function warmServers(ctx: Ctx): Promise<Warm> {
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
export async function sideBySide<T>(
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

/** The seed of the random cut points (`HANGUP_SEED` repeats an earlier run's). */
export function hangupSeed(): number {
  return Number(process.env.HANGUP_SEED ?? Date.now() % 1_000_000);
}
