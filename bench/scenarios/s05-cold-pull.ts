/** Scenario 5: a cold pull of a whole image by 20 clients over a paced upstream link: one direct pull, stevedore, distribution. */
import { removeDir, tmpDir } from '../../test/fixtures/util.js';
import { MANIFEST_ACCEPT } from '../lib/data.js';
import { hwms } from '../lib/proc.js';
import { largestRow, med, MiB, mmm, multiple, num, ratio, rssTarget, table, type Series, type Target } from '../lib/report.js';
import { check, defineScenario, log, REPO_PULL } from '../lib/scenario.js';
import { startDistribution, startStevedore } from '../lib/servers.js';
import { rotate } from '../lib/stats.js';

export interface S5Result {
  imageBytes: number;
  linkRate: number;
  clients: number;
  modes: Record<string, { wallS: Series; upstreamBytes: Series; upstreamRequests: Series; rss: Series; rssLargest?: Series }>;
}

export default defineScenario<S5Result>({
  id: 's5',
  title: 'Cold pull of a whole image by many clients',
  inDefaultRun: true,
  seeded: true,
  async run(ctx) {
    const { clients, layerConcurrency, linkRate } = ctx.p.pull;
    const img = ctx.pullImg;
    log(`s5: cold pull of a ${img.totalBytes}-byte image (${img.layers.length} layers) by ${clients} clients; upstream link paced to ${linkRate} B/s`);
    const out: S5Result = { imageBytes: img.totalBytes, linkRate, clients, modes: {} };
    const pull = async (origin: string, n: number, pids: (() => number[]) | null): Promise<{ wallS: number; upstreamBytes: number; upstreamRequests: number; rss: number | null; rssLargest: number | null }> => {
      ctx.upstream.resetCounts();
      ctx.upstream.setRate(linkRate);
      try {
        const r = await check('s5 pull', ctx.client.pull({ origin, repo: REPO_PULL, tag: 'v1', clients: n, layerConcurrency, accept: MANIFEST_ACCEPT }));
        if (r.bytes !== img.totalBytes * n) throw new Error(`s5: clients got ${r.bytes} bytes, expected ${img.totalBytes * n}`);
        // Each process's peak, read once: the host's is their sum, the per-worker one their largest.
        const peaks = pids === null ? [] : hwms(pids());
        const rss = peaks.length ? peaks.reduce((a, b) => a + b, 0) : null;
        const rssLargest = peaks.length ? Math.max(...peaks) : null;
        return { wallS: r.wallMs / 1000, upstreamBytes: ctx.upstream.bytes(), upstreamRequests: ctx.upstream.records().length, rss, rssLargest };
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
            r = await pull(s.url, clients, () => s.pids());
          } finally {
            // stop() throws if the process died or logged a defect: that failure wins over a failed pull.
            await s.stop().finally(() => removeDir(storage));
          }
        } else {
          const s = await startDistribution(ctx.upstream.url);
          try {
            r = await pull(s.url, clients, () => s.pids());
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
        if (r.rssLargest !== null) (o.rssLargest ??= []).push(r.rssLargest);
      }
    }
    return out;
  },
  report: {
    section(s5, { p }) {
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
      return [
        `## 5. Cold pull of a whole image by ${s5.clients} concurrent clients (${num(s5.imageBytes / MiB, 1)} MiB: manifest, config, ${p.pull.layers.length} layers; ` +
          `upstream link ${num(s5.linkRate / MiB, 0)} MiB/s)`,
        '',
        table(['pull', 'wall s', '× direct', 'upstream MiB', 'upstream bytes / image', 'upstream requests', 'peak RSS MiB'], rows),
        '',
        `Fresh stores (a new process and an empty store) for every run. Each client GETs the manifest by tag, then config and layers, ${p.pull.layerConcurrency} at a time (containerd's default); ` +
          'bytes received are checked against the manifest.',
        '',
      ];
    },
    targets(s5, { p }): Target[] {
      const sd = s5.modes.stevedore;
      const direct = s5.modes.direct;
      const ratios = (sd?.upstreamBytes ?? []).map((b) => b / s5.imageBytes);
      const exact = ratios.length > 0 && ratios.every((x) => x === 1);
      const w = med(sd?.wallS);
      const dw = med(direct?.wallS);
      return [
        {
          target: `5. cold pull by ${s5.clients} clients: upstream bytes exactly 1.00× the image`,
          measured: ratios.length ? `${[...new Set(ratios.map((x) => num(x, 4)))].join(', ')}× (every run)` : 'n/a',
          met: ratios.length ? exact : null,
        },
        { target: `5. cold pull by ${s5.clients} clients: wall time ≤ 1.2× one direct pull`, measured: ratio(w, dw), met: Number.isFinite(w) && Number.isFinite(dw) ? w <= 1.2 * dw : null },
        ...rssTarget(`scenario 5 (cold pull, ${p.pull.clients} clients)`, sd?.rss),
      ];
    },
    peakRss: (s5) =>
      [
        ...['stevedore', 'distribution'].filter((n) => s5.modes[n]).map((n) => ({ during: `5. cold pull, ${s5.clients} clients`, process: n, values: s5.modes[n]!.rss })),
        ...largestRow(`5. cold pull, ${s5.clients} clients`, s5.modes.stevedore),
      ],
  },
});
