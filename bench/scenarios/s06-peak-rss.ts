/**
 * Scenario 6: 20 clients streaming one cold ~1 GiB blob through stevedore (peak RSS), and section 6
 * of the report, the peak RSS of the proxies: the rows every scenario contributes (`peakRss`), this
 * one's included. The section is written whether or not this scenario ran.
 */
import { removeDir, tmpDir } from '../../test/fixtures/util.js';
import { PeakRss } from '../lib/proc.js';
import { largestRow, MiB, mmm, num, peakRssTable, rssTarget, type Series } from '../lib/report.js';
import { blobPath, check, defineScenario, log, REPO_BIG, type ReportCtx } from '../lib/scenario.js';
import { startStevedore } from '../lib/servers.js';

export interface S6Result {
  size: number;
  clients: number;
  rss: Series;
  /** The one process that peaked highest, per run (with workers; equal to rss otherwise). */
  rssLargest?: Series;
  wallS: Series;
  upstreamBytes: Series;
}

function section(s6: S6Result | null, rc: ReportCtx): string[] {
  const L: string[] = ['## 6. Peak RSS of the proxies', ''];
  if (rc.peakRss.length === 0) return [...L, 'Not measured in this run.', ''];
  L.push(peakRssTable(rc.peakRss), '');
  L.push(
    'Peak RSS is VmHWM from /proc/<pid>/status, reset before each run by writing 5 to /proc/<pid>/clear_refs (a fresh process in 5, 6, 9, 10 and 12), backed by sampling VmRSS every 50 ms.',
    '',
  );
  if (s6) {
    L.push(
      `The ${s6.clients}-client cold blob: ${mmm(s6.wallS)} s until every client had the whole blob; upstream bytes ${[...new Set(s6.upstreamBytes.map((b) => num(b / s6.size, 2)))].join(', ')}× the blob ` +
        '(link unpaced, so the upstream is faster than the clients).',
      '',
    );
  }
  return L;
}

export default defineScenario<S6Result>({
  id: 's6',
  title: 'Many clients streaming one cold blob; peak RSS of the proxies',
  inDefaultRun: true,
  seeded: true,
  async run(ctx) {
    const { clients, runs } = ctx.p.coldBlob;
    const blob = ctx.big;
    log(`s6: ${clients} clients streaming a cold ${blob.size}-byte blob through stevedore (link unpaced), ${runs} run(s)`);
    const out: S6Result = { size: blob.size, clients, rss: [], wallS: [], upstreamBytes: [] };
    for (let run = 0; run < runs; run++) {
      const storage = await tmpDir(undefined, 'stevedore-bench-cold-');
      const s = await startStevedore({ build: ctx.build, storage, upstreamUrl: ctx.upstream.url, nodeArgs: ctx.nodeArgs });
      try {
        ctx.upstream.resetCounts();
        const peak = new PeakRss(() => s.pids());
        const r = await check('s6', ctx.client.fetch({ origin: s.url, paths: Array.from({ length: clients }, () => blobPath(REPO_BIG, blob.digest)), concurrency: clients }));
        const rss = peak.stop();
        const largest = peak.largest();
        (out.rssLargest ??= []).push(largest);
        if (r.bytes !== blob.size * clients) throw new Error(`s6: clients got ${r.bytes} bytes, expected ${blob.size * clients}`);
        out.rss.push(rss);
        out.wallS.push(r.wallMs / 1000);
        out.upstreamBytes.push(ctx.upstream.bytes());
        log(`s6 run ${run + 1}: peak RSS ${(rss / 2 ** 20).toFixed(1)} MiB (largest one process ${(largest / 2 ** 20).toFixed(1)}), ${(r.wallMs / 1000).toFixed(2)} s`);
      } finally {
        await s.stop().finally(() => removeDir(storage));
      }
    }
    return out;
  },
  report: {
    section,
    sectionWithout: (rc) => section(null, rc),
    targets: (s6) => rssTarget(`${s6.clients} clients on one cold ${num(s6.size / MiB, 0)} MiB blob`, s6.rss),
    peakRss: (s6) => [
      { during: `${s6.clients} clients streaming one cold ${num(s6.size / MiB, 0)} MiB blob`, process: 'stevedore', values: s6.rss },
      ...largestRow(`${s6.clients} clients streaming one cold ${num(s6.size / MiB, 0)} MiB blob`, s6),
    ],
  },
});
