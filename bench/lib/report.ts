/** bench/RESULTS.md: machine, versions, one table per scenario, and the targets marked met / missed. */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Params } from './params.js';
import { machine, ROOT } from './servers.js';
import { summarize } from './stats.js';

const exec = promisify(execFile);

type Series = number[];

export interface Results {
  s1?: Record<string, { mibps: Series; undici: Series }>;
  s2?: Record<string, { mibps: Series; p50: Series; p99: Series; undici: Series; undiciP50: Series; undiciP99: Series; rss: Series }>;
  s3?: Record<string, { rps: Series; p50: Series; p99: Series; errors: Series }>;
  s4?: Record<string, { rps: Series; p50: Series; p99: Series; errors: Series }>;
  s5?: {
    imageBytes: number;
    linkRate: number;
    clients: number;
    modes: Record<string, { wallS: Series; upstreamBytes: Series; upstreamRequests: Series; rss: Series }>;
  };
  s6?: { size: number; clients: number; rss: Series; wallS: Series; upstreamBytes: Series };
  /**
   * Cluster mode: modes direct (one client), stevedore (replicas on one store and Redis), distribution
   * (as many independent proxies). rss: per run the largest peak of the processes; rssEach: every one's.
   * warmWallS (stevedore): the same pull again right after, everything in the store.
   */
  s9?: {
    imageBytes: number;
    linkRate: number;
    clients: number;
    replicas: number;
    modes: Record<string, { wallS: Series; warmWallS: Series; upstreamBytes: Series; upstreamRequests: Series; rss: Series; rssEach: Series[] }>;
  };
  /**
   * Rollout through the node-local tier: modes peers (node instances share blobs, Redis) and central
   * (each node straight to the central cache), one entry per run. centralBytes: what the central
   * cache sent the nodes, on the wire (heads included); peerBytes: what the nodes served each other
   * (their access logs); upstreamBytes: the registry's link; nodeS: per run, each node's seconds;
   * rssNode: per run the busiest node's peak, rssEach: every node's; hangupCut / hangupAnswered:
   * the extra client was cut at its byte, and its node answered afterwards.
   */
  s10?: {
    imageBytes: number;
    layers: number;
    nodes: number;
    linkRate: number;
    modes: Record<
      string,
      {
        wallS: Series;
        nodeS: Series[];
        centralBytes: Series;
        centralRequests: Series;
        peerBytes: Series;
        upstreamBytes: Series;
        rssCentral: Series;
        rssNode: Series;
        rssEach: Series[];
        hangupCut: boolean[];
        hangupAnswered: boolean[];
      }
    >;
  };
  s7?: { blobs: number; startupMs: Series; indexMs: Series; rss: Series };
  /**
   * The S3 backend (one RADOS gateway): contenders stevedore-fs, stevedore-s3 (unless s3Backend is
   * false), distribution-s3, nginx. single: part a (one client, the big blob; rss: peak per run);
   * many: part b (`clients` concurrent, the small blobs). buckets: what each S3 contender's bucket
   * held after the warm-up. hangup: clients resetting the big blob on stevedore-s3.
   */
  s11?: {
    bigBlob: number;
    bigRepeat: number;
    smallSize: number;
    smallBlobs: number;
    smallGets: number;
    clients: number;
    s3Backend: boolean;
    buckets: Record<string, { bucket: string; objects: number; bytes: number; example: string }>;
    /** Bytes of files in stevedore-s3's `storage.path` (working space only) after the warm-up; null: not run. */
    workBytes: number | null;
    /** The same at the end of the scenario (stevedore-s3 keeps a committed blob's spool file 30 s for followers). */
    workBytesEnd: number | null;
    single: Record<string, { mibps: Series; rss: Series }>;
    many: Record<string, { rps: Series; mibps: Series; p50: Series; p99: Series; rss: Series }>;
    hangup: {
      clients: number;
      cut: number;
      /** GET /v2/ answered 200 afterwards. */
      answered: boolean;
      problem: string | null;
      /** A small and the big blob came whole afterwards (nothing left stuck on S3 streams the clients abandoned). */
      servesAfter: boolean;
      servesProblem: string | null;
      fdsBefore: number;
      fdsAfter: number;
      rssBefore: number;
      rssAfter: number;
      peakRss: number;
    } | null;
  };
  /**
   * Cluster mode on the S3 backend (one RADOS gateway, one Redis), one cold blob: per build
   * ('baseline': `--baseline DIR`; 'current': this checkout) one entry per measured run. Seconds;
   * follower* and holderDone* relative to the end of the upstream download (negative: before it
   * ended), followerTtfbAbs* from the client's request; *Med / *Max: median / max over the run's
   * clients. rss… and cpu…: the holder, and the followers (RSS: the larger; CPU: the median of them);
   * replicas: every replica, holder first. stored: the blob was an object of the bucket afterwards.
   */
  s12?: {
    blobBytes: number;
    clients: number;
    replicas: number;
    linkRate: number;
    runs: number;
    builds: Record<
      string,
      {
        git: string;
        dir: string;
        wallS: Series;
        downloadS: Series;
        followerTtfbMed: Series;
        followerTtfbMax: Series;
        followerTtfbAbsMed: Series;
        followerDoneMed: Series;
        followerDoneMax: Series;
        holderDoneMed: Series;
        upstreamGets: Series;
        holders: Series;
        rssHolder: Series;
        rssFollower: Series;
        cpuHolder: Series;
        cpuFollower: Series;
        cpuTotal: Series;
        replicas: Array<Array<{ id: string; holder: boolean; rss: number; cpuS: number }>>;
        stored: boolean[];
      }
    >;
  };
  /** Clients that hang up: blob sizes, then per contender one entry per run (rps: one per wrk run). */
  s8?: {
    wrkBlob: number;
    warmBlob: number;
    coldBlob: number;
    contenders: Record<
      string,
      {
        /** Alive, no defect, and answering afterwards (a death or a defect fails the whole benchmark). */
        survived: boolean[];
        /** Why it did not answer, when it did not. */
        problems: string[];
        rps: Series;
        wrkErrors: Series;
        /** Raw clients that hung up (warm and cold rounds), and how many were cut at their chosen byte. */
        hangups: Series;
        cut: Series;
        fdsBefore: Series;
        fdsAfter: Series;
        rssBefore: Series;
        rssAfter: Series;
        /** stevedore: the cold blob every client left is in its store, verified. */
        coldStored: boolean[];
      }
    >;
  };
}

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

const MiB = 1024 * 1024;

function num(x: number, digits: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function digitsFor(x: number): number {
  const a = Math.abs(x);
  return a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
}

/** "median (min – max)" */
function mmm(values: Series, scale = 1, digits?: number): string {
  const s = summarize(values.map((v) => v / scale));
  if (s.n === 0) return 'n/a';
  const d = digits ?? digitsFor(s.median);
  return s.n === 1 ? num(s.median, d) : `${num(s.median, d)} (${num(s.min, d)} – ${num(s.max, d)})`;
}

function med(values: Series | undefined): number {
  return values ? summarize(values).median : NaN;
}

function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${num(a / b, 2)}×` : 'n/a';
}

function sum(values: Series): number {
  return values.reduce((a, b) => a + b, 0);
}

/** Each run's bytes as a multiple of `base`: "1.00×", or "min – max×" when runs differ. */
function multiple(values: Series, base: number, digits = 2): string {
  const s = summarize(values.map((b) => b / base));
  if (s.n === 0) return 'n/a';
  return (s.max === s.min ? num(s.min, digits) : `${num(s.min, digits)} – ${num(s.max, digits)}`) + '×';
}

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

interface Target {
  target: string;
  measured: string;
  met: boolean | null;
}

const mark = (m: boolean | null): string => (m === null ? 'not measured' : m ? '**met**' : '**MISSED**');

function targets(r: Results, p: Params): Target[] {
  const out: Target[] = [];
  const ge = (a: number, b: number, k: number): boolean | null => (Number.isFinite(a) && Number.isFinite(b) ? a >= k * b : null);
  if (r.s1) {
    const s = med(r.s1.stevedore?.mibps);
    const d = med(r.s1.distribution?.mibps);
    const n = med(r.s1.nginx?.mibps);
    out.push({ target: '1. warm blob, 1 client: throughput ≥ 1.0× distribution', measured: ratio(s, d), met: ge(s, d, 1.0) });
    out.push({ target: '1. warm blob, 1 client: throughput ≥ 0.8× nginx', measured: ratio(s, n), met: ge(s, n, 0.8) });
  }
  if (r.s2) {
    const s = med(r.s2.stevedore?.mibps);
    const d = med(r.s2.distribution?.mibps);
    const n = med(r.s2.nginx?.mibps);
    out.push({ target: `2. warm blobs, ${p.s2.clients} clients: throughput ≥ 1.0× distribution`, measured: ratio(s, d), met: ge(s, d, 1.0) });
    out.push({ target: `2. warm blobs, ${p.s2.clients} clients: throughput ≥ 0.8× nginx`, measured: ratio(s, n), met: ge(s, n, 0.8) });
  }
  if (r.s3) {
    const s = med(r.s3.stevedore?.rps);
    const d = med(r.s3.distribution?.rps);
    const sp = med(r.s3.stevedore?.p99);
    const dp = med(r.s3.distribution?.p99);
    out.push({ target: '3. manifest by tag: req/s ≥ 2× distribution', measured: ratio(s, d), met: ge(s, d, 2) });
    out.push({
      target: "3. manifest by tag: p99 ≤ distribution's",
      measured: `${num(sp, 2)} ms vs ${num(dp, 2)} ms`,
      met: Number.isFinite(sp) && Number.isFinite(dp) ? sp <= dp : null,
    });
  }
  if (r.s5) {
    const sd = r.s5.modes.stevedore;
    const direct = r.s5.modes.direct;
    const ratios = (sd?.upstreamBytes ?? []).map((b) => b / r.s5!.imageBytes);
    const exact = ratios.length > 0 && ratios.every((x) => x === 1);
    out.push({
      target: `5. cold pull by ${r.s5.clients} clients: upstream bytes exactly 1.00× the image`,
      measured: ratios.length ? `${[...new Set(ratios.map((x) => num(x, 4)))].join(', ')}× (every run)` : 'n/a',
      met: ratios.length ? exact : null,
    });
    const w = med(sd?.wallS);
    const dw = med(direct?.wallS);
    out.push({ target: `5. cold pull by ${r.s5.clients} clients: wall time ≤ 1.2× one direct pull`, measured: ratio(w, dw), met: Number.isFinite(w) && Number.isFinite(dw) ? w <= 1.2 * dw : null });
  }
  if (r.s9) {
    const sd = r.s9.modes.stevedore;
    const direct = r.s9.modes.direct;
    const ratios = (sd?.upstreamBytes ?? []).map((b) => b / r.s9!.imageBytes);
    const label = `9. cluster, ${r.s9.clients} clients over ${r.s9.replicas} replicas`;
    out.push({
      target: `${label}: upstream bytes exactly 1.00× the image`,
      measured: ratios.length
        ? `${[...new Set(ratios.map((x) => num(x, 4)))].join(', ')}× (every run)` +
          (ratios.some((x) => x !== 1) ? `; extra bytes per run: ${(sd?.upstreamBytes ?? []).map((b) => (b - r.s9!.imageBytes).toLocaleString('en-US')).join(', ')}` : '')
        : 'n/a',
      met: ratios.length ? ratios.every((x) => x === 1) : null,
    });
    const w = med(sd?.wallS);
    const dw = med(direct?.wallS);
    const ww = med(sd?.warmWallS);
    out.push({
      target: `${label}: wall time ≤ 1.2× one direct pull`,
      measured: ratio(w, dw) + (Number.isFinite(ww) ? ` (the same pull warm: ${ratio(ww, dw)})` : ''),
      met: Number.isFinite(w) && Number.isFinite(dw) ? w <= 1.2 * dw : null,
    });
    // What the cluster itself costs: the cold pull against the same clients pulling it warm from the
    // same replicas (on 2 cores, handing out 60 copies is the floor, whatever the upstream does).
    out.push({
      target: `${label}: wall time ≤ 1.2× the same pull warm (what the cold path adds)`,
      measured: ratio(w, ww),
      met: Number.isFinite(w) && Number.isFinite(ww) ? w <= 1.2 * ww : null,
    });
  }
  if (r.s10) {
    const s10 = r.s10;
    const label = `10. rollout to ${s10.nodes} nodes at once`;
    const times = (bytes: Series | undefined): number[] => (bytes ?? []).map((b) => b / s10.imageBytes);
    const every = (xs: number[]): string => (xs.length ? `${[...new Set(xs.map((x) => num(x, 4)))].join(', ')}× (${xs.length === 1 ? 'one run' : 'every run'})` : 'n/a');
    const withPeers = times(s10.modes.peers?.centralBytes);
    out.push({
      target: `${label}, with peers: the central cache serves ≤ 1.5× the image`,
      measured: every(withPeers),
      met: withPeers.length ? withPeers.every((x) => x <= 1.5) : null,
    });
    // The baseline: one copy per node, no more (and no less: the nodes have nowhere else to get it).
    const without = times(s10.modes.central?.centralBytes);
    out.push({
      target: `${label}, without peers: the central cache serves ${s10.nodes}× the image (one copy per node, ±1 %)`,
      measured: every(without),
      met: without.length ? without.every((x) => Math.abs(x - s10.nodes) <= 0.01 * s10.nodes) : null,
    });
    const answered = Object.values(s10.modes).flatMap((o) => o.hangupAnswered);
    if (answered.length) {
      out.push({
        target: `${label}: the node whose extra client hung up mid-layer still answers`,
        measured: `${answered.filter(Boolean).length} of ${answered.length} run(s)`,
        met: answered.every(Boolean),
      });
    }
  }
  const rssTarget = (label: string, values: Series | undefined): void => {
    if (!values || values.length === 0) return;
    const peak = Math.max(...values);
    out.push({ target: `6. stevedore peak RSS ≤ 200 MiB: ${label}`, measured: `${num(peak / MiB, 1)} MiB (max of runs)`, met: peak <= 200 * MiB });
  };
  rssTarget(`scenario 2 (${p.s2.clients} clients, warm blobs)`, r.s2?.stevedore?.rss);
  rssTarget(`scenario 5 (cold pull, ${p.pull.clients} clients)`, r.s5?.modes.stevedore?.rss);
  if (r.s6) rssTarget(`${r.s6.clients} clients on one cold ${num(r.s6.size / MiB, 0)} MiB blob`, r.s6.rss);
  rssTarget('scenario 7 (start-up with the stored blobs)', r.s7?.rss);
  if (r.s9) rssTarget(`scenario 9 (cluster, ${r.s9.clients} clients; largest of ${r.s9.replicas} replicas)`, r.s9.modes.stevedore?.rss);
  if (r.s10) {
    const modes = Object.values(r.s10.modes);
    rssTarget(`scenario 10 (rollout; busiest of ${r.s10.nodes} nodes, both modes)`, modes.flatMap((o) => o.rssNode));
    rssTarget('scenario 10 (rollout; the central cache, both modes)', modes.flatMap((o) => o.rssCentral));
  }
  if (r.s11) {
    const s11 = r.s11;
    rssTarget(`scenario 11 (S3 backend: one client on a warm ${num(s11.bigBlob / MiB, 0)} MiB blob)`, s11.single['stevedore-s3']?.rss);
    rssTarget(`scenario 11 (S3 backend: ${s11.clients} clients on warm ${num(s11.smallSize / MiB, 2)} MiB blobs)`, s11.many['stevedore-s3']?.rss);
    const h = s11.hangup;
    if (h) {
      out.push({
        target: `11. stevedore-s3 survives ${h.clients} clients resetting the warm ${num(s11.bigBlob / MiB, 0)} MiB blob, then serves blobs whole`,
        measured: h.answered && h.servesAfter ? 'survived, answering, blobs whole' : `alive, but ${h.problem ?? h.servesProblem ?? '?'}`,
        met: h.answered && h.servesAfter,
      });
      out.push({ target: '11. stevedore-s3 open fds back within +16 of before the hang-ups', measured: `${h.fdsBefore} → ${h.fdsAfter}`, met: h.fdsAfter - h.fdsBefore <= 16 });
    } else if (!s11.s3Backend) {
      out.push({ target: '11. stevedore-s3 (the S3 backend): every figure', measured: 'not run (--s11-no-s3-backend)', met: null });
    }
  }
  if (r.s12) {
    const s12 = r.s12;
    const label = `12. S3 cluster, ${s12.clients} clients over ${s12.replicas} replicas on a cold ${num(s12.blobBytes / MiB, 0)} MiB blob`;
    for (const [key, o] of Object.entries(s12.builds)) {
      const who = `${S12_LABEL[key] ?? key} (git ${o.git})`;
      out.push({
        target: `${label}, ${who}: one upstream GET per run`,
        measured: `${o.upstreamGets.join(', ')} (${o.upstreamGets.length === 1 ? 'one run' : 'each run'})`,
        met: o.upstreamGets.length ? o.upstreamGets.every((x) => x === 1) : null,
      });
      out.push({ target: `${label}, ${who}: the blob is an object of the bucket afterwards`, measured: `${o.stored.filter(Boolean).length} of ${o.stored.length} run(s)`, met: o.stored.every(Boolean) });
      rssTarget(`scenario 12 (S3 cluster, ${who}; largest of ${s12.replicas} replicas)`, o.rssHolder.map((x, i) => Math.max(x, o.rssFollower[i]!)));
    }
  }
  if (r.s7) {
    const m = med(r.s7.startupMs);
    out.push({ target: `7. start-up with ${r.s7.blobs.toLocaleString('en-US')} stored blobs ≤ 2 s`, measured: `${num(m, 0)} ms (median)`, met: m <= 2000 });
  }
  const sd = r.s8?.contenders.stevedore;
  if (sd && sd.survived.length) {
    const ends = sd.rps.length;
    const clients = sum(sd.hangups);
    const all = sd.survived.every(Boolean);
    out.push({
      target: `8. stevedore survives every hang-up (wrk ends ×${ends}, ${clients.toLocaleString('en-US')} clients reset mid-body)`,
      measured: all ? 'survived, answering' : `did not answer: ${sd.problems.join('; ')}`,
      met: all,
    });
    const before = sd.fdsBefore[0]!;
    const after = sd.fdsAfter.at(-1)!;
    out.push({ target: '8. stevedore open fds back within +16 of before', measured: `${before} → ${after}`, met: after - before <= 16 });
    if (sd.coldStored.length) {
      out.push({
        target: '8. stevedore stores the cold blob that every client left mid-download',
        measured: `${sd.coldStored.filter(Boolean).length} of ${sd.coldStored.length} run(s), digest verified`,
        met: sd.coldStored.every(Boolean),
      });
    }
  }
  return out;
}

export function renderReport(meta: Meta, p: Params, r: Results): string {
  const m = meta.machine;
  const L: string[] = [];
  const contenders = (rec: Record<string, unknown>): string[] => ['stevedore', 'distribution', 'nginx'].filter((k) => k in rec);
  const vs = (rec: Record<string, { [k: string]: Series }>, key: string, name: string, invert = false): string => {
    if (name === 'stevedore' || !rec.stevedore) return '';
    const a = med(rec.stevedore[key]);
    const b = med(rec[name]![key]);
    return invert ? ratio(b, a) : ratio(a, b);
  };

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

  const tg = targets(r, p);
  if (tg.length) {
    L.push('## Targets', '');
    L.push(table(['target', 'measured', ''], tg.map((t) => [t.target, t.measured, mark(t.met)])), '');
  }

  if (r.s1) {
    L.push(`## 1. Warm blob, one client (${num(p.bigBlob / MiB, 0)} MiB)`, '');
    L.push(
      table(
        ['server', 'MiB/s, raw HTTP client', 'stevedore / this', 'MiB/s, undici client', 'stevedore / this'],
        contenders(r.s1).map((n) => [n, mmm(r.s1![n]!.mibps), vs(r.s1!, 'mibps', n), mmm(r.s1![n]!.undici), vs(r.s1!, 'undici', n)]),
      ),
      '',
      `Each run GETs the blob ${p.s1Repeat === 1 ? 'once' : `${p.s1Repeat} times in a row (one connection)`} with each client (alternating which goes first); ` +
        'throughput is all bytes over the time from the first request to the last byte. undici parses in WebAssembly and copies every chunk into it, so ' +
        'at these rates the client process itself can be what limits a run; the raw client (bench/lib/raw-http.ts: one keep-alive socket, ' +
        '`onread` into one reused buffer, bytes counted) costs less per byte. Targets use the raw client.',
      '',
    );
  }
  if (r.s2) {
    const sz = p.s2.sizes;
    L.push(
      `## 2. Warm blobs, ${p.s2.clients} concurrent clients (${sz.length} blobs of ${num(sz[0]! / MiB, 2)}–${num(sz.at(-1)! / MiB, 0)} MiB, ` +
        `${sz.length * p.s2.repeat} GETs per run with each client)`,
      '',
    );
    L.push(
      table(
        ['server', 'aggregate MiB/s', 'p50 ms', 'p99 ms', 'MiB/s stevedore / this', 'p99 this / stevedore', 'undici: MiB/s', 'undici: p50 ms', 'undici: p99 ms', 'peak RSS MiB'],
        contenders(r.s2).map((n) => [
          n,
          mmm(r.s2![n]!.mibps),
          mmm(r.s2![n]!.p50),
          mmm(r.s2![n]!.p99),
          vs(r.s2!, 'mibps', n),
          vs(r.s2!, 'p99', n, true),
          mmm(r.s2![n]!.undici),
          mmm(r.s2![n]!.undiciP50),
          mmm(r.s2![n]!.undiciP99),
          mmm(r.s2![n]!.rss, MiB, 1),
        ]),
      ),
      '',
      'Each run makes the same shuffled list of GETs with the raw HTTP client and with undici (alternating which goes first), one connection per client. ' +
        'Latency: request sent → last body byte, per GET (sizes differ, so p50/p99 mix sizes). Peak RSS covers both.',
      '',
    );
  }
  for (const [key, title] of [
    ['s3', '3. Warm manifest by tag'],
    ['s4', '4. Warm manifest by digest'],
  ] as const) {
    const rec = r[key];
    if (!rec) continue;
    L.push(`## ${title} (wrk, ${p.wrk.connections} connections, ${p.wrk.threads} thread(s), ${p.wrk.durationS} s per run)`, '');
    L.push(
      table(
        ['server', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'req/s stevedore / this', 'p99 this / stevedore'],
        contenders(rec).map((n) => [n, mmm(rec[n]!.rps), mmm(rec[n]!.p50), mmm(rec[n]!.p99), String(Math.max(...rec[n]!.errors)), vs(rec, 'rps', n), vs(rec, 'p99', n, true)]),
      ),
      '',
    );
    if (key === 's3') L.push('distribution asks the upstream (through the link) on every manifest-by-tag request; stevedore trusts a tag for `cache.tagTTL` (5 min). nginx maps the tag to one file.', '');
  }
  if (r.s5) {
    const s5 = r.s5;
    L.push(
      `## 5. Cold pull of a whole image by ${s5.clients} concurrent clients (${num(s5.imageBytes / MiB, 1)} MiB: manifest, config, ${p.pull.layers.length} layers; ` +
        `upstream link ${num(s5.linkRate / MiB, 0)} MiB/s)`,
      '',
    );
    const direct = med(s5.modes.direct?.wallS);
    const rows = ['direct', 'stevedore', 'distribution']
      .filter((k) => k in s5.modes)
      .map((k) => {
        const o = s5.modes[k]!;
        return [
          k === 'direct' ? 'one client, directly from the upstream' : `${s5.clients} clients through ${k}`,
          mmm(o.wallS),
          ratio(med(o.wallS), direct),
          mmm(o.upstreamBytes, MiB, 1),
          multiple(o.upstreamBytes, s5.imageBytes),
          mmm(o.upstreamRequests, 1, 0),
          o.rss.length ? mmm(o.rss, MiB, 1) : '–',
        ];
      });
    L.push(table(['pull', 'wall s', '× direct', 'upstream MiB', 'upstream bytes / image', 'upstream requests', 'peak RSS MiB'], rows), '');
    L.push(
      `Fresh stores (a new process and an empty store) for every run. Each client GETs the manifest by tag, then config and layers, ${p.pull.layerConcurrency} at a time (containerd's default); ` +
        'bytes received are checked against the manifest.',
      '',
    );
  }
  L.push('## 6. Peak RSS of the proxies', '');
  {
    const rows: string[][] = [];
    if (r.s2) for (const n of contenders(r.s2)) rows.push([`2. warm blobs, ${p.s2.clients} clients`, n === 'nginx' ? 'nginx (workers, summed)' : n, mmm(r.s2[n]!.rss, MiB, 1), num(Math.max(...r.s2[n]!.rss) / MiB, 1)]);
    if (r.s5) for (const n of ['stevedore', 'distribution']) if (r.s5.modes[n]) rows.push([`5. cold pull, ${r.s5.clients} clients`, n, mmm(r.s5.modes[n]!.rss, MiB, 1), num(Math.max(...r.s5.modes[n]!.rss) / MiB, 1)]);
    if (r.s6) rows.push([`${r.s6.clients} clients streaming one cold ${num(r.s6.size / MiB, 0)} MiB blob`, 'stevedore', mmm(r.s6.rss, MiB, 1), num(Math.max(...r.s6.rss) / MiB, 1)]);
    if (r.s9) {
      for (const [n, label] of [
        ['stevedore', 'stevedore (largest replica)'],
        ['distribution', 'distribution (largest of them)'],
      ] as const) {
        const o = r.s9.modes[n];
        if (o?.rss.length) rows.push([`9. cluster, ${r.s9.clients} clients over ${r.s9.replicas} processes`, label, mmm(o.rss, MiB, 1), num(Math.max(...o.rss) / MiB, 1)]);
      }
    }
    if (r.s10) {
      for (const [k, label] of [
        ['peers', 'with peers'],
        ['central', 'without peers'],
      ] as const) {
        const o = r.s10.modes[k];
        if (!o) continue;
        rows.push([`10. rollout to ${r.s10.nodes} nodes, ${label}`, 'stevedore (busiest node)', mmm(o.rssNode, MiB, 1), num(Math.max(...o.rssNode) / MiB, 1)]);
        rows.push([`10. rollout to ${r.s10.nodes} nodes, ${label}`, 'stevedore (central)', mmm(o.rssCentral, MiB, 1), num(Math.max(...o.rssCentral) / MiB, 1)]);
      }
    }
    if (r.s7) rows.push([`7. start-up with ${r.s7.blobs.toLocaleString('en-US')} blobs`, 'stevedore', mmm(r.s7.rss, MiB, 1), num(Math.max(...r.s7.rss) / MiB, 1)]);
    if (r.s11) {
      const s11 = r.s11;
      for (const [rec, label] of [
        [s11.single, `11. S3 backend: one client, a warm ${num(s11.bigBlob / MiB, 0)} MiB blob`],
        [s11.many, `11. S3 backend: ${s11.clients} clients, warm ${num(s11.smallSize / MiB, 2)} MiB blobs`],
      ] as const) {
        for (const n of ['stevedore-s3', 'stevedore-fs', 'distribution-s3']) {
          const o = rec[n];
          if (o?.rss.length) rows.push([label, n, mmm(o.rss, MiB, 1), num(Math.max(...o.rss) / MiB, 1)]);
        }
      }
    }
    if (r.s12) {
      const s12 = r.s12;
      for (const [key, o] of Object.entries(s12.builds)) {
        const label = `12. S3 cluster, ${s12.clients} clients on a cold ${num(s12.blobBytes / MiB, 0)} MiB blob, ${S12_LABEL[key] ?? key}`;
        if (o.rssHolder.length) rows.push([label, 'stevedore (the holder)', mmm(o.rssHolder, MiB, 1), num(Math.max(...o.rssHolder) / MiB, 1)]);
        if (o.rssFollower.length) rows.push([label, 'stevedore (the larger follower)', mmm(o.rssFollower, MiB, 1), num(Math.max(...o.rssFollower) / MiB, 1)]);
      }
    }
    if (rows.length) {
      L.push(table(['during', 'process', 'peak RSS MiB', 'max of runs'], rows), '');
      L.push(
        'Peak RSS is VmHWM from /proc/<pid>/status, reset before each run by writing 5 to /proc/<pid>/clear_refs (a fresh process in 5, 6, 9, 10 and 12), backed by sampling VmRSS every 50 ms.',
        '',
      );
      if (r.s6) {
        L.push(
          `The ${r.s6.clients}-client cold blob: ${mmm(r.s6.wallS)} s until every client had the whole blob; upstream bytes ${[...new Set(r.s6.upstreamBytes.map((b) => num(b / r.s6!.size, 2)))].join(', ')}× the blob ` +
            '(link unpaced, so the upstream is faster than the clients).',
          '',
        );
      }
    } else L.push('Not measured in this run.', '');
  }
  if (r.s7) {
    L.push(`## 7. Start-up with ${r.s7.blobs.toLocaleString('en-US')} stored blobs`, '');
    L.push(
      table(
        ['', 'ms'],
        [
          ['process spawn → "stevedore listening"', mmm(r.s7.startupMs, 1, 0)],
          ['of which "store index rebuilt" (`ms`)', mmm(r.s7.indexMs, 1, 0)],
        ],
      ),
      '',
      'The blob files are small (~32 bytes each) in `blobs/sha256/<xx>/<hex>`; the same store is reused across runs, so directory entries and inodes are in the kernel\'s caches after the first run (the max is usually that first run).',
      '',
    );
  }
  if (r.s8) {
    const s8 = r.s8;
    const h = p.hangup;
    L.push(
      `## 8. Clients that hang up (wrk ${h.connections} connections, ${h.wrkDurationS} s × ${h.wrkRuns} in a row on a ${num(s8.wrkBlob / MiB, 2)} MiB blob; ` +
        `${h.rounds} round(s) of ${h.clients} clients resetting a ${num(s8.warmBlob / MiB, 2)} MiB blob; one round on a cold ${num(s8.coldBlob / MiB, 2)} MiB blob through each proxy)`,
      '',
    );
    const sRps = med(s8.contenders.stevedore?.rps);
    L.push(
      table(
        ['server', 'process survived', 'wrk req/s', 'req/s stevedore / this', 'wrk errors', 'clients hung up (at their byte)', 'open fds before → after', 'RSS MiB before → after', 'cold blob stored'],
        contenders(s8.contenders).map((n) => {
          const o = s8.contenders[n]!;
          const ok = o.survived.filter(Boolean).length;
          return [
            n,
            ok === o.survived.length ? 'yes' : `**no** (${o.survived.length - ok} of ${o.survived.length} runs: ${o.problems.join('; ')})`,
            mmm(o.rps),
            n === 'stevedore' ? '' : ratio(sRps, med(o.rps)),
            String(sum(o.wrkErrors)),
            `${sum(o.hangups).toLocaleString('en-US')} (${sum(o.cut).toLocaleString('en-US')})`,
            `${o.fdsBefore[0]} → ${o.fdsAfter.at(-1)}`,
            `${num(o.rssBefore[0]! / MiB, 1)} → ${num(o.rssAfter.at(-1)! / MiB, 1)}`,
            o.coldStored.length ? `${o.coldStored.filter(Boolean).length} of ${o.coldStored.length}` : '–',
          ];
        }),
      ),
      '',
      'Each contender in turn, warm, one set per run: open descriptors (`/proc/<pid>/fd`) and RSS, then wrk on the blob ' +
        `${h.wrkRuns} times in a row (each run ends by closing its ${h.connections} connections mid-body, as wrk does), then rounds of ${h.clients} raw clients at once, each ` +
        'GETting a warm blob and resetting the connection (TCP RST) at a random byte of the answer; through stevedore and distribution one more round on a blob pushed to ' +
        `the upstream just before, the link paced to ${num(h.coldLinkRate / MiB, 0)} MiB/s so that the clients leave while the proxy downloads it. After ${num(h.settleMs / 1000, 1)} s ` +
        'of quiet: descriptors and RSS again (first run\'s before → last run\'s after; nginx: its workers, summed), then the process must be alive, have logged no ' +
        'defect (else the benchmark fails) and answer (`GET /v2/` 200; nginx: `GET /` below 500). "cold blob stored": stevedore\'s store holds the cold blob afterwards, digest verified.',
      '',
    );
  }
  if (r.s9) {
    const s9 = r.s9;
    const c = p.cluster;
    L.push(
      `## 9. Cluster: ${s9.replicas} replicas, ${s9.clients} clients on a cold image (${num(s9.imageBytes / MiB, 1)} MiB: the image of scenario 5; ` +
        `upstream link ${num(s9.linkRate / MiB, 0)} MiB/s)`,
      '',
    );
    const direct = med(s9.modes.direct?.wallS);
    const label: Record<string, string> = {
      direct: 'one client, directly from the upstream',
      stevedore: `${s9.clients} clients over ${s9.replicas} stevedore replicas (one store, one Redis)`,
      distribution: `${s9.clients} clients over ${s9.replicas} distribution proxies (a store each)`,
    };
    const rows = ['direct', 'stevedore', 'distribution']
      .filter((k) => k in s9.modes)
      .map((k) => {
        const o = s9.modes[k]!;
        return [
          label[k]!,
          String(o.wallS.length),
          mmm(o.wallS),
          ratio(med(o.wallS), direct),
          o.warmWallS.length ? `${mmm(o.warmWallS)} (${ratio(med(o.warmWallS), direct)})` : '–',
          mmm(o.upstreamBytes, MiB, 1),
          // Four digits: the target is exactly 1, and a few extra manifest fetches are ~0.001×.
          multiple(o.upstreamBytes, s9.imageBytes, 4),
          mmm(o.upstreamRequests, 1, 0),
          o.rss.length ? mmm(o.rss, MiB, 1) : '–',
          o.rssEach.length ? o.rssEach.map((each) => each.map((x) => num(x / MiB, 0)).join(' / ')).join('; ') : '–',
        ];
      });
    L.push(table(['pull', 'runs', 'wall s', '× direct', 'warm re-pull s (× direct)', 'upstream MiB', 'upstream bytes / image', 'upstream requests', 'peak RSS MiB (largest process)', 'peak RSS MiB of each, per run'], rows), '');
    L.push(
      `Fresh processes and empty stores for every run (stevedore: a new shared store directory and a new redis-server too). All ${s9.clients} clients start together, ` +
        `client i on server i mod ${s9.replicas} (${s9.clients / s9.replicas} each); each GETs the manifest by tag, then config and layers, ${p.pull.layerConcurrency} at a time, bodies counted and checked against the manifest. ` +
        `The stevedore replicas run with the \`cluster.*\` defaults; one upstream fetch per digest across them is the point (a lease per digest in Redis, the other replicas' clients read the growing shared temp file). ` +
        `Each distribution proxy has its own storage and fetches what its own clients ask for. ` +
        `The distributions run ${c.peerRuns} time(s) (they move many times the image over the paced link), the direct pull and the cluster ${c.runs} time(s); ` +
        'peak RSS is VmHWM of each fresh process after the pull. ' +
        `"warm re-pull": right after each cluster run, the same ${s9.clients} clients pull again from the same replicas, everything now in the store: ` +
        'what handing out that many copies costs this machine (clients and servers share its cores), the floor under the cold wall time whatever the upstream does.',
      '',
    );
  }
  if (r.s10) {
    const s10 = r.s10;
    L.push(
      `## 10. Rollout: ${s10.nodes} node instances pull one image at the same moment (${num(s10.imageBytes / MiB, 1)} MiB: manifest, config, ${s10.layers} layers; ` +
        `one cold central stevedore; upstream link ${num(s10.linkRate / MiB, 0)} MiB/s)`,
      '',
    );
    const label: Record<string, string> = {
      peers: `with peers: ${s10.nodes} nodes → each other / central (one Redis)`,
      central: `without peers: ${s10.nodes} nodes → central`,
    };
    const rows = ['peers', 'central']
      .filter((k) => k in s10.modes)
      .map((k) => {
        const o = s10.modes[k]!;
        const cut = o.hangupCut.filter(Boolean).length;
        const answered = o.hangupAnswered.filter(Boolean).length;
        return [
          label[k]!,
          String(o.wallS.length),
          mmm(o.wallS),
          mmm(o.centralBytes, MiB, 1),
          // Four digits: the heads of a few dozen answers are ~0.0001× of the image.
          multiple(o.centralBytes, s10.imageBytes, 4),
          mmm(o.centralRequests, 1, 0),
          mmm(o.peerBytes, MiB, 1),
          multiple(o.upstreamBytes, s10.imageBytes, 4),
          mmm(o.rssNode, MiB, 1),
          mmm(o.rssCentral, MiB, 1),
          `${cut} of ${o.hangupCut.length} / ${answered} of ${o.hangupAnswered.length}`,
        ];
      });
    L.push(
      table(
        [
          'rollout',
          'runs',
          'wall s (last node has the image)',
          'central served MiB',
          'central bytes / image',
          'central requests',
          'nodes served each other MiB',
          'upstream bytes / image',
          'peak RSS MiB, busiest node',
          'peak RSS MiB, central',
          'client that hung up: cut mid-layer / node answers after',
        ],
        rows,
      ),
      '',
    );
    const wp = med(s10.modes.peers?.wallS);
    const wc = med(s10.modes.central?.wallS);
    L.push(
      `Fresh processes and empty stores for every run and mode: one central stevedore (cold: it fetches the image from the upstream during the rollout, over the paced link), ` +
        `${s10.nodes} node instances (node mode, \`node.central\` → the central one, the upstream itself last; with peers also \`node.peers\` and \`metadata.redis\`, the \`node.peers.*\` defaults) ` +
        `and, with peers, one redis-server. The nodes start one after the other; then one client per node, all at once, GETs the manifest by tag and config and layers ` +
        `${p.pull.layerConcurrency} at a time, hashing every blob against its digest. Wall time: from the start until the last client has the whole image ` +
        `(with peers ÷ without: ${ratio(wp, wc)}). "central served": every byte the central stevedore sent the nodes, counted on the wire by a TCP meter in front of it (bench/lib/meter.ts: ` +
        `HTTP heads included, a transfer cut short counts what it sent), as a multiple of the image; "central requests": its access log; "nodes served each other": ` +
        `the nodes' access logs for \`/_stevedore/peer/\` (answers cut short count 0 there). In every run one more client, on node (run mod ${s10.nodes}) + 1, ` +
        `GETs the manifest, then the largest layer, and resets the connection (TCP RST) at a random byte of it (\`HANGUP_SEED\` repeats the cut points); ` +
        'that node must answer `GET /v2/` afterwards, and every process (nodes, central, Redis) must not die or log a defect, else the benchmark fails. ' +
        'Peak RSS is VmHWM of each fresh process after the rollout.',
      '',
    );
  }
  if (r.s11) renderS11(L, r.s11);
  if (r.s12) renderS12(L, r.s12);
  return L.join('\n');
}

const S12_LABEL: Record<string, string> = { baseline: 'before (--baseline)', current: 'after (this checkout)' };

/** after / before, when both are finite and of one sign (a ratio of a negative and a positive time says nothing). */
function s12Ratio(after: number, before: number): string {
  if (!Number.isFinite(after) || !Number.isFinite(before) || before === 0 || Math.sign(after) !== Math.sign(before)) return '–';
  return `${num(after / before, 2)}×`;
}

function signed(x: number, digits: number): string {
  return Number.isFinite(x) ? `${x > 0 ? '+' : ''}${num(x, digits)}` : 'n/a';
}

function renderS12(L: string[], s12: NonNullable<Results['s12']>): void {
  const keys = ['baseline', 'current'].filter((k) => k in s12.builds);
  const both = keys.length === 2;
  const b = s12.builds.baseline;
  const a = s12.builds.current;
  L.push(
    `## 12. Cluster on the S3 backend: ${s12.clients} clients over ${s12.replicas} replicas on a cold ${num(s12.blobBytes / MiB, 0)} MiB blob ` +
      `(one RADOS gateway, one Redis; upstream link ${num(s12.linkRate / MiB, 0)} MiB/s)` +
      (both ? ', before and after' : ''),
    '',
  );
  L.push(keys.map((k) => `- *${S12_LABEL[k]}*: git ${s12.builds[k]!.git}, from \`${s12.builds[k]!.dir}\``).join('\n'), '');
  type Key = Exclude<keyof NonNullable<Results['s12']>['builds'][string], 'git' | 'dir' | 'replicas' | 'stored'>;
  const rows: Array<[string, Key, number, number]> = [
    // label, series, scale, digits
    ['wall s: clients start → every client has the whole blob', 'wallS', 1, 2],
    ['upstream download s (request → last byte out of the link)', 'downloadS', 1, 2],
    ["followers' first byte, median over clients, s after the download's end", 'followerTtfbMed', 1, 2],
    ["followers' first byte, max over clients, s after the download's end", 'followerTtfbMax', 1, 2],
    ["followers' first byte, median over clients, s after their request", 'followerTtfbAbsMed', 1, 2],
    ["followers done, median over clients, s after the download's end", 'followerDoneMed', 1, 2],
    ["followers done, max over clients, s after the download's end", 'followerDoneMax', 1, 2],
    ["holder's clients done, median, s after the download's end", 'holderDoneMed', 1, 2],
    ['upstream GETs', 'upstreamGets', 1, 0],
    ['peak RSS MiB, the holder', 'rssHolder', MiB, 1],
    ['peak RSS MiB, the larger follower', 'rssFollower', MiB, 1],
    ['CPU s, the holder', 'cpuHolder', 1, 2],
    ['CPU s, a follower (median of the two)', 'cpuFollower', 1, 2],
    ['CPU s, the three replicas', 'cpuTotal', 1, 2],
  ];
  const cell = (o: NonNullable<typeof a> | undefined, k: Key, scale: number, digits: number): string => {
    const xs = o?.[k] ?? [];
    const sm = summarize(xs.map((v) => v / scale));
    if (sm.n === 0) return 'n/a';
    return sm.n === 1 ? num(sm.median, digits) : `${num(sm.median, digits)} (${num(sm.min, digits)} – ${num(sm.max, digits)})`;
  };
  const head = both ? ['measure (median of runs; min – max)', S12_LABEL.baseline!, S12_LABEL.current!, 'after / before', 'after − before'] : ['measure (median of runs; min – max)', S12_LABEL[keys[0]!]!];
  L.push(
    table(
      head,
      rows.map(([label, k, scale, digits]) => {
        if (!both) return [label, cell(s12.builds[keys[0]!], k, scale, digits)];
        const mb = med(b![k]) / scale;
        const ma = med(a![k]) / scale;
        return [label, cell(b, k, scale, digits), cell(a, k, scale, digits), s12Ratio(ma, mb), signed(ma - mb, digits)];
      }),
    ),
    '',
  );
  const perReplica = keys
    .map((k) => {
      const o = s12.builds[k]!;
      return `${S12_LABEL[k]}: ${o.replicas.map((run, i) => `run ${i + 1}: ${run.map((x) => `${x.id}${x.holder ? ' (holder)' : ''} ${num(x.rss / MiB, 1)} MiB, ${num(x.cpuS, 2)} CPU-s`).join(', ')}`).join('; ')}`;
    })
    .join('. ');
  L.push(`Each replica's peak RSS and CPU-seconds, per run — ${perReplica}.`, '');
  const takeovers = keys.filter((k) => s12.builds[k]!.holders.some((x) => x > 1));
  if (takeovers.length) L.push(`**A lease changed hands** (two replicas logged holding the blob) in a run of ${takeovers.map((k) => S12_LABEL[k]).join(' and ')}.`, '');
  L.push(
    'Setup: one RADOS gateway (test/fixtures/ceph.ts, one OSD on memstore), a fresh bucket, a fresh `redis-server` and three fresh stevedore processes for every run, ' +
      'each with `storage.backend: s3` on the bucket, its own empty local `storage.path`, `metadata.redis`, and `cluster.replicaId`, `cluster.advertise` (its own URL) and `cluster.token` ' +
      '(as test/e2e/s3-cluster.test.ts; other `cluster.*` and `storage.s3.*` at their defaults), in front of the upstream registry through the link, paced during the run. ' +
      `All ${s12.clients} clients (undici, one connection each, in the client process) GET the blob at the same moment, client i on replica i mod ${s12.replicas}; every body is hashed as it arrives ` +
      'and must be 200, whole and of the blob\'s digest (else the benchmark fails). The holder is the replica that logged holding the blob\'s lease; the followers are the clients of the other two ' +
      '(they stream from the holder while it downloads). Times relative to the end of the upstream download (the link handed its last byte to the socket; negative: before) compare clocks of ' +
      'the client process and the orchestrator (both `performance.timeOrigin + performance.now()`). CPU: utime + stime of each replica (/proc/<pid>/stat) from the clients\' start until the blob is an ' +
      'object of the bucket (the holder\'s last parts and the completion included); peak RSS: VmHWM of each fresh process. ' +
      `One discarded warm-up run of each build, then ${s12.runs} run(s) of each, interleaved (each run rotates which build goes first).` +
      (both ? ' after / before: the ratio of the medians ("–" when the two have different signs); after − before: their difference.' : ''),
    '',
  );
}

function renderS11(L: string[], s11: NonNullable<Results['s11']>): void {
  const order = ['stevedore-s3', 'stevedore-fs', 'distribution-s3', 'nginx'];
  const names = (rec: Record<string, unknown>): string[] => order.filter((k) => k in rec);
  const sd = 'stevedore-s3';
  const over = (rec: Record<string, { [k: string]: Series }>, key: string, name: string, invert = false): string => {
    if (name === sd || !rec[sd]) return '';
    const a = med(rec[sd][key]);
    const b = med(rec[name]![key]);
    return invert ? ratio(b, a) : ratio(a, b);
  };
  L.push(
    `## 11. The S3 backend: one Ceph RADOS gateway on 127.0.0.1 ((a) a warm ${num(s11.bigBlob / MiB, 0)} MiB blob, one client; ` +
      `(b) ${s11.smallBlobs} warm ${num(s11.smallSize / MiB, 2)} MiB blobs, ${s11.clients} concurrent clients)`,
    '',
  );
  if (!s11.s3Backend) L.push('**stevedore-s3 was not run** (`--s11-no-s3-backend`): the figures below have no S3 backend of stevedore in them.', '');
  L.push(
    table(
      ['(a) one client', 'MiB/s', 'stevedore-s3 / this', 'peak RSS MiB'],
      names(s11.single).map((n) => [n, mmm(s11.single[n]!.mibps), over(s11.single, 'mibps', n), mmm(s11.single[n]!.rss, MiB, 1)]),
    ),
    '',
  );
  L.push(
    table(
      [`(b) ${s11.clients} clients`, 'req/s', 'MiB/s', 'p50 ms', 'p99 ms', 'req/s stevedore-s3 / this', 'p99 this / stevedore-s3', 'peak RSS MiB'],
      names(s11.many).map((n) => {
        const o = s11.many[n]!;
        return [n, mmm(o.rps), mmm(o.mibps), mmm(o.p50), mmm(o.p99), over(s11.many, 'rps', n), over(s11.many, 'p99', n, true), mmm(o.rss, MiB, 1)];
      }),
    ),
    '',
  );
  const a = (n: string): number => med(s11.single[n]?.mibps);
  const b = (n: string): number => med(s11.many[n]?.rps);
  L.push(
    `**Ratios** (medians of one run of the benchmark): stevedore-s3 / stevedore-fs ${ratio(a(sd), a('stevedore-fs'))} (a), ${ratio(b(sd), b('stevedore-fs'))} (b); ` +
      `stevedore-s3 / distribution-s3 ${ratio(a(sd), a('distribution-s3'))} (a), ${ratio(b(sd), b('distribution-s3'))} (b); stevedore-s3 / nginx ${ratio(a(sd), a('nginx'))} (a).`,
    '',
  );
  const h = s11.hangup;
  if (h) {
    L.push(
      `**Hang-ups on stevedore-s3**: ${h.clients} raw clients at once GET the warm ${num(s11.bigBlob / MiB, 0)} MiB blob and reset the connection (TCP RST) at a random byte ` +
        `(${h.cut} cut at their byte; \`HANGUP_SEED\` repeats the cut points). Afterwards: ${h.answered ? '`GET /v2/` 200' : `**${h.problem}**`}; ` +
        `${h.servesAfter ? 'a small blob and the big blob served whole' : `**${h.servesProblem ?? 'not checked'}**`}; open fds ${h.fdsBefore} → ${h.fdsAfter}, ` +
        `RSS ${num(h.rssBefore / MiB, 1)} → ${num(h.rssAfter / MiB, 1)} MiB (peak ${num(h.peakRss / MiB, 1)} MiB during the round).`,
      '',
    );
  }
  const buckets = Object.entries(s11.buckets);
  L.push(
    'Setup: one RADOS gateway (test/fixtures/ceph.ts: a monitor, one OSD on memstore, radosgw with beast), a bucket per S3 contender. ' +
      '*stevedore-fs*: the default filesystem backend; *stevedore-s3*: `storage.backend: s3` on its bucket (`forcePathStyle`, static keys; `storage.path` only its local working space); ' +
      '*distribution-s3*: `docker-registry` in proxy mode with its `s3` driver (`regionendpoint` → path-style addressing, `v4auth`, `secure: false`) and `redirect.disable: true`, ' +
      'so that it streams blobs itself as stevedore does, instead of answering 307 to a pre-signed URL; *nginx*: sendfile from stevedore-fs\'s store files (the limit, not S3). ' +
      'Warm: every blob was pulled once through each proxy first, and, for the S3 contenders, ListObjectsV2 showed every blob as an object of its bucket (key naming the digest, of its size)' +
      (buckets.length ? ` — ${buckets.map(([n, o]) => `${n}: ${o.objects} objects, ${num(o.bytes / MiB, 1)} MiB in \`${o.bucket}\`, e.g. \`${o.example}\``).join('; ')}` : '') +
      (s11.workBytes === null ? '' : `; stevedore-s3's local \`storage.path\` (working space) then held ${num(s11.workBytes / MiB, 1)} MiB of files (the spool files of the blobs just committed, kept 30 s for followers; it reads blobs from the bucket), ${s11.workBytesEnd === null ? 'n/a' : num(s11.workBytesEnd / MiB, 1)} MiB at the end of the scenario`) +
      `. Raw HTTP client, one connection per concurrent request; (a): ${s11.bigRepeat} GET(s) in a row per run, throughput is bytes over the time from the first request to the last byte; ` +
      `(b): ${s11.smallGets} GETs per run, shuffled, latency request sent → last body byte. Peak RSS: VmHWM reset before each run, sampled every 50 ms. ` +
      'One warm-up run per contender, then interleaved runs (each run rotates which goes first). The gateway, its OSD and the clients share the machine\'s cores with the proxy measured.',
    '',
  );
}
