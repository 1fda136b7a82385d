/** Scenario 4: a warm manifest by digest, wrk against every warm contender. */
import { manifestSection, runManifests, type ManifestResult } from '../lib/manifests.js';
import { defineScenario } from '../lib/scenario.js';

export default defineScenario<ManifestResult>({
  id: 's4',
  title: 'Warm manifest by digest',
  inDefaultRun: true,
  seeded: true,
  run: (ctx) => runManifests(ctx, false),
  report: {
    section: (s4, rc) => manifestSection(s4, '4. Warm manifest by digest', rc),
  },
});
