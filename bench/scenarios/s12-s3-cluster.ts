/**
 * Scenario 12 (not in the default run: --only s12): cluster mode on the S3 backend. Three replicas
 * on one bucket of a RADOS gateway and one redis-server, 30 clients on one cold blob; with
 * --baseline DIR, the same against another build, interleaved: what followers verifying costs.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { CreateBucketCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { parseSize } from '../../lib/config/units.js';
import { startRgw, type Rgw } from '../../test/fixtures/ceph.js';
import { freePort, removeDir, tmpDir, waitFor } from '../../test/fixtures/util.js';
import { emptyAndDeleteBucket } from '../lib/buckets.js';
import { contentBlob, type BlobSpec } from '../lib/data.js';
import { MiB, type Params } from '../lib/params.js';
import { cpuSecondsOf, largestHwm } from '../lib/proc.js';
import { pushGenerated } from '../lib/registry-api.js';
import { gitVersion, med, num, rssTarget, table, type PeakRssRow, type Series, type Target } from '../lib/report.js';
import { blobPath, defineScenario, log, wholeOption, type Ctx, type OptionValues } from '../lib/scenario.js';
import { buildStevedore, ROOT, ServerFailure, startRedis, startStevedore, stopEach, type RedisServer, type StevedoreBuild, type StevedoreServer } from '../lib/servers.js';
import { median, rotate, summarize } from '../lib/stats.js';

/**
 * Per build ('baseline': `--baseline DIR`; 'current': this checkout) one entry per measured run.
 * Seconds; follower* and holderDone* relative to the end of the upstream download (negative:
 * before it ended), followerTtfbAbs* from the client's request; *Med / *Max: median / max over
 * the run's clients. rss… and cpu…: the holder, and the followers (RSS: the larger, each replica's
 * largest process; CPU: the median of them, each replica's processes summed); replicas: every replica, holder first. stored: the blob was an object of the
 * bucket afterwards.
 */
export interface S12Result {
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
}

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

async function s12Once(ctx: Ctx, b: S12Build, rgw: Rgw, s3: S3Client, blob: BlobSpec, bucket: string): Promise<S12Run> {
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
    const cpu0 = started.map((s) => cpuSecondsOf(s.pids()));
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
    const cpu1 = started.map((s) => cpuSecondsOf(s.pids()));
    // A replica's largest process (with workers, a worker: the per-worker peak), as scenario 9.
    const rss = started.map((s) => largestHwm(s.pids()));
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

const S12_LABEL: Record<string, string> = { baseline: 'before (--baseline)', current: 'after (this checkout)' };

/** after / before, when both are finite and of one sign (a ratio of a negative and a positive time says nothing). */
function s12Ratio(after: number, before: number): string {
  if (!Number.isFinite(after) || !Number.isFinite(before) || before === 0 || Math.sign(after) !== Math.sign(before)) return '–';
  return `${num(after / before, 2)}×`;
}

function signed(x: number, digits: number): string {
  return Number.isFinite(x) ? `${x > 0 ? '+' : ''}${num(x, digits)}` : 'n/a';
}

function section(s12: S12Result): string[] {
  const L: string[] = [];
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
  type Key = Exclude<keyof S12Result['builds'][string], 'git' | 'dir' | 'replicas' | 'stored'>;
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
  return L;
}

export default defineScenario<S12Result>({
  id: 's12',
  title: 'Cluster mode on the S3 backend, before and after',
  // Needs Ceph, as scenario 11: --only s12.
  inDefaultRun: false,
  seeded: false,
  options: { baseline: { type: 'string' }, 's12-runs': { type: 'string' }, 's12-size': { type: 'string' } },
  applyOptions(values: OptionValues, p: Params): void {
    p.s12.runs = wholeOption(values, 's12-runs', 1) ?? p.s12.runs;
    const size = values['s12-size'];
    if (typeof size === 'string') {
      const n = parseSize(size);
      if (n === null || n < 1) throw new Error(`--s12-size: a size such as 32MiB, not ${size}`);
      p.s12.blobBytes = n;
    }
  },
  async run(ctx) {
    const baseline = ctx.values.baseline;
    const baselineDir = typeof baseline === 'string' ? baseline : null;
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
    const out: S12Result = { blobBytes: blob.size, clients: q.clients, replicas: q.replicas, linkRate: q.linkRate, runs: q.runs, builds: {} };
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
      return out;
    } finally {
      s3?.destroy();
      for (const fn of teardowns.reverse()) await Promise.resolve(fn()).catch((err: unknown) => log(`s12 cleanup: ${String(err)}`));
    }
  },
  report: {
    section,
    targets(s12): Target[] {
      const out: Target[] = [];
      const label = `12. S3 cluster, ${s12.clients} clients over ${s12.replicas} replicas on a cold ${num(s12.blobBytes / MiB, 0)} MiB blob`;
      for (const [key, o] of Object.entries(s12.builds)) {
        const who = `${S12_LABEL[key] ?? key} (git ${o.git})`;
        out.push({
          target: `${label}, ${who}: one upstream GET per run`,
          measured: `${o.upstreamGets.join(', ')} (${o.upstreamGets.length === 1 ? 'one run' : 'each run'})`,
          met: o.upstreamGets.length ? o.upstreamGets.every((x) => x === 1) : null,
          group: 'backend',
        });
        out.push({ target: `${label}, ${who}: the blob is an object of the bucket afterwards`, measured: `${o.stored.filter(Boolean).length} of ${o.stored.length} run(s)`, met: o.stored.every(Boolean), group: 'backend' });
        out.push(...rssTarget(`scenario 12 (S3 cluster, ${who}; largest of ${s12.replicas} replicas)`, o.rssHolder.map((x, i) => Math.max(x, o.rssFollower[i]!)), 'backend'));
      }
      return out;
    },
    peakRss(s12): PeakRssRow[] {
      const rows: PeakRssRow[] = [];
      for (const [key, o] of Object.entries(s12.builds)) {
        const label = `12. S3 cluster, ${s12.clients} clients on a cold ${num(s12.blobBytes / MiB, 0)} MiB blob, ${S12_LABEL[key] ?? key}`;
        if (o.rssHolder.length) rows.push({ during: label, process: 'stevedore (the holder)', values: o.rssHolder, late: true });
        if (o.rssFollower.length) rows.push({ during: label, process: 'stevedore (the larger follower)', values: o.rssFollower, late: true });
      }
      return rows;
    },
  },
});
