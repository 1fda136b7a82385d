/**
 * Scenario 9: cluster mode. Three stevedore replicas on one store directory and one redis-server,
 * 60 clients on scenario 5's cold image over the paced link, client i on replica i mod 3; beside
 * three independent distribution proxies spread the same way, and one direct pull.
 */
import { removeDir, tmpDir } from '../../test/fixtures/util.js';
import { MANIFEST_ACCEPT } from '../lib/data.js';
import { largestHwm } from '../lib/proc.js';
import { med, MiB, mmm, multiple, num, ratio, rssTarget, table, type PeakRssRow, type Series, type Target } from '../lib/report.js';
import { type Params } from '../lib/params.js';
import { check, defineScenario, log, REPO_PULL, wholeOption, type OptionValues } from '../lib/scenario.js';
import { startDistribution, startRedis, startStevedore, stopEach, type RedisServer, type Server, type StevedoreServer } from '../lib/servers.js';
import { rotate } from '../lib/stats.js';

/**
 * Modes direct (one client), stevedore (replicas on one store and Redis), distribution (as many
 * independent proxies). rss: per run the largest peak of the processes; rssEach: every one's.
 * warmWallS (stevedore): the same pull again right after, everything in the store.
 */
export interface S9Result {
  imageBytes: number;
  linkRate: number;
  clients: number;
  replicas: number;
  modes: Record<string, { wallS: Series; warmWallS: Series; upstreamBytes: Series; upstreamRequests: Series; rss: Series; rssEach: Series[] }>;
}

export default defineScenario<S9Result>({
  id: 's9',
  title: 'Cluster: replicas on one store, many clients on a cold image',
  inDefaultRun: true,
  seeded: true,
  // --s9-runs N: the cluster (and the direct pull) N times instead of 3; --s9-peer-runs N: the
  // distributions N times (0: not at all), for a quicker look at the replicas alone.
  options: { 's9-runs': { type: 'string' }, 's9-peer-runs': { type: 'string' } },
  applyOptions(values: OptionValues, p: Params): void {
    p.cluster.runs = wholeOption(values, 's9-runs', 1) ?? p.cluster.runs;
    p.cluster.peerRuns = wholeOption(values, 's9-peer-runs', 0) ?? p.cluster.peerRuns;
  },
  async run(ctx) {
    const { replicas, clients, runs, peerRuns } = ctx.p.cluster;
    const { layerConcurrency, linkRate } = ctx.p.pull;
    const img = ctx.pullImg;
    log(
      `s9: cold pull of a ${img.totalBytes}-byte image (${img.layers.length} layers) by ${clients} clients spread over ${replicas} stevedore replicas ` +
        `(one store, one redis-server) and over ${replicas} distribution proxies; upstream link paced to ${linkRate} B/s`,
    );
    const out: S9Result = { imageBytes: img.totalBytes, linkRate, clients, replicas, modes: {} };
    const pull = async (origins: string[], n: number, servers: Server[]): Promise<{ repeated: string[]; wallS: number; upstreamBytes: number; upstreamRequests: number; rss: number[] }> => {
      ctx.upstream.resetCounts();
      ctx.upstream.setRate(linkRate);
      try {
        const r = await check('s9 pull', ctx.client.pull({ origin: origins[0]!, origins, repo: REPO_PULL, tag: 'v1', clients: n, layerConcurrency, accept: MANIFEST_ACCEPT }));
        if (r.bytes !== img.totalBytes * n) throw new Error(`s9: clients got ${r.bytes} bytes, expected ${img.totalBytes * n}`);
        // Fresh processes: VmHWM is the peak since start; with workers, a server's largest process
        // (a worker, not the supervisor that only forks and watches them).
        const rss = servers.map((s) => largestHwm(s.pids()));
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
              started,
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
              started,
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
    return out;
  },
  report: {
    section(s9, { p }) {
      const L: string[] = [];
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
          'peak RSS is VmHWM of each fresh process after the pull (with workers: a server’s largest process). ' +
          `"warm re-pull": right after each cluster run, the same ${s9.clients} clients pull again from the same replicas, everything now in the store: ` +
          'what handing out that many copies costs this machine (clients and servers share its cores), the floor under the cold wall time whatever the upstream does.',
        '',
      );
      return L;
    },
    targets(s9): Target[] {
      const out: Target[] = [];
      const sd = s9.modes.stevedore;
      const direct = s9.modes.direct;
      const ratios = (sd?.upstreamBytes ?? []).map((b) => b / s9.imageBytes);
      const label = `9. cluster, ${s9.clients} clients over ${s9.replicas} replicas`;
      out.push({
        target: `${label}: upstream bytes exactly 1.00× the image`,
        measured: ratios.length
          ? `${[...new Set(ratios.map((x) => num(x, 4)))].join(', ')}× (every run)` +
            (ratios.some((x) => x !== 1) ? `; extra bytes per run: ${(sd?.upstreamBytes ?? []).map((b) => (b - s9.imageBytes).toLocaleString('en-US')).join(', ')}` : '')
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
      return [...out, ...rssTarget(`scenario 9 (cluster, ${s9.clients} clients; largest of ${s9.replicas} replicas)`, s9.modes.stevedore?.rss)];
    },
    peakRss(s9): PeakRssRow[] {
      const rows: PeakRssRow[] = [];
      for (const [n, label] of [
        ['stevedore', 'stevedore (largest replica)'],
        ['distribution', 'distribution (largest of them)'],
      ] as const) {
        const o = s9.modes[n];
        if (o?.rss.length) rows.push({ during: `9. cluster, ${s9.clients} clients over ${s9.replicas} processes`, process: label, values: o.rss });
      }
      return rows;
    },
  },
});
