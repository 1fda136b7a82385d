/** Scenario 7: stevedore's start-up with 100k stored blobs (the store index rebuilt). */
import { removeDir, tmpDir } from '../../test/fixtures/util.js';
import { summedHwm } from '../lib/proc.js';
import { med, mmm, num, rssTarget, table, type Series, type Target } from '../lib/report.js';
import { defineScenario, log } from '../lib/scenario.js';
import { startStevedore } from '../lib/servers.js';
import { fillStore } from '../lib/store-fill.js';

export interface S7Result {
  blobs: number;
  startupMs: Series;
  indexMs: Series;
  rss: Series;
}

export default defineScenario<S7Result>({
  id: 's7',
  title: 'Start-up with many stored blobs',
  inDefaultRun: true,
  seeded: false,
  async run(ctx) {
    const { blobs, runs } = ctx.p.startup;
    const storage = await tmpDir(undefined, 'stevedore-bench-startup-');
    try {
      log(`s7: writing ${blobs} stored blobs`);
      fillStore(storage, blobs);
      const out: S7Result = { blobs, startupMs: [], indexMs: [], rss: [] };
      for (let run = 0; run < runs; run++) {
        const s = await startStevedore({ build: ctx.build, storage, upstreamUrl: ctx.upstream.url, nodeArgs: ctx.nodeArgs });
        try {
          if (s.indexedBlobs !== blobs) throw new Error(`s7: stevedore indexed ${s.indexedBlobs} blobs, expected ${blobs}`);
          out.startupMs.push(s.startupMs);
          out.indexMs.push(s.indexMs);
          out.rss.push(summedHwm(s.pids()) ?? NaN);
          log(`s7 run ${run + 1}: listening after ${s.startupMs} ms (index ${s.indexMs} ms)`);
        } finally {
          await s.stop();
        }
      }
      return out;
    } finally {
      await removeDir(storage);
    }
  },
  report: {
    section: (s7) => [
      `## 7. Start-up with ${s7.blobs.toLocaleString('en-US')} stored blobs`,
      '',
      table(
        ['', 'ms'],
        [
          ['process spawn → "stevedore listening"', mmm(s7.startupMs, 1, 0)],
          ['of which "store index rebuilt" (`ms`)', mmm(s7.indexMs, 1, 0)],
        ],
      ),
      '',
      'The blob files are small (~32 bytes each) in `blobs/sha256/<xx>/<hex>`; the same store is reused across runs, so directory entries and inodes are in the kernel\'s caches after the first run (the max is usually that first run).',
      '',
    ],
    targets(s7): Target[] {
      const m = med(s7.startupMs);
      return [
        ...rssTarget('scenario 7 (start-up with the stored blobs)', s7.rss),
        { target: `7. start-up with ${s7.blobs.toLocaleString('en-US')} stored blobs ≤ 2 s`, measured: `${num(m, 0)} ms (median)`, met: m <= 2000, group: 'last' },
      ];
    },
    peakRss: (s7) => [{ during: `7. start-up with ${s7.blobs.toLocaleString('en-US')} blobs`, process: 'stevedore', values: s7.rss, late: true }],
  },
});
