/** Every scenario, in the order a run takes them (and the report shows them). */
import type { AnyScenario } from '../lib/scenario.js';
import s1 from './s01-warm-blob.js';
import s2 from './s02-warm-blobs.js';
import s3 from './s03-manifest-by-tag.js';
import s4 from './s04-manifest-by-digest.js';
import s5 from './s05-cold-pull.js';
import s6 from './s06-peak-rss.js';
import s7 from './s07-startup.js';
import s8 from './s08-hangups.js';
import s9 from './s09-cluster.js';
import s10 from './s10-rollout.js';
import s11 from './s11-s3-backend.js';
import s12 from './s12-s3-cluster.js';
import soak from './s13-soak.js';

export const SCENARIOS: readonly AnyScenario[] = [s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, soak];
