/** Scenario 1: one warm ~1 GiB blob, one client (a raw HTTP client and undici, alternating), every warm contender. */
import { contenders, ge, med, MiB, mmm, num, ratio, table, vs, type Series, type Target } from '../lib/report.js';
import { blobPath, check, defineScenario, log, REPO_BIG, sideBySide, warmServers } from '../lib/scenario.js';
import type { Server } from '../lib/servers.js';
import { rotate } from '../lib/stats.js';

/** Per contender, MiB/s of each run with each client. */
export type S1Result = Record<string, { mibps: Series; undici: Series }>;

export default defineScenario<S1Result>({
  id: 's1',
  title: 'Warm blob, one client',
  inDefaultRun: true,
  seeded: true,
  async run(ctx) {
    const w = await warmServers(ctx);
    const path1 = blobPath(REPO_BIG, ctx.big.digest);
    log(`s1: warm blob of ${ctx.big.size} bytes, one client, ${ctx.p.s1Repeat} GET(s) in a row per run (raw HTTP client and undici, alternating)`);
    const out: S1Result = {};
    const once = async (s: Server, engine: 'raw' | 'undici'): Promise<number> => {
      const n = ctx.p.s1Repeat;
      const r = await check(`s1 ${s.name}`, ctx.client.fetch({ origin: s.url, paths: Array.from({ length: n }, () => path1), concurrency: 1, engine }));
      if (r.bytes !== ctx.big.size * n) throw new Error(`s1 ${s.name}: ${r.bytes} of ${ctx.big.size * n} bytes`);
      return r.bytes / (1024 * 1024) / (r.wallMs / 1000);
    };
    await sideBySide(
      ctx,
      w.all.map((s) => s.name),
      async (name, run) => {
        const s = w.all.find((x) => x.name === name)!;
        const engines = rotate(['raw', 'undici'] as const, Math.max(0, run));
        const a = await once(s, engines[0]!);
        const b = await once(s, engines[1]!);
        return engines[0] === 'raw' ? { raw: a, undici: b } : { raw: b, undici: a };
      },
      (name, r) => {
        const o = (out[name] ??= { mibps: [], undici: [] });
        o.mibps.push(r.raw);
        o.undici.push(r.undici);
      },
      true,
    );
    return out;
  },
  report: {
    section: (s1, { p }) => [
      `## 1. Warm blob, one client (${num(p.bigBlob / MiB, 0)} MiB)`,
      '',
      table(
        ['server', 'MiB/s, raw HTTP client', 'stevedore / this', 'MiB/s, undici client', 'stevedore / this'],
        contenders(s1).map((n) => [n, mmm(s1[n]!.mibps), vs(s1, 'mibps', n), mmm(s1[n]!.undici), vs(s1, 'undici', n)]),
      ),
      '',
      `Each run GETs the blob ${p.s1Repeat === 1 ? 'once' : `${p.s1Repeat} times in a row (one connection)`} with each client (alternating which goes first); ` +
        'throughput is all bytes over the time from the first request to the last byte. undici parses in WebAssembly and copies every chunk into it, so ' +
        'at these rates the client process itself can be what limits a run; the raw client (bench/lib/raw-http.ts: one keep-alive socket, ' +
        '`onread` into one reused buffer, bytes counted) costs less per byte. Targets use the raw client.',
      '',
    ],
    targets(s1): Target[] {
      const s = med(s1.stevedore?.mibps);
      const d = med(s1.distribution?.mibps);
      const n = med(s1.nginx?.mibps);
      return [
        { target: '1. warm blob, 1 client: throughput ≥ 1.0× distribution', measured: ratio(s, d), met: ge(s, d, 1.0) },
        { target: '1. warm blob, 1 client: throughput ≥ 0.8× nginx', measured: ratio(s, n), met: ge(s, n, 0.8) },
      ];
    },
  },
});
