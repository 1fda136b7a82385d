/**
 * bench/RESULTS.md: the shared parts (the header: machine, other load, versions, setup; the Targets
 * table) and the helpers every scenario's section is written with (tables, number formats). Each
 * scenario renders its own section, targets and peak-RSS rows (bench/scenarios/).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Params } from './params.js';
import { machine, ROOT } from './servers.js';
import { summarize } from './stats.js';

const exec = promisify(execFile);

export type Series = number[];

export interface Noise {
  loadStart: string;
  loadEnd: string;
  /** CPU-seconds used by processes the benchmark did not start, over the whole run. */
  foreignCpuS: number;
  /** CPU-seconds the hypervisor gave to others while this VM wanted to run. */
  stealS: number;
}

export interface Meta {
  date: string;
  elapsedS: number;
  noise: Noise;
  machine: ReturnType<typeof machine>;
  versions: Record<string, string>;
}

async function version(cmd: string, args: string[], re: RegExp): Promise<string> {
  try {
    const r = await exec(cmd, args).catch((e: { stdout?: string; stderr?: string }) => ({ stdout: e.stdout ?? '', stderr: e.stderr ?? '' }));
    const m = re.exec(`${r.stdout}\n${r.stderr}`);
    return m?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** The commit lib/ is built from (of `root`, default this checkout), and whether lib/ had changes on top: taken when the build is made. */
export async function gitVersion(root = ROOT): Promise<string> {
  let git = 'unknown';
  try {
    const head = (await exec('git', ['rev-parse', '--short', 'HEAD'], { cwd: root })).stdout.trim();
    const dirty = (await exec('git', ['status', '--porcelain', '--', 'lib'], { cwd: root })).stdout.trim() !== '';
    git = `${head}${dirty ? ' with uncommitted changes in lib/' : ''}`;
  } catch {
    // not a git checkout
  }
  return git;
}

export async function collectMeta(_p: Params, elapsedS: number, noise: Noise, git: string): Promise<Meta> {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const undici = JSON.parse(readFileSync(path.join(ROOT, 'node_modules', 'undici', 'package.json'), 'utf8')) as { version: string };
  return {
    date: new Date().toISOString(),
    elapsedS,
    noise,
    machine: machine(),
    versions: {
      stevedore: `${pkg.version} (git ${git})`,
      node: process.version,
      'docker-registry': await version('docker-registry', ['--version'], /(\d+\.\d+\.\d+\S*)/),
      nginx: await version('nginx', ['-v'], /nginx\/(\S+)/),
      wrk: await version('wrk', ['-v'], /wrk\s+\S*?(\d+\.\d+\.\d+)/),
      'redis-server': await version('redis-server', ['--version'], /v=(\S+)/),
      undici: undici.version,
    },
  };
}

// ---- formatting -------------------------------------------------------------------------------

export const MiB = 1024 * 1024;

export function num(x: number, digits: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function digitsFor(x: number): number {
  const a = Math.abs(x);
  return a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
}

/** "median (min – max)" */
export function mmm(values: Series, scale = 1, digits?: number): string {
  const s = summarize(values.map((v) => v / scale));
  if (s.n === 0) return 'n/a';
  const d = digits ?? digitsFor(s.median);
  return s.n === 1 ? num(s.median, d) : `${num(s.median, d)} (${num(s.min, d)} – ${num(s.max, d)})`;
}

export function med(values: Series | undefined): number {
  return values ? summarize(values).median : NaN;
}

export function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${num(a / b, 2)}×` : 'n/a';
}

export function sum(values: Series): number {
  return values.reduce((a, b) => a + b, 0);
}

/** Each run's bytes as a multiple of `base`: "1.00×", or "min – max×" when runs differ. */
export function multiple(values: Series, base: number, digits = 2): string {
  const s = summarize(values.map((b) => b / base));
  if (s.n === 0) return 'n/a';
  return (s.max === s.min ? num(s.min, digits) : `${num(s.min, digits)} – ${num(s.max, digits)}`) + '×';
}

export function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

/** a ≥ k·b, or null when either is not a number. */
export function ge(a: number, b: number, k: number): boolean | null {
  return Number.isFinite(a) && Number.isFinite(b) ? a >= k * b : null;
}

/** The contenders of the warm scenarios present in `rec`, in the report's order. */
export function contenders(rec: Record<string, unknown>): string[] {
  return ['stevedore', 'distribution', 'nginx'].filter((k) => k in rec);
}

/** stevedore's median of `key` over `name`'s ("" on stevedore's own row); `invert`: name's over stevedore's. */
export function vs(rec: Record<string, { [k: string]: Series }>, key: string, name: string, invert = false): string {
  if (name === 'stevedore' || !rec.stevedore) return '';
  const a = med(rec.stevedore[key]);
  const b = med(rec[name]![key]);
  return invert ? ratio(b, a) : ratio(a, b);
}

// ---- targets and peak RSS --------------------------------------------------------------------

/**
 * Where a row goes in the Targets table: every scenario's 'first' rows (in scenario order), then
 * the 'peak-rss' ones (target 6 of scenarios 2–10), then 'backend' (scenarios 11 and 12, their
 * peak RSS included), then 'last' (scenario 7's start-up, scenario 8): the table's order since
 * the report was one file.
 */
export type TargetGroup = 'first' | 'peak-rss' | 'backend' | 'last';
const GROUPS: readonly TargetGroup[] = ['first', 'peak-rss', 'backend', 'last'];

export interface Target {
  target: string;
  measured: string;
  met: boolean | null;
  /** Default 'first'. */
  group?: TargetGroup;
}

const mark = (m: boolean | null): string => (m === null ? 'not measured' : m ? '**met**' : '**MISSED**');

/** Target 6 for one series of peak RSS (none when nothing was measured). */
export function rssTarget(label: string, values: Series | undefined, group: TargetGroup = 'peak-rss'): Target[] {
  if (!values || values.length === 0) return [];
  const peak = Math.max(...values);
  return [{ target: `6. stevedore peak RSS ≤ 200 MiB: ${label}`, measured: `${num(peak / MiB, 1)} MiB (max of runs)`, met: peak <= 200 * MiB, group }];
}

/**
 * A row of section 6 (peak RSS of the proxies): during what, which process, its peak per run.
 * `late` rows come after the others (scenarios 7, 11 and 12: the section's order since the report
 * was one file).
 */
export interface PeakRssRow {
  during: string;
  process: string;
  values: Series;
  late?: boolean;
}

/**
 * With workers the peak rows are the host's (the processes summed); this row adds the one process
 * that peaked highest, run by run — the per-worker figure. Nothing when one process served.
 */
export function largestRow(during: string, o: { rss: Series; rssLargest?: Series } | undefined): PeakRssRow[] {
  if (!o?.rssLargest || o.rssLargest.every((v, i) => v === o.rss[i])) return [];
  return [{ during, process: 'stevedore: the largest one process', values: o.rssLargest }];
}

/** Sorted into the report's order: the normal rows, then the late ones, each in scenario order. */
export function orderPeakRss(rows: PeakRssRow[]): PeakRssRow[] {
  return [...rows.filter((r) => !r.late), ...rows.filter((r) => r.late)];
}

export function peakRssTable(rows: PeakRssRow[]): string {
  return table(['during', 'process', 'peak RSS MiB', 'max of runs'], rows.map((r) => [r.during, r.process, mmm(r.values, MiB, 1), num(Math.max(...r.values) / MiB, 1)]));
}

/** The Targets table (empty when no scenario has a target). */
export function renderTargets(tg: Target[]): string[] {
  if (tg.length === 0) return [];
  const sorted = GROUPS.flatMap((g) => tg.filter((t) => (t.group ?? 'first') === g));
  return ['## Targets', '', table(['target', 'measured', ''], sorted.map((t) => [t.target, t.measured, mark(t.met)])), ''];
}

// ---- the report -------------------------------------------------------------------------------

/** The title, machine, other load, versions and setup. */
export function renderHeader(meta: Meta, p: Params): string[] {
  const m = meta.machine;
  const L: string[] = [];
  L.push('# stevedore benchmark results', '');
  L.push(
    `Recorded by \`npm run bench${p.mode === 'quick' ? ':quick' : ''}\` on ${meta.date.slice(0, 10)} (${meta.date.slice(11, 19)} UTC), ${p.mode} mode: ` +
      `${p.runs} measured run(s) per contender after one discarded warm-up, interleaved (each run rotates which contender goes first); ` +
      `${num(meta.elapsedS, 0)} s in all. Figures are medians with (min – max) over the runs.`,
    '',
  );
  L.push(
    `**Machine**: ${m.nproc} CPUs (${m.cpu}), ${num(m.memGiB, 1)} GiB RAM, Linux ${m.kernel}. ` +
      '**The load generators share these cores with the servers**: one client process (a raw HTTP client and undici in scenarios 1 and 2, ' +
      `undici in 5, 6, 9 and 10) or wrk with ${p.wrk.threads} thread(s) (3 and 4), plus the upstream registry and its counting link in the orchestrator. Every figure is for the whole box, ` +
      'not for a server alone; a server that uses more cores (nginx, Go) takes them from the client.',
    '',
  );
  const nz = meta.noise;
  L.push(
    `**Other load on the machine**: processes the benchmark did not start used ${num(nz.foreignCpuS, 0)} CPU-seconds during the run ` +
      `(${num((100 * nz.foreignCpuS) / (meta.elapsedS * m.nproc), 1)} % of the ${m.nproc} CPUs), the hypervisor stole ${num(nz.stealS, 0)} CPU-seconds; ` +
      `load average ${nz.loadStart} at the start, ${nz.loadEnd} at the end.` +
      (nz.foreignCpuS > 0.05 * meta.elapsedS * m.nproc ? ' **Other work competed with the benchmark: expect wider min – max spreads than on a quiet machine.**' : ''),
    '',
  );
  L.push(`**Versions**: ${Object.entries(meta.versions).map(([k, v]) => `${k} ${v}`).join(', ')}.`, '');
  L.push(
    '**Setup** (all on 127.0.0.1, each a separate process):',
    '- *upstream*: Debian `docker-registry` (CNCF distribution, filesystem storage, access log off) seeded through its API, behind a node "link" proxy that counts every response byte; ' +
      `the link is paced to ${num(p.pull.linkRate / MiB, 0)} MiB/s shared by all streams during scenarios 5, 9 and 10 only (a WAN link to a remote registry).`,
    '- *stevedore*: compiled with `tsc` (no TypeScript loader), one process, embedded defaults plus one upstream; logs at `info` (a JSON line per request) to a file. ' +
      'Scenario 9: three such processes on one store directory with `metadata.redis` set (cluster mode, `cluster.*` defaults, a distinct `cluster.replicaId` each) and one Debian `redis-server` (no persistence). ' +
      `Scenario 10: one central process and ${p.rollout.nodes} node instances (node mode), each with its own store, with and without peers (Redis); a TCP meter in front of the central one.`,
    '- *distribution*: `docker-registry` with Debian\'s default config plus `proxy.remoteurl` and its own storage; logs at `info` (access log on) to a file; a Go process using every core.',
    '- *nginx*: `sendfile on`, `tcp_nopush on`, `worker_processes auto`, access log off, serving stevedore\'s store files (`/v2/<name>/blobs/<digest>` → `blobs/sha256/<xx>/<hex>`): the limit for a warm blob.',
    '- *clients*: a separate node process: undici\'s dispatcher, or a minimal raw HTTP/1.1 client (`bench/lib/raw-http.ts`), bodies counted (not hashed, ' +
      'not copied), one connection per concurrent request; wrk (C) with a Lua script setting `Accept`; in scenario 8, raw sockets from the orchestrator that reset ' +
      'the connection mid-answer (`test/fixtures/hangup.ts`).',
    '',
  );
  return L;
}

/** The whole report: the header, the Targets table, then the scenarios' sections in order. */
export function renderReport(meta: Meta, p: Params, targets: Target[], sections: string[][]): string {
  return [...renderHeader(meta, p), ...renderTargets(targets), ...sections.flat()].join('\n');
}
