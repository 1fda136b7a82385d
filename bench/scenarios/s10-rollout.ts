/**
 * Scenario 10: a rollout through the node-local tier. Five node instances (node mode) pull one image
 * at the same moment in front of one cold central stevedore, with peers (one redis-server) and
 * without, and with peers after a pre-heat (`stevedore prefetch --nodes all`, issue 30: the nodes
 * fetch the image before the rollout starts); it measures what the central cache serves, on the
 * wire (a TCP meter), as a multiple of the image. One more client on one node hangs up mid-layer.
 */
import { promises as fsp } from 'node:fs';
import { NODE_FLAGS } from '../../lib/cli/node-flags.js';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { hangUp, requestHead } from '../../test/fixtures/hangup.js';
import { freePort, removeDir, run as runCommand, tmpDir } from '../../test/fixtures/util.js';
import { buildImage, MANIFEST_ACCEPT, type ImageSpec } from '../lib/data.js';
import { answerProblem } from '../lib/hangups.js';
import { startMeter, type Meter } from '../lib/meter.js';
import { MiB, rolloutLayers, type Params } from '../lib/params.js';
import { largestHwm } from '../lib/proc.js';
import { pushImage } from '../lib/registry-api.js';
import { med, mmm, multiple, num, ratio, rssTarget, table, type PeakRssRow, type Series, type Target } from '../lib/report.js';
import { blobPath, check, defineScenario, hangupSeed, log, type Ctx, type OptionValues } from '../lib/scenario.js';
import { accessLog, startRedis, startStevedore, stopEach, UPSTREAM_NAME, type RedisServer, type Server, type StevedoreServer } from '../lib/servers.js';
import { prng, rotate } from '../lib/stats.js';

const REPO_ROLLOUT = 'bench/rollout';
/** Whether the pre-heated mode runs too (`--s10-no-preheat`: not). */
let withPreheat = true;

/**
 * Modes peers (node instances share blobs, Redis) and central (each node straight to the central
 * cache), one entry per run. centralBytes: what the central cache sent the nodes, on the wire
 * (heads included); peerBytes: what the nodes served each other (their access logs);
 * upstreamBytes: the registry's link; nodeS: per run, each node's seconds; rssNode: per run the
 * busiest node's peak, rssEach: every node's; hangupCut / hangupAnswered: the extra client was cut
 * at its byte, and its node answered afterwards.
 */
export interface S10Result {
  imageBytes: number;
  layers: number;
  nodes: number;
  linkRate: number;
  modes: Record<
    string,
    {
      wallS: Series;
      nodeS: Series[];
      centralBytes: Series;
      centralRequests: Series;
      peerBytes: Series;
      upstreamBytes: Series;
      rssCentral: Series;
      rssNode: Series;
      rssEach: Series[];
      hangupCut: boolean[];
      hangupAnswered: boolean[];
      /** preheat only: seconds from the mark until every node reported the image warm (the CLI waiting). */
      preheatS?: Series;
      /** preheat only: each node's seconds for a second pull right after the rollout (a warm local hit), by run. */
      warmHitS?: Series[];
    }
  >;
}

/** The node instances' shared secret (node.peers.token). */
const PEER_TOKEN = 'stevedore-bench-peer-token-0123456789';
const PEER_PATH = '/_stevedore/peer/';

type RolloutMode = 'peers' | 'central' | 'preheat';

interface RolloutRun {
  wallS: number;
  /** Seconds until each node's client had the whole image, by node. */
  nodeS: number[];
  /** What the central cache sent the nodes through the meter (heads included). */
  centralBytes: number;
  /** Its access log: requests answered, blobs asked more often than the mode needs, answers cut short. */
  centralRequests: number;
  centralRepeated: string[];
  /** Where the logs of the central one and the nodes were copied when a blob was asked of it too often. */
  keptLogs: string | null;
  centralAborted: number;
  /** The nodes' access logs: blob transfers they served each other, and their bytes. */
  peerTransfers: number;
  peerBytes: number;
  upstreamBytes: number;
  upstreamRequests: number;
  rssCentral: number;
  rssNodes: number[];
  hangup: { node: number; at: number; size: number; cut: boolean; problem: string | null };
  /** preheat: seconds of the pre-heat (mark → every node warm), and each node's seconds for a warm local hit after the rollout. */
  preheatS: number | null;
  warmHitS: number[] | null;
}

/**
 * Pre-heat (issue 30): `stevedore prefetch --nodes all` with a configuration that has the group's
 * Redis and the central cache as the upstream, waiting until every node reported the image warm;
 * the upstream link is paced as during the rollout. Its seconds.
 */
async function preheat(ctx: Ctx, redis: RedisServer, centralUrl: string, dir: string): Promise<number> {
  const config = path.join(dir, 'preheat.yaml');
  await fsp.writeFile(
    config,
    JSON.stringify({ storage: { path: path.join(dir, 'store') }, log: { level: 'warn' }, metadata: { redis: redis.redisUrl }, upstreams: { [UPSTREAM_NAME]: { url: centralUrl } }, defaultUpstream: UPSTREAM_NAME }),
  );
  const started = performance.now();
  ctx.upstream.setRate(ctx.p.pull.linkRate);
  try {
    const r = await runCommand(process.execPath, [...NODE_FLAGS, ctx.build.main, 'prefetch', '--config', config, '--nodes', 'all', '--timeout', '10m', `${UPSTREAM_NAME}/${REPO_ROLLOUT}:v1`], { timeoutMs: 660_000 });
    if (r.code !== 0) throw new Error(`s10 pre-heat: stevedore prefetch --nodes all exited ${r.code}: ${r.stderr.slice(-2000)}`);
    if (!/warm on (\d+)\/\1 nodes/.test(r.stderr)) throw new Error(`s10 pre-heat: not every node warm: ${r.stderr.slice(-2000)}`);
  } finally {
    ctx.upstream.setRate(null);
  }
  return (performance.now() - started) / 1000;
}

/**
 * A client that pulls like the others (manifest by tag first, so the node knows the repository
 * links the layer), then GETs `layer` and resets the connection at byte `at` of the answer.
 */
async function hangUpMidLayer(node: Server, layer: ImageSpec['layers'][number], at: number): Promise<{ cut: boolean }> {
  // reset: a connection of its own, closed after the answer (nothing left open for the node's shutdown).
  const m = await request(`${node.url}/v2/${REPO_ROLLOUT}/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT }, reset: true, headersTimeout: 120_000, bodyTimeout: 120_000 });
  await m.body.dump();
  if (m.statusCode !== 200) throw new Error(`s10: the client that hangs up got ${m.statusCode} for the manifest from ${node.name}`);
  const got = await hangUp(Number(new URL(node.url).port), [requestHead('GET', blobPath(REPO_ROLLOUT, layer.digest))], { afterReceived: at, reset: true, timeoutMs: 120_000 });
  return { cut: !got.serverClosed && got.received >= at };
}

/** One rollout: fresh central (cold), Redis (with peers) and nodes; every node's client starts at once. */
async function rolloutOnce(ctx: Ctx, img: ImageSpec, mode: RolloutMode, run: number, rand: () => number): Promise<RolloutRun> {
  const { nodes } = ctx.p.rollout;
  const { layerConcurrency, linkRate } = ctx.p.pull;
  const dirs: string[] = [];
  const fresh = async (prefix: string): Promise<string> => {
    const d = await tmpDir(undefined, prefix);
    dirs.push(d);
    return d;
  };
  let redis: RedisServer | null = null;
  let central: StevedoreServer | null = null;
  let meter: Meter | null = null;
  const started: StevedoreServer[] = [];
  try {
    if (mode !== 'central') redis = await startRedis();
    central = await startStevedore({ build: ctx.build, storage: await fresh('stevedore-bench-central-'), upstreamUrl: ctx.upstream.url, nodeArgs: ctx.nodeArgs, name: 'stevedore central' });
    meter = await startMeter(central.url);
    // One after the other, each with a store of its own; the peers are advertised on a fixed port.
    for (let i = 0; i < nodes; i++) {
      const port = await freePort();
      started.push(
        await startStevedore({
          build: ctx.build,
          storage: await fresh('stevedore-bench-node-'),
          // The registry (through the link) stays the last source, as in a real node config.
          upstreamUrl: ctx.upstream.url,
          nodeArgs: ctx.nodeArgs,
          name: `stevedore node-${i + 1}`,
          config: {
            listen: `127.0.0.1:${port}`,
            ...(redis ? { metadata: { redis: redis.redisUrl } } : {}),
            node: { central: { url: meter.url }, ...(redis ? { peers: { advertise: `http://127.0.0.1:${port}`, token: PEER_TOKEN } } : {}) },
          },
        }),
      );
    }
    const origins = started.map((s) => s.url);
    const victim = run % nodes;
    const layer = img.layers.reduce((a, b) => (b.size > a.size ? b : a));
    const at = 1 + Math.floor(rand() * layer.size);
    const preheatS = mode === 'preheat' ? await preheat(ctx, redis!, meter.url, await fresh('stevedore-bench-preheat-')) : null;
    ctx.upstream.resetCounts();
    meter.resetCounts();
    ctx.upstream.setRate(linkRate);
    let r;
    let hung;
    try {
      [r, hung] = await Promise.all([
        check(
          `s10 pull (${mode})`,
          ctx.client.pull({ origin: origins[0]!, origins, repo: REPO_ROLLOUT, tag: 'v1', clients: nodes, layerConcurrency, accept: MANIFEST_ACCEPT, verify: true, manifestDigest: img.manifestDigest }),
        ),
        hangUpMidLayer(started[victim]!, layer, at),
      ]);
    } finally {
      ctx.upstream.setRate(null);
    }
    if (r.bytes !== img.totalBytes * nodes) throw new Error(`s10 (${mode}): clients got ${r.bytes} bytes, expected ${img.totalBytes * nodes}`);
    let warmHitS: number[] | null = null;
    if (mode === 'preheat') {
      // The same pull again, every image now a local hit on every node: what the rollout is compared with.
      const again = await check('s10 warm hit', ctx.client.pull({ origin: origins[0]!, origins, repo: REPO_ROLLOUT, tag: 'v1', clients: nodes, layerConcurrency, accept: MANIFEST_ACCEPT, verify: true, manifestDigest: img.manifestDigest }));
      warmHitS = origins.map((o) => {
        const k = again.clientOrigins.indexOf(o);
        return k < 0 ? NaN : again.clientMs[k]! / 1000;
      });
    }
    // Fresh processes: VmHWM is the peak since start; with workers, a server's largest process.
    const rssCentral = largestHwm(central.pids());
    const rssNodes = started.map((s) => largestHwm(s.pids()));
    const nodeS = origins.map((o) => {
      const k = r.clientOrigins.indexOf(o);
      return k < 0 ? NaN : r.clientMs[k]! / 1000;
    });
    // Whatever the nodes still do after their clients left (the layer whose client hung up) counts too.
    await sleep(ctx.p.hangup.settleMs);
    const problem = await answerProblem(started[victim]!);
    const lines = await accessLog(central);
    const seen = new Map<string, number>();
    for (const l of lines) {
      const what = `${l.method} ${l.path.replace(/\?.*$/, '')}`;
      seen.set(what, (seen.get(what) ?? 0) + 1);
    }
    let peerTransfers = 0;
    let peerBytes = 0;
    for (const s of started) {
      for (const l of await accessLog(s)) {
        if (!l.path.startsWith(PEER_PATH) || l.method !== 'GET') continue;
        peerTransfers++;
        peerBytes += l.bytes;
      }
    }
    // Blobs asked of it more often than the mode needs: once with peers, once per node without.
    const centralRepeated = [...seen]
      .filter(([what, k]) => what.includes('/blobs/') && k > (mode === 'central' ? nodes : 1))
      .map(([what, k]) => `${what.replace(/^(GET|HEAD) \/v2\/.*\/blobs\/sha256:(\w{12})\w*$/, '$1 $2…')} ×${k}`);
    let keptLogs: string | null = null;
    if (centralRepeated.length) {
      // The evidence, before the processes and their logs go (a directory of its own, not removed).
      keptLogs = await fsp.mkdtemp(path.join(os.tmpdir(), 'stevedore-bench-s10-logs-'));
      for (const s of [central, ...started]) await fsp.copyFile(s.logFile, path.join(keptLogs, `${s.name.replace(/^stevedore /, '')}.log`));
    }
    return {
      wallS: r.wallMs / 1000,
      nodeS,
      centralBytes: meter.bytes(),
      centralRequests: lines.length,
      centralRepeated,
      keptLogs,
      centralAborted: lines.filter((l) => l.aborted).length,
      peerTransfers,
      peerBytes,
      upstreamBytes: ctx.upstream.bytes(),
      upstreamRequests: ctx.upstream.records().length,
      rssCentral,
      rssNodes,
      hangup: { node: victim, at, size: layer.size, cut: hung.cut, problem },
      preheatS,
      warmHitS,
    };
  } finally {
    // Nodes first (with peers they withdraw their announcements through Redis), then the central
    // one, then Redis. stop() throws if a process died or logged a defect: that failure wins.
    await stopEach([...started, ...(central ? [central] : []), ...(redis ? [redis] : [])]).finally(async () => {
      await meter?.stop();
      for (const d of dirs) await removeDir(d);
    });
  }
}

export default defineScenario<S10Result>({
  id: 's10',
  title: 'Rollout through the node-local tier, with and without peers',
  inDefaultRun: true,
  seeded: false,
  options: { 'rollout-mib': { type: 'string' }, 's10-no-preheat': { type: 'boolean' } },
  applyOptions(values: OptionValues, p: Params): void {
    const v = values['rollout-mib'];
    if (typeof v === 'string') {
      const mib = Number(v);
      if (!(mib > 0)) throw new Error(`--rollout-mib: a size in MiB above 0, not ${v}`);
      p.rollout.imageBytes = Math.round(mib * MiB);
    }
    if (values['s10-no-preheat'] === true) withPreheat = false;
  },
  async run(ctx) {
    const { nodes, runs, imageBytes, layers } = ctx.p.rollout;
    const { linkRate } = ctx.p.pull;
    const img = buildImage('rollout', rolloutLayers(imageBytes, layers));
    await pushImage(ctx.upstream.directUrl, REPO_ROLLOUT, 'v1', img);
    const seed = hangupSeed();
    const rand = prng(seed);
    log(
      `s10: rollout of a ${img.totalBytes}-byte image (${img.layers.length} layers) to ${nodes} node instances at once, each pulled by one client, ` +
        `through one cold central stevedore; with peers (one redis-server) and without${withPreheat ? ', and with peers pre-heated (prefetch --nodes all before the rollout)' : ''}; upstream link paced to ${linkRate} B/s; ` +
        `one more client per run hangs up mid-layer on one node (HANGUP_SEED=${seed})`,
    );
    const out: S10Result = { imageBytes: img.totalBytes, layers: img.layers.length, nodes, linkRate, modes: {} };
    for (let run = 0; run < runs; run++) {
      for (const mode of rotate(withPreheat ? (['peers', 'central', 'preheat'] as const) : (['peers', 'central'] as const), run)) {
        const r = await rolloutOnce(ctx, img, mode, run, rand);
        const h = r.hangup;
        log(
          `s10 run ${run + 1} ${mode === 'peers' ? 'with peers' : mode === 'preheat' ? 'with peers, pre-heated' : 'without peers'}: the last node had the image after ${r.wallS.toFixed(2)} s ` +
            `(each: ${r.nodeS.map((x) => x.toFixed(2)).join(' / ')} s); central served ${r.centralBytes.toLocaleString('en-US')} bytes = ${(r.centralBytes / img.totalBytes).toFixed(4)}× the image ` +
            `in ${r.centralRequests} requests${r.centralAborted ? ` (${r.centralAborted} cut short)` : ''}` +
            (r.centralRepeated.length ? `, blobs asked ${mode === 'peers' ? 'more than once' : 'more than once per node'}: ${r.centralRepeated.join(', ')} (logs kept in ${r.keptLogs})` : '') +
            `; nodes served each other ${(r.peerBytes / MiB).toFixed(1)} MiB in ${r.peerTransfers} transfers; upstream ${(r.upstreamBytes / img.totalBytes).toFixed(4)}× in ${r.upstreamRequests} requests; ` +
            `peak RSS central ${(r.rssCentral / MiB).toFixed(1)} MiB, nodes ${r.rssNodes.map((x) => (x / MiB).toFixed(1)).join(' / ')} MiB; ` +
            (r.preheatS !== null ? `pre-heat took ${r.preheatS.toFixed(2)} s before the rollout; a warm local hit after it: ${r.warmHitS!.map((x) => x.toFixed(2)).join(' / ')} s; ` : '') +
            `a client on node-${h.node + 1} hung up at byte ${h.at} of ${h.size} (${h.cut ? 'cut there' : 'not cut there'}), the node ${h.problem === null ? 'answers' : h.problem}`,
        );
        const o = (out.modes[mode] ??= {
          wallS: [],
          nodeS: [],
          centralBytes: [],
          centralRequests: [],
          peerBytes: [],
          upstreamBytes: [],
          rssCentral: [],
          rssNode: [],
          rssEach: [],
          hangupCut: [],
          hangupAnswered: [],
        });
        o.wallS.push(r.wallS);
        o.nodeS.push(r.nodeS);
        o.centralBytes.push(r.centralBytes);
        o.centralRequests.push(r.centralRequests);
        o.peerBytes.push(r.peerBytes);
        o.upstreamBytes.push(r.upstreamBytes);
        o.rssCentral.push(r.rssCentral);
        o.rssNode.push(Math.max(...r.rssNodes));
        o.rssEach.push(r.rssNodes);
        o.hangupCut.push(h.cut);
        o.hangupAnswered.push(h.problem === null);
        if (r.preheatS !== null) (o.preheatS ??= []).push(r.preheatS);
        if (r.warmHitS !== null) (o.warmHitS ??= []).push(r.warmHitS);
      }
    }
    return out;
  },
  report: {
    section(s10, { p }) {
      const L: string[] = [];
      L.push(
        `## 10. Rollout: ${s10.nodes} node instances pull one image at the same moment (${num(s10.imageBytes / MiB, 1)} MiB: manifest, config, ${s10.layers} layers; ` +
          `one cold central stevedore; upstream link ${num(s10.linkRate / MiB, 0)} MiB/s)`,
        '',
      );
      const label: Record<string, string> = {
        peers: `with peers: ${s10.nodes} nodes → each other / central (one Redis)`,
        central: `without peers: ${s10.nodes} nodes → central`,
        preheat: `with peers, pre-heated (prefetch --nodes all before the rollout)`,
      };
      const rows = ['peers', 'central', 'preheat']
        .filter((k) => k in s10.modes)
        .map((k) => {
          const o = s10.modes[k]!;
          const cut = o.hangupCut.filter(Boolean).length;
          const answered = o.hangupAnswered.filter(Boolean).length;
          return [
            label[k]!,
            String(o.wallS.length),
            mmm(o.wallS),
            mmm(o.centralBytes, MiB, 1),
            // Four digits: the heads of a few dozen answers are ~0.0001× of the image.
            multiple(o.centralBytes, s10.imageBytes, 4),
            mmm(o.centralRequests, 1, 0),
            mmm(o.peerBytes, MiB, 1),
            multiple(o.upstreamBytes, s10.imageBytes, 4),
            mmm(o.rssNode, MiB, 1),
            mmm(o.rssCentral, MiB, 1),
            `${cut} of ${o.hangupCut.length} / ${answered} of ${o.hangupAnswered.length}`,
          ];
        });
      L.push(
        table(
          [
            'rollout',
            'runs',
            'wall s (last node has the image)',
            'central served MiB',
            'central bytes / image',
            'central requests',
            'nodes served each other MiB',
            'upstream bytes / image',
            'peak RSS MiB, busiest node',
            'peak RSS MiB, central',
            'client that hung up: cut mid-layer / node answers after',
          ],
          rows,
        ),
        '',
      );
      const wp = med(s10.modes.peers?.wallS);
      const wc = med(s10.modes.central?.wallS);
      const pre = s10.modes.preheat;
      if (pre) {
        const nodeMs = (xs: Series[] | undefined): number[] => (xs ?? []).flat().filter((x) => Number.isFinite(x));
        L.push(
          table(
            ['pre-heated rollout', 'pre-heat s (mark → every node warm)', 'each node during the rollout, s', 'each node, warm local hit after it, s', 'rollout ÷ warm hit (medians)'],
            [[`${s10.nodes} nodes, ${num(s10.imageBytes / MiB, 1)} MiB`, mmm(pre.preheatS ?? []), mmm(nodeMs(pre.nodeS)), mmm(nodeMs(pre.warmHitS)), ratio(med(nodeMs(pre.nodeS)), med(nodeMs(pre.warmHitS)))]],
          ),
          '',
          'Pre-heated: before the rollout, `stevedore prefetch --nodes all` (a configuration with the nodes\' Redis and the central cache as upstream) records a warm mark and waits until every node ' +
            'reported the image warm (the upstream link paced as during the rollout); the nodes fetch it through their own pull path, each layer from central once and then node to node. ' +
            'Then the rollout as above is timed, and right after it the same pull once more (every blob a local hit): the rollout should take about the time of that warm hit. ' +
            'In the table above, that row\'s "central served" and "upstream" count the rollout alone (counters reset after the pre-heat); "central requests" and "nodes served each other" (access logs) include the pre-heat. ' +
            '`--s10-no-preheat` leaves this mode out.',
          '',
        );
      }
      L.push(
        `Fresh processes and empty stores for every run and mode: one central stevedore (cold: it fetches the image from the upstream during the rollout, over the paced link), ` +
          `${s10.nodes} node instances (node mode, \`node.central\` → the central one, the upstream itself last; with peers also \`node.peers\` and \`metadata.redis\`, the \`node.peers.*\` defaults) ` +
          `and, with peers, one redis-server. The nodes start one after the other; then one client per node, all at once, GETs the manifest by tag and config and layers ` +
          `${p.pull.layerConcurrency} at a time, hashing every blob against its digest. Wall time: from the start until the last client has the whole image ` +
          `(with peers ÷ without: ${ratio(wp, wc)}). "central served": every byte the central stevedore sent the nodes, counted on the wire by a TCP meter in front of it (bench/lib/meter.ts: ` +
          `HTTP heads included, a transfer cut short counts what it sent), as a multiple of the image; "central requests": its access log; "nodes served each other": ` +
          `the nodes' access logs for \`/_stevedore/peer/\` (answers cut short count 0 there). In every run one more client, on node (run mod ${s10.nodes}) + 1, ` +
          `GETs the manifest, then the largest layer, and resets the connection (TCP RST) at a random byte of it (\`HANGUP_SEED\` repeats the cut points); ` +
          'that node must answer `GET /v2/` afterwards, and every process (nodes, central, Redis) must not die or log a defect, else the benchmark fails. ' +
          'Peak RSS is VmHWM of each fresh process after the rollout (with workers: a server’s largest process).',
        '',
      );
      return L;
    },
    targets(s10): Target[] {
      const out: Target[] = [];
      const label = `10. rollout to ${s10.nodes} nodes at once`;
      const times = (bytes: Series | undefined): number[] => (bytes ?? []).map((b) => b / s10.imageBytes);
      const every = (xs: number[]): string => (xs.length ? `${[...new Set(xs.map((x) => num(x, 4)))].join(', ')}× (${xs.length === 1 ? 'one run' : 'every run'})` : 'n/a');
      const withPeers = times(s10.modes.peers?.centralBytes);
      out.push({
        target: `${label}, with peers: the central cache serves ≤ 1.5× the image`,
        measured: every(withPeers),
        met: withPeers.length ? withPeers.every((x) => x <= 1.5) : null,
      });
      // The baseline: one copy per node, no more (and no less: the nodes have nowhere else to get it).
      const without = times(s10.modes.central?.centralBytes);
      out.push({
        target: `${label}, without peers: the central cache serves ${s10.nodes}× the image (one copy per node, ±1 %)`,
        measured: every(without),
        met: without.length ? without.every((x) => Math.abs(x - s10.nodes) <= 0.01 * s10.nodes) : null,
      });
      const pre = times(s10.modes.preheat?.centralBytes);
      if (pre.length) {
        out.push({
          target: `${label}, pre-heated (prefetch --nodes all before it): the central cache serves nothing during the rollout`,
          measured: every(pre),
          met: pre.every((x) => x === 0),
        });
      }
      const answered = Object.values(s10.modes).flatMap((o) => o.hangupAnswered);
      if (answered.length) {
        out.push({
          target: `${label}: the node whose extra client hung up mid-layer still answers`,
          measured: `${answered.filter(Boolean).length} of ${answered.length} run(s)`,
          met: answered.every(Boolean),
        });
      }
      const modes = Object.values(s10.modes);
      return [
        ...out,
        ...rssTarget(`scenario 10 (rollout; busiest of ${s10.nodes} nodes, both modes)`, modes.flatMap((o) => o.rssNode)),
        ...rssTarget('scenario 10 (rollout; the central cache, both modes)', modes.flatMap((o) => o.rssCentral)),
      ];
    },
    peakRss(s10): PeakRssRow[] {
      const rows: PeakRssRow[] = [];
      for (const [k, label] of [
        ['peers', 'with peers'],
        ['central', 'without peers'],
      ] as const) {
        const o = s10.modes[k];
        if (!o) continue;
        rows.push({ during: `10. rollout to ${s10.nodes} nodes, ${label}`, process: 'stevedore (busiest node)', values: o.rssNode });
        rows.push({ during: `10. rollout to ${s10.nodes} nodes, ${label}`, process: 'stevedore (central)', values: o.rssCentral });
      }
      return rows;
    },
  },
});
