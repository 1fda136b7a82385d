/** Scenarios 3 and 4: a warm manifest by tag / by digest, wrk against every warm contender. */
import { removeDir, tmpDir } from '../../test/fixtures/util.js';
import { MANIFEST_ACCEPT } from './data.js';
import { contenders, mmm, table, vs, type Series } from './report.js';
import { log, REPO_APP, sideBySide, warmServers, type Ctx, type ReportCtx } from './scenario.js';
import { runWrk, writeWrkScript } from './wrk.js';

/** Per contender, each run's wrk figures. */
export type ManifestResult = Record<string, { rps: Series; p50: Series; p99: Series; errors: Series }>;

export async function runManifests(ctx: Ctx, byTag: boolean): Promise<ManifestResult> {
  const w = await warmServers(ctx);
  const dir = await tmpDir(undefined, 'stevedore-bench-wrk-');
  try {
    const script = await writeWrkScript(dir, MANIFEST_ACCEPT);
    const ref = byTag ? 'v1' : ctx.app.manifestDigest;
    const { connections, threads, durationS, warmupS } = ctx.p.wrk;
    log(`${byTag ? 's3' : 's4'}: warm manifest by ${byTag ? 'tag' : 'digest'}, wrk ${connections} connections, ${durationS} s per run`);
    const out: ManifestResult = {};
    await sideBySide(
      ctx,
      w.all.map((s) => s.name),
      async (name, run) => {
        const s = w.all.find((x) => x.name === name)!;
        const d = run < 0 ? warmupS : durationS;
        return d > 0 ? runWrk({ url: `${s.url}/v2/${REPO_APP}/manifests/${ref}`, script, connections, threads, durationS: d }) : null;
      },
      (name, r) => {
        if (!r) return;
        if (r.requests === 0) throw new Error(`${byTag ? 's3' : 's4'} ${name}: no request completed`);
        const o = (out[name] ??= { rps: [], p50: [], p99: [], errors: [] });
        o.rps.push(r.rps);
        o.p50.push(r.p50Ms);
        o.p99.push(r.p99Ms);
        o.errors.push(r.errors);
      },
      warmupS > 0,
    );
    return out;
  } finally {
    await removeDir(dir);
  }
}

/** The section's heading and table (`title`: "3. Warm manifest by tag"). */
export function manifestSection(rec: ManifestResult, title: string, { p }: ReportCtx): string[] {
  return [
    `## ${title} (wrk, ${p.wrk.connections} connections, ${p.wrk.threads} thread(s), ${p.wrk.durationS} s per run)`,
    '',
    table(
      ['server', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'req/s stevedore / this', 'p99 this / stevedore'],
      contenders(rec).map((n) => [n, mmm(rec[n]!.rps), mmm(rec[n]!.p50), mmm(rec[n]!.p99), String(Math.max(...rec[n]!.errors)), vs(rec, 'rps', n), vs(rec, 'p99', n, true)]),
    ),
    '',
  ];
}
