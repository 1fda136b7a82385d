/** Scenario 3: a warm manifest by tag, wrk against every warm contender. */
import { manifestSection, runManifests, type ManifestResult } from '../lib/manifests.js';
import { ge, med, num, ratio, type Target } from '../lib/report.js';
import { defineScenario } from '../lib/scenario.js';

export default defineScenario<ManifestResult>({
  id: 's3',
  title: 'Warm manifest by tag',
  inDefaultRun: true,
  seeded: true,
  run: (ctx) => runManifests(ctx, true),
  report: {
    section: (s3, rc) => [
      ...manifestSection(s3, '3. Warm manifest by tag', rc),
      'distribution asks the upstream (through the link) on every manifest-by-tag request; stevedore trusts a tag for `cache.tagTTL` (5 min). nginx maps the tag to one file.',
      '',
    ],
    targets(s3): Target[] {
      const s = med(s3.stevedore?.rps);
      const d = med(s3.distribution?.rps);
      const sp = med(s3.stevedore?.p99);
      const dp = med(s3.distribution?.p99);
      return [
        { target: '3. manifest by tag: req/s ≥ 2× distribution', measured: ratio(s, d), met: ge(s, d, 2) },
        {
          target: "3. manifest by tag: p99 ≤ distribution's",
          measured: `${num(sp, 2)} ms vs ${num(dp, 2)} ms`,
          met: Number.isFinite(sp) && Number.isFinite(dp) ? sp <= dp : null,
        },
      ];
    },
  },
});
