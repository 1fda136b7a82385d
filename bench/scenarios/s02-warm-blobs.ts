/** Scenario 2: warm blobs of 1–32 MiB, 64 concurrent clients (raw HTTP client and undici, alternating), every warm contender. */
import { PeakRss } from '../lib/proc.js';
import { contenders, ge, largestRow, med, MiB, mmm, num, ratio, rssTarget, table, vs, type Series, type Target } from '../lib/report.js';
import { blobPath, check, defineScenario, log, REPO_BLOBS, sideBySide, warmServers } from '../lib/scenario.js';
import { percentile, rotate, shuffled } from '../lib/stats.js';

/** Per contender, each run's aggregate MiB/s and latency percentiles with each client, and its peak RSS. */
export type S2Result = Record<string, { mibps: Series; p50: Series; p99: Series; undici: Series; undiciP50: Series; undiciP99: Series; rss: Series; rssLargest?: Series }>;

export default defineScenario<S2Result>({
  id: 's2',
  title: 'Warm blobs, many concurrent clients',
  inDefaultRun: true,
  seeded: true,
  async run(ctx) {
    const w = await warmServers(ctx);
    const { clients, repeat } = ctx.p.s2;
    const all = ctx.s2blobs.flatMap((b) => Array.from({ length: repeat }, () => blobPath(REPO_BLOBS, b.digest)));
    log(
      `s2: ${all.length} GETs of warm blobs (${ctx.s2blobs.length} blobs, ${ctx.p.s2.sizes[0]}..${ctx.p.s2.sizes.at(-1)} bytes), ` +
        `${clients} concurrent clients (raw HTTP client and undici, alternating)`,
    );
    const out: S2Result = {};
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
        const rss = peak.stop();
        return { raw: got.raw!, undici: got.undici!, rss, rssLargest: peak.largest() };
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
        (o.rssLargest ??= []).push(r.rssLargest);
      },
      true,
    );
    return out;
  },
  report: {
    section(s2, { p }) {
      const sz = p.s2.sizes;
      return [
        `## 2. Warm blobs, ${p.s2.clients} concurrent clients (${sz.length} blobs of ${num(sz[0]! / MiB, 2)}–${num(sz.at(-1)! / MiB, 0)} MiB, ` +
          `${sz.length * p.s2.repeat} GETs per run with each client)`,
        '',
        table(
          ['server', 'aggregate MiB/s', 'p50 ms', 'p99 ms', 'MiB/s stevedore / this', 'p99 this / stevedore', 'undici: MiB/s', 'undici: p50 ms', 'undici: p99 ms', 'peak RSS MiB'],
          contenders(s2).map((n) => [
            n,
            mmm(s2[n]!.mibps),
            mmm(s2[n]!.p50),
            mmm(s2[n]!.p99),
            vs(s2, 'mibps', n),
            vs(s2, 'p99', n, true),
            mmm(s2[n]!.undici),
            mmm(s2[n]!.undiciP50),
            mmm(s2[n]!.undiciP99),
            mmm(s2[n]!.rss, MiB, 1),
          ]),
        ),
        '',
        'Each run makes the same shuffled list of GETs with the raw HTTP client and with undici (alternating which goes first), one connection per client. ' +
          'Latency: request sent → last body byte, per GET (sizes differ, so p50/p99 mix sizes). Peak RSS covers both.',
        '',
      ];
    },
    targets(s2, { p }): Target[] {
      const s = med(s2.stevedore?.mibps);
      const d = med(s2.distribution?.mibps);
      const n = med(s2.nginx?.mibps);
      return [
        { target: `2. warm blobs, ${p.s2.clients} clients: throughput ≥ 1.0× distribution`, measured: ratio(s, d), met: ge(s, d, 1.0) },
        { target: `2. warm blobs, ${p.s2.clients} clients: throughput ≥ 0.8× nginx`, measured: ratio(s, n), met: ge(s, n, 0.8) },
        ...rssTarget(`scenario 2 (${p.s2.clients} clients, warm blobs)`, s2.stevedore?.rss),
      ];
    },
    peakRss: (s2, { p }) => [
      ...contenders(s2).map((n) => ({ during: `2. warm blobs, ${p.s2.clients} clients`, process: n === 'nginx' ? 'nginx (workers, summed)' : n, values: s2[n]!.rss })),
      ...largestRow(`2. warm blobs, ${p.s2.clients} clients`, s2.stevedore),
    ],
  },
});
