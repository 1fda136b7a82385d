/**
 * Scenario 11 (not in the default run: --only s11): the S3 backend on one Ceph RADOS gateway.
 * stevedore on the filesystem, stevedore on S3, distribution on its s3 driver (and nginx) on one
 * warm big blob and on many warm small ones; then clients hang up on stevedore-s3.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { request } from 'undici';
import { startRgw, type Rgw } from '../../test/fixtures/ceph.js';
import { removeDir, tmpDir, waitFor } from '../../test/fixtures/util.js';
import { listBucket } from '../lib/buckets.js';
import { contentBlob } from '../lib/data.js';
import { answerProblem, fdsOf, hangupRound, rssOf } from '../lib/hangups.js';
import { MiB } from '../lib/params.js';
import { cpuSecondsOf, PeakRss } from '../lib/proc.js';
import { pushGenerated } from '../lib/registry-api.js';
import { gitVersion, med, mmm, num, ratio, rssTarget, table, type PeakRssRow, type Series, type Target } from '../lib/report.js';
import { blobPath, check, defineScenario, hangupSeed, log, sideBySide } from '../lib/scenario.js';
import { assertAlive, buildStevedore, ServerFailure, startDistribution, startNginx, startStevedore, stopEach, type Server, type StevedoreServer } from '../lib/servers.js';
import { median, percentile, prng, shuffled } from '../lib/stats.js';

const REPO_S3 = 'bench/s3';

const S3_BUCKET_STEVEDORE = 'stevedore-bench';
const S3_BUCKET_DISTRIBUTION = 'distribution-bench';
const S3_BUCKET_BEFORE = 'stevedore-bench-before';
const S3_NAMES = { fs: 'stevedore-fs', s3: 'stevedore-s3', before: 'stevedore-s3-before', dist: 'distribution-s3', nginx: 'nginx' } as const;

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

/**
 * Contenders stevedore-fs, stevedore-s3 (unless s3Backend is false), distribution-s3, nginx.
 * single: part a (one client, the big blob; rss: peak per run); many: part b (`clients`
 * concurrent, the small blobs). buckets: what each S3 contender's bucket held after the warm-up.
 * hangup: clients resetting the big blob on stevedore-s3.
 */
export interface S11Result {
  bigBlob: number;
  bigRepeat: number;
  smallSize: number;
  smallBlobs: number;
  smallGets: number;
  clients: number;
  s3Backend: boolean;
  /** `--baseline DIR`: stevedore-s3-before, the S3 backend built from that checkout (its git version); null: not run. */
  baseline: string | null;
  /** Part (b) was skipped (--s11-skip-many). */
  skippedMany: boolean;
  buckets: Record<string, { bucket: string; objects: number; bytes: number; example: string }>;
  /** Bytes of files in stevedore-s3's `storage.path` (working space only) after the warm-up; null: not run. */
  workBytes: number | null;
  /** The same at the end of the scenario (stevedore-s3 keeps a committed blob's spool file 30 s for followers). */
  workBytesEnd: number | null;
  /** cpu / gw: CPU ms per MiB served of the contender's processes, and of the RADOS gateway meanwhile (absent in older results). */
  single: Record<string, { mibps: Series; rss: Series; cpu?: Series; gw?: Series }>;
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
}

export default defineScenario<S11Result>({
  id: 's11',
  title: 'The S3 backend on a RADOS gateway',
  // Needs Ceph (ceph-mon, ceph-osd, radosgw) and ~0.6 GiB of RAM for its in-memory OSD: --only s11.
  inDefaultRun: false,
  seeded: false,
  // --baseline DIR (declared by s12, shared): stevedore-s3-before, the S3 backend of another checkout, side by side.
  options: { 's11-no-s3-backend': { type: 'boolean', default: false }, 's11-runs': { type: 'string' }, 's11-skip-many': { type: 'boolean', default: false }, 's11-s3': { type: 'string' }, 's11-before-s3': { type: 'string' } },
  async run(ctx) {
    const withS3Backend = !ctx.values['s11-no-s3-backend'];
    const skipMany = ctx.values['s11-skip-many'] === true;
    const q = { ...ctx.p.s3 };
    const runsOpt = ctx.values['s11-runs'];
    if (typeof runsOpt === 'string') q.runs = Number(runsOpt);
    // --s11-s3 / --s11-before-s3 '{"readPartSize":"16MiB"}': storage.s3 keys for stevedore-s3 / -before (a setting's A/B).
    const extraS3 = (flag: string): Record<string, unknown> => {
      const v = ctx.values[flag];
      if (typeof v !== 'string') return {};
      const o: unknown = JSON.parse(v);
      if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new Error(`--${flag}: a JSON object of storage.s3 keys`);
      log(`s11: --${flag} ${v}`);
      return o as Record<string, unknown>;
    };
    const s3Extra = extraS3('s11-s3');
    const beforeExtra = extraS3('s11-before-s3');
    const baselineOpt = ctx.values.baseline;
    let before: { build: Awaited<ReturnType<typeof buildStevedore>>; git: string } | null = null;
    if (typeof baselineOpt === 'string' && withS3Backend) {
      const dir = path.resolve(baselineOpt);
      const git = await gitVersion(dir);
      log(`s11: building the baseline (stevedore-s3-before) from ${dir} (git ${git})`);
      const build = await buildStevedore(dir);
      ctx.cleanups.push(() => removeDir(build.dir));
      before = { build, git };
    }
    const big = contentBlob('s11/big', q.bigBlob);
    const small = Array.from({ length: q.smallBlobs }, (_, i) => contentBlob(`s11/small/${i}`, q.smallSize));
    await pushGenerated(ctx.upstream.directUrl, REPO_S3, big);
    for (const b of small) await pushGenerated(ctx.upstream.directUrl, REPO_S3, b);
    const bigPath = blobPath(REPO_S3, big.digest);
    const smallPaths = small.map((b) => blobPath(REPO_S3, b.digest));
    const seed = hangupSeed();
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
      for (const b of [S3_BUCKET_STEVEDORE, S3_BUCKET_DISTRIBUTION, ...(before ? [S3_BUCKET_BEFORE] : [])]) await s3.send(new CreateBucketCommand({ Bucket: b }));

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
                ...s3Extra,
              },
            },
          },
        });
        started.push(sds3);
      }
      if (before) {
        const w = await tmpDir(undefined, 'stevedore-bench-s11-before-');
        teardowns.push(() => removeDir(w));
        started.push(
          await startStevedore({
            build: before.build,
            storage: w,
            upstreamUrl: ctx.upstream.url,
            nodeArgs: ctx.nodeArgs,
            name: S3_NAMES.before,
            config: {
              storage: {
                path: w,
                maxSize: null,
                backend: 's3',
                s3: { bucket: S3_BUCKET_BEFORE, prefix: '', endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey, ...beforeExtra },
              },
            },
          }),
        );
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
      const buckets: S11Result['buckets'] = {};
      const blobs = [big, ...small];
      for (const [name, bucket] of [...(sds3 ? [[S3_NAMES.s3, S3_BUCKET_STEVEDORE] as const] : []), ...(before ? [[S3_NAMES.before, S3_BUCKET_BEFORE] as const] : []), [S3_NAMES.dist, S3_BUCKET_DISTRIBUTION] as const]) {
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
      const out: S11Result = {
        bigBlob: big.size,
        bigRepeat: q.bigRepeat,
        smallSize: q.smallSize,
        smallBlobs: small.length,
        smallGets: small.length * q.smallRepeat,
        clients: q.clients,
        s3Backend: withS3Backend,
        baseline: before?.git ?? null,
        skippedMany: skipMany,
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
          const cpu0 = cpuSecondsOf(s.pids());
          const gw0 = cpuSecondsOf([gateway.pid!]);
          const r = await check(`s11 (a) ${name}`, ctx.client.fetch({ origin: s.url, paths: Array.from({ length: q.bigRepeat }, () => bigPath), concurrency: 1, engine: 'raw' }));
          const rss = peak.stop();
          if (r.bytes !== big.size * q.bigRepeat) throw new Error(`s11 (a) ${name}: ${r.bytes} of ${big.size * q.bigRepeat} bytes`);
          const mib = r.bytes / MiB;
          return { mibps: mib / (r.wallMs / 1000), rss, cpu: ((cpuSecondsOf(s.pids()) - cpu0) * 1000) / mib, gw: ((cpuSecondsOf([gateway.pid!]) - gw0) * 1000) / mib };
        },
        (name, r) => {
          const o = (out.single[name] ??= { mibps: [], rss: [], cpu: [], gw: [] });
          o.mibps.push(r.mibps);
          o.rss.push(r.rss);
          o.cpu?.push(r.cpu);
          o.gw?.push(r.gw);
        },
        true,
        q.runs,
      );
      log(`s11 (a): ${Object.entries(out.single).map(([n, o]) => `${n} ${median(o.mibps).toFixed(0)} MiB/s (peak RSS ${(Math.max(...o.rss) / MiB).toFixed(1)} MiB)`).join(', ')}`);
      await aliveAll();

      // (b) many clients, the warm small blobs.
      const many = smallPaths.flatMap((p) => Array.from({ length: q.smallRepeat }, () => p));
      if (!skipMany) await sideBySide(
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
      if (!skipMany) log(`s11 (b): ${Object.entries(out.many).map(([n, o]) => `${n} ${median(o.rps).toFixed(0)} req/s, p99 ${median(o.p99).toFixed(1)} ms`).join(', ')}`);
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
      return out;
    } finally {
      // stop() throws if a process died or logged a defect: that failure wins over anything else.
      try {
        await stopEach(started.reverse());
      } finally {
        s3?.destroy();
        for (const fn of teardowns.reverse()) await Promise.resolve(fn()).catch((err: unknown) => log(`s11 cleanup: ${String(err)}`));
      }
    }
  },
  report: {
    section(s11) {
      const L: string[] = [];
      const order = ['stevedore-s3', 'stevedore-s3-before', 'stevedore-fs', 'distribution-s3', 'nginx'];
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
      if (s11.baseline) L.push(`*stevedore-s3-before*: the same S3 backend built from the baseline checkout (\`--baseline\`, git ${s11.baseline}), on a bucket of its own, interleaved with the others.`, '');
      if (s11.skippedMany) L.push('Part (b) was not run (`--s11-skip-many`).', '');
      if (!s11.s3Backend) L.push('**stevedore-s3 was not run** (`--s11-no-s3-backend`): the figures below have no S3 backend of stevedore in them.', '');
      L.push(
        table(
          ['(a) one client', 'MiB/s', 'stevedore-s3 / this', 'peak RSS MiB', 'its CPU ms per MiB', 'the gateway\'s CPU ms per MiB'],
          names(s11.single).map((n) => {
            const o = s11.single[n]!;
            return [n, mmm(o.mibps), over(s11.single, 'mibps', n), mmm(o.rss, MiB, 1), o.cpu?.length ? mmm(o.cpu, 1, 2) : 'n/a', o.gw?.length ? mmm(o.gw, 1, 2) : 'n/a'];
          }),
        ),
        '',
      );
      if (!s11.skippedMany) L.push(
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
          `stevedore-s3 / distribution-s3 ${ratio(a(sd), a('distribution-s3'))} (a), ${ratio(b(sd), b('distribution-s3'))} (b); stevedore-s3 / nginx ${ratio(a(sd), a('nginx'))} (a)` +
          (s11.baseline ? `; stevedore-s3-before / distribution-s3 ${ratio(a('stevedore-s3-before'), a('distribution-s3'))} (a), ${ratio(b('stevedore-s3-before'), b('distribution-s3'))} (b); stevedore-s3 / stevedore-s3-before ${ratio(a(sd), a('stevedore-s3-before'))} (a).` : '.'),
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
      return L;
    },
    targets(s11): Target[] {
      const out: Target[] = [
        ...rssTarget(`scenario 11 (S3 backend: one client on a warm ${num(s11.bigBlob / MiB, 0)} MiB blob)`, s11.single['stevedore-s3']?.rss, 'backend'),
        ...rssTarget(`scenario 11 (S3 backend: ${s11.clients} clients on warm ${num(s11.smallSize / MiB, 2)} MiB blobs)`, s11.many['stevedore-s3']?.rss, 'backend'),
      ];
      const h = s11.hangup;
      if (h) {
        out.push({
          target: `11. stevedore-s3 survives ${h.clients} clients resetting the warm ${num(s11.bigBlob / MiB, 0)} MiB blob, then serves blobs whole`,
          measured: h.answered && h.servesAfter ? 'survived, answering, blobs whole' : `alive, but ${h.problem ?? h.servesProblem ?? '?'}`,
          met: h.answered && h.servesAfter,
          group: 'backend',
        });
        out.push({ target: '11. stevedore-s3 open fds back within +16 of before the hang-ups', measured: `${h.fdsBefore} → ${h.fdsAfter}`, met: h.fdsAfter - h.fdsBefore <= 16, group: 'backend' });
      } else if (!s11.s3Backend) {
        out.push({ target: '11. stevedore-s3 (the S3 backend): every figure', measured: 'not run (--s11-no-s3-backend)', met: null, group: 'backend' });
      }
      return out;
    },
    peakRss(s11): PeakRssRow[] {
      const rows: PeakRssRow[] = [];
      for (const [rec, label] of [
        [s11.single, `11. S3 backend: one client, a warm ${num(s11.bigBlob / MiB, 0)} MiB blob`],
        [s11.many, `11. S3 backend: ${s11.clients} clients, warm ${num(s11.smallSize / MiB, 2)} MiB blobs`],
      ] as const) {
        for (const n of ['stevedore-s3', 'stevedore-s3-before', 'stevedore-fs', 'distribution-s3']) {
          const o = rec[n];
          if (o?.rss.length) rows.push({ during: label, process: n, values: o.rss, late: true });
        }
      }
      return rows;
    },
  },
});
