/** What each mode measures. Full: the figures in bench/RESULTS.md. Quick: seconds, tiny sizes, one run. */
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export interface Params {
  mode: 'full' | 'quick';
  /** Measured runs per contender in each side-by-side scenario (after one warm-up run). */
  runs: number;
  /** Scenario 1: one warm blob, one client. */
  bigBlob: number;
  /**
   * Scenario 1: GETs of the blob in a row per client and run, on one connection (one GET of 1 GiB
   * lasts ~0.3 s here, too short a sample on 2 shared cores).
   */
  s1Repeat: number;
  /** Scenario 2: warm blobs of these sizes; `clients` concurrent, each blob requested `repeat` times per run. */
  s2: { sizes: number[]; clients: number; repeat: number };
  /** Scenarios 3 and 4: wrk. */
  wrk: { connections: number; threads: number; durationS: number; warmupS: number };
  /** Scenario 5: cold pull of an image; the upstream link is paced to `linkRate` bytes/s. */
  pull: { layers: number[]; clients: number; layerConcurrency: number; linkRate: number };
  /**
   * Scenario 9, cluster mode: `replicas` stevedore processes on one store and one redis-server,
   * `clients` pulling the scenario-5 image (same link rate), spread round-robin over the replicas;
   * the peer is `replicas` independent distribution proxies. `runs` runs of the direct pull and of
   * the cluster, `peerRuns` of the distributions (each of them fetches the image once per client:
   * ~`clients`× the image over the paced link, minutes in full mode). `--runs` does not apply.
   */
  cluster: { replicas: number; clients: number; runs: number; peerRuns: number };
  /**
   * Scenario 10, a rollout through the node-local tier: `nodes` node instances (node mode) in front
   * of one central stevedore, each pulled by one client at the same moment, an image of
   * `imageBytes` in `layers` layers (rolloutLayers), the central cache cold and the upstream link
   * paced to scenario 5's rate; once with peers (Redis) and once without. `runs` runs of each mode
   * (`--runs` does not apply; `--rollout-mib` sets `imageBytes`).
   */
  rollout: { nodes: number; imageBytes: number; layers: number; runs: number };
  /** Scenario 6, separate measurement: clients streaming one cold blob of `size` through stevedore (link unpaced). */
  coldBlob: { size: number; clients: number; runs: number };
  /** Scenario 7: start-up with this many stored blobs. */
  startup: { blobs: number; runs: number };
  /**
   * Scenario 8, clients that hang up: `runs` sets per contender (the repetition is inside a set,
   * so `--runs` does not apply). A set: `wrkRuns` wrk runs in a row on a warm
   * blob (wrk closes its `connections` mid-body when each run ends); `rounds` rounds of `clients`
   * raw clients resetting a GET of the warm blob nearest `warmSize` at a random byte; one round on a
   * fresh cold blob of `coldSize` through each proxy, the link paced to `coldLinkRate` so that they
   * hang up while it downloads; `settleMs` of quiet before the process is looked at again.
   */
  hangup: {
    runs: number;
    wrkRuns: number;
    wrkDurationS: number;
    connections: number;
    threads: number;
    rounds: number;
    clients: number;
    warmSize: number;
    coldSize: number;
    coldLinkRate: number;
    settleMs: number;
  };
  /**
   * Scenario 11, the S3 backend: one Ceph RADOS Gateway (S3), stevedore with the filesystem backend,
   * stevedore with the S3 backend, distribution with its s3 driver (and nginx for part a). Part a:
   * one client GETs a warm blob of `bigBlob`, `bigRepeat` times in a row per run; part b: `clients`
   * concurrent clients on `smallBlobs` warm blobs of `smallSize`, each requested `smallRepeat`
   * times per run. Runs: `runs` (after one warm-up run; `--runs` sets it too). Then `hangupRounds`
   * round(s) of `hangupClients` clients resetting the big blob at a random byte on stevedore-s3,
   * `settleMs` of quiet before it is looked at again.
   */
  s3: {
    runs: number;
    bigBlob: number;
    bigRepeat: number;
    smallSize: number;
    smallBlobs: number;
    smallRepeat: number;
    clients: number;
    hangupRounds: number;
    hangupClients: number;
    settleMs: number;
  };
  /**
   * Scenario 12, cluster mode on the S3 backend (one RADOS gateway, one redis-server): `replicas`
   * stevedore processes on one bucket, each with its own local directory, `clients` spread over
   * them GET one cold blob of `blobBytes` at the same moment, the upstream link paced to `linkRate`.
   * `runs` measured runs of each build (after one discarded warm-up run of each; `--s12-runs` sets
   * it, `--s12-size` the blob; `--runs` does not apply).
   */
  s12: { replicas: number; clients: number; blobBytes: number; linkRate: number; runs: number };
  /**
   * The soak (not in the default run: `--only soak`, or any `--soak-*` option): `minutes` of mixed
   * load (`--soak-minutes`), reported per window of `windowMinutes` (5; 1 when the soak is shorter
   * than 15 minutes; `--soak-window-minutes`); `connections` warm loops with `pauseMs` between two
   * requests of one loop; resource samples every `sampleMs`. Cluster variant (`--soak-cluster`):
   * `replicas` processes, one killed (-9) every `killEveryMinutes`, Redis restarted at the middle.
   * `--runs` does not apply.
   */
  soak: {
    minutes: number;
    windowMinutes: number | null;
    cluster: boolean;
    replicas: number;
    connections: number;
    pauseMs: number;
    sampleMs: number;
    killEveryMinutes: number;
    /** A 429 window of `window429S` every `every429S`. */
    every429S: number;
    window429S: number;
    coldLayers: number[];
    coldClients: number;
    coldPauseMs: number;
    /**
     * storage.maxSize of the observed store (`--soak-max-size`, `none`: unbounded): the cold
     * images (~2.3 MiB each, ~70 per window) then reach a steady state, evicted as they age, so
     * that what the slopes show is not the index of a store that only grows.
     */
    maxSize: string | null;
    /**
     * How many distinct cold images the cold loop cycles through (`--soak-cold-images`; 0: a new
     * image every round, as the soak did first). Bounded, the load reaches a steady state: ~96
     * images of ~2.3 MiB are more than a 128 MiB store holds, so each comes back after the store
     * evicted it (cold again, through the faulty upstream), while the tags, links and sizes the
     * process remembers stop growing once every image was pulled (~8 minutes). Unbounded, those
     * grow with every round until caches sized for hours of it fill, which a 30-minute slope
     * cannot tell from a leak.
     */
    coldImages: number;
  };
}

/** The soak's parameters (the same in full and quick mode: its length is --soak-minutes). */
function soakParams(): Params['soak'] {
  return {
    minutes: 30,
    windowMinutes: null,
    cluster: false,
    replicas: 3,
    connections: 64,
    pauseMs: 50,
    sampleMs: 5000,
    killEveryMinutes: 3,
    every429S: 120,
    window429S: 10,
    coldLayers: [16 * KiB, 256 * KiB, 2 * MiB],
    coldClients: 3,
    coldPauseMs: 2000,
    maxSize: '128MiB',
    coldImages: 96,
  };
}

export function params(mode: 'full' | 'quick'): Params {
  if (mode === 'quick') {
    return {
      mode,
      runs: 1,
      bigBlob: 4 * MiB,
      s1Repeat: 1,
      s2: { sizes: [64 * KiB, 256 * KiB, 512 * KiB, 1 * MiB], clients: 8, repeat: 2 },
      wrk: { connections: 8, threads: 1, durationS: 1, warmupS: 0 },
      pull: { layers: [256 * KiB, 512 * KiB, 1 * MiB], clients: 4, layerConcurrency: 3, linkRate: 64 * MiB },
      coldBlob: { size: 4 * MiB, clients: 4, runs: 1 },
      cluster: { replicas: 3, clients: 60, runs: 1, peerRuns: 1 },
      rollout: { nodes: 5, imageBytes: 8 * MiB, layers: 6, runs: 1 },
      startup: { blobs: 1000, runs: 1 },
      hangup: { runs: 1, wrkRuns: 2, wrkDurationS: 1, connections: 64, threads: 2, rounds: 2, clients: 64, warmSize: 4 * MiB, coldSize: 1 * MiB, coldLinkRate: 32 * MiB, settleMs: 1000 },
      s3: { runs: 1, bigBlob: 8 * MiB, bigRepeat: 1, smallSize: 64 * KiB, smallBlobs: 16, smallRepeat: 2, clients: 16, hangupRounds: 1, hangupClients: 64, settleMs: 1000 },
      s12: { replicas: 3, clients: 30, blobBytes: 8 * MiB, linkRate: 100 * MiB, runs: 1 },
      soak: soakParams(),
    };
  }
  return {
    mode,
    runs: 5,
    bigBlob: 1 * GiB,
    s1Repeat: 4,
    s2: { sizes: Array.from({ length: 32 }, (_, i) => (i + 1) * MiB), clients: 64, repeat: 3 },
    wrk: { connections: 64, threads: 2, durationS: 4, warmupS: 1 },
    pull: { layers: [8 * MiB, 24 * MiB, 40 * MiB, 56 * MiB, 72 * MiB], clients: 20, layerConcurrency: 3, linkRate: 64 * MiB },
    coldBlob: { size: 1 * GiB, clients: 20, runs: 2 },
    cluster: { replicas: 3, clients: 60, runs: 3, peerRuns: 1 },
    rollout: { nodes: 5, imageBytes: 200 * MiB, layers: 6, runs: 3 },
    startup: { blobs: 100_000, runs: 5 },
    hangup: { runs: 1, wrkRuns: 20, wrkDurationS: 2, connections: 64, threads: 2, rounds: 10, clients: 64, warmSize: 4 * MiB, coldSize: 8 * MiB, coldLinkRate: 64 * MiB, settleMs: 1000 },
    s3: { runs: 5, bigBlob: 200 * MiB, bigRepeat: 2, smallSize: 1 * MiB, smallBlobs: 64, smallRepeat: 4, clients: 64, hangupRounds: 1, hangupClients: 64, settleMs: 1000 },
    s12: { replicas: 3, clients: 30, blobBytes: 200 * MiB, linkRate: 100 * MiB, runs: 3 },
    soak: soakParams(),
  };
}

/**
 * Scenario 10's layer sizes: `total` bytes (less the manifest and config, a few hundred bytes) in
 * `n` layers growing in steps (1 : 2 : … : n of the total, as real images have a small base and
 * bigger application layers), every one at least 1 byte.
 */
export function rolloutLayers(total: number, n: number): number[] {
  const weight = (n * (n + 1)) / 2;
  const sizes = Array.from({ length: n }, (_, i) => Math.max(1, Math.floor((total * (i + 1)) / weight)));
  const rest = total - sizes.reduce((a, b) => a + b, 0);
  return sizes.map((x, i) => (i === n - 1 ? x + Math.max(0, rest) : x));
}
