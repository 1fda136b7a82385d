/**
 * Scenario 8: clients that hang up on every warm contender — wrk ending its runs mid-body, raw
 * clients resetting a warm blob at a random byte, and, through the proxies, clients leaving a cold
 * blob while it downloads; each process must survive, and its descriptors and RSS come back.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { removeDir, tmpDir, waitFor } from '../../test/fixtures/util.js';
import { contentBlob, type BlobSpec } from '../lib/data.js';
import { answerProblem, fdsOf, hangupRound, rssOf } from '../lib/hangups.js';
import { contenders, med, MiB, mmm, num, ratio, sum, table, type Series, type Target } from '../lib/report.js';
import { pushGenerated } from '../lib/registry-api.js';
import { blobPath, defineScenario, hangupSeed, log, REPO_BIG, REPO_BLOBS, sideBySide, storeFile, warmServers } from '../lib/scenario.js';
import { assertAlive } from '../lib/servers.js';
import { median, prng } from '../lib/stats.js';
import { runWrk, writeWrkScript } from '../lib/wrk.js';

const REPO_HANGUP = 'bench/hangup';

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file) as AsyncIterable<Buffer>) h.update(c);
  return `sha256:${h.digest('hex')}`;
}

/** Blob sizes, then per contender one entry per run (rps: one per wrk run). */
export interface S8Result {
  wrkBlob: number;
  warmBlob: number;
  coldBlob: number;
  contenders: Record<
    string,
    {
      /** Alive, no defect, and answering afterwards (a death or a defect fails the whole benchmark). */
      survived: boolean[];
      /** Why it did not answer, when it did not. */
      problems: string[];
      rps: Series;
      wrkErrors: Series;
      /** Raw clients that hung up (warm and cold rounds), and how many were cut at their chosen byte. */
      hangups: Series;
      cut: Series;
      fdsBefore: Series;
      fdsAfter: Series;
      rssBefore: Series;
      rssAfter: Series;
      /** stevedore: the cold blob every client left is in its store, verified. */
      coldStored: boolean[];
    }
  >;
}

export default defineScenario<S8Result>({
  id: 's8',
  title: 'Clients that hang up',
  inDefaultRun: true,
  seeded: true,
  async run(ctx) {

    const w = await warmServers(ctx);
    const h = ctx.p.hangup;
    const wrkBlob = ctx.s2blobs[0]!;
    const candidates = [...ctx.s2blobs.map((b) => ({ repo: REPO_BLOBS, blob: b })), { repo: REPO_BIG, blob: ctx.big }];
    const warm = candidates.reduce((a, b) => (Math.abs(b.blob.size - h.warmSize) < Math.abs(a.blob.size - h.warmSize) ? b : a));
    const seed = hangupSeed();
    const rand = prng(seed);
    log(
      `s8: clients that hang up (HANGUP_SEED=${seed}): wrk -c${h.connections} -t${h.threads} -d${h.wrkDurationS}s ×${h.wrkRuns} on a ${wrkBlob.size}-byte blob; ` +
        `${h.rounds} round(s) of ${h.clients} clients resetting a ${warm.blob.size}-byte blob at a random byte; ` +
        `one round on a cold ${h.coldSize}-byte blob through each proxy (link ${h.coldLinkRate} B/s)`,
    );
    const dir = await tmpDir(undefined, 'stevedore-bench-wrk-');
    const out: S8Result = { wrkBlob: wrkBlob.size, warmBlob: warm.blob.size, coldBlob: h.coldSize, contenders: {} };
    try {
      // The blob GET ignores Accept.
      const script = await writeWrkScript(dir, '*/*');
      await sideBySide(
        ctx,
        w.all.map((s) => s.name),
        async (name, run) => {
          const s = w.all.find((x) => x.name === name)!;
          await sleep(h.settleMs);
          const fdsBefore = fdsOf(s);
          const rssBefore = rssOf(s);

          // Part A: wrk closes its connections mid-body when each run ends.
          const rps: number[] = [];
          let wrkErrors = 0;
          for (let i = 0; i < h.wrkRuns && s.exited() === null; i++) {
            const r = await runWrk({ url: `${s.url}${blobPath(REPO_BLOBS, wrkBlob.digest)}`, script, connections: h.connections, threads: h.threads, durationS: h.wrkDurationS });
            rps.push(r.rps);
            wrkErrors += r.errors;
          }

          // Part B: raw clients resetting at a random byte, on a warm blob...
          let hangups = 0;
          let cut = 0;
          for (let i = 0; i < h.rounds && s.exited() === null; i++) {
            const r = await hangupRound(s, blobPath(warm.repo, warm.blob.digest), warm.blob.size, h.clients, rand);
            hangups += r.clients;
            cut += r.cut;
          }
          // ... and, through a proxy, on a blob it has never seen, while it downloads it.
          let coldStored: boolean | null = null;
          let cold: BlobSpec | null = null;
          if (s !== w.nginx && s.exited() === null) {
            cold = contentBlob(`hangup/${name}/${run}/${randomBytes(8).toString('hex')}`, h.coldSize);
            await pushGenerated(ctx.upstream.directUrl, REPO_HANGUP, cold);
            ctx.upstream.setRate(h.coldLinkRate);
            try {
              const r = await hangupRound(s, blobPath(REPO_HANGUP, cold.digest), cold.size, h.clients, rand);
              hangups += r.clients;
              cut += r.cut;
            } finally {
              ctx.upstream.setRate(null);
            }
          }

          await sleep(h.settleMs);
          if (cold && s === w.stevedore) {
            // Every client left; the download goes on into the store all the same.
            const file = storeFile(w.stevedore.storage, cold.digest);
            const there = await waitFor('the cold blob in the store', async () => (await fsp.stat(file).catch(() => null))?.size === cold.size, 30_000, 100).then(
              () => true,
              () => false,
            );
            coldStored = there && (await sha256File(file)) === cold.digest;
            if (!coldStored) log(`s8: stevedore's store has no verified copy of the cold blob ${cold.digest}`);
          }
          const fdsAfter = fdsOf(s);
          const rssAfter = rssOf(s);
          // A process that died or logged a defect fails the benchmark here.
          await assertAlive(s);
          const problem = await answerProblem(s);
          if (problem) log(`s8: ${name} is alive but ${problem}`);
          log(
            `s8 run ${run + 1} ${name}: wrk ${median(rps).toFixed(0)} req/s (${wrkErrors} errors), ${hangups} clients hung up (${cut} at their byte), ` +
              `fds ${fdsBefore} → ${fdsAfter}, RSS ${(rssBefore / MiB).toFixed(1)} → ${(rssAfter / MiB).toFixed(1)} MiB${coldStored === null ? '' : `, cold blob stored: ${coldStored}`}`,
          );
          return { survived: problem === null, problem, rps, wrkErrors, hangups, cut, fdsBefore, fdsAfter, rssBefore, rssAfter, coldStored };
        },
        (name, r) => {
          const o = (out.contenders[name] ??= {
            survived: [],
            problems: [],
            rps: [],
            wrkErrors: [],
            hangups: [],
            cut: [],
            fdsBefore: [],
            fdsAfter: [],
            rssBefore: [],
            rssAfter: [],
            coldStored: [],
          });
          o.survived.push(r.survived);
          if (r.problem) o.problems.push(r.problem);
          o.rps.push(...r.rps);
          o.wrkErrors.push(r.wrkErrors);
          o.hangups.push(r.hangups);
          o.cut.push(r.cut);
          o.fdsBefore.push(r.fdsBefore);
          o.fdsAfter.push(r.fdsAfter);
          o.rssBefore.push(r.rssBefore);
          o.rssAfter.push(r.rssAfter);
          if (r.coldStored !== null) o.coldStored.push(r.coldStored);
        },
        false,
        h.runs,
      );
    } finally {
      await removeDir(dir);
    }
    return out;
  },
  report: {
    section(s8, { p }) {
      const L: string[] = [];
      const h = p.hangup;
      L.push(
        `## 8. Clients that hang up (wrk ${h.connections} connections, ${h.wrkDurationS} s × ${h.wrkRuns} in a row on a ${num(s8.wrkBlob / MiB, 2)} MiB blob; ` +
          `${h.rounds} round(s) of ${h.clients} clients resetting a ${num(s8.warmBlob / MiB, 2)} MiB blob; one round on a cold ${num(s8.coldBlob / MiB, 2)} MiB blob through each proxy)`,
        '',
      );
      const sRps = med(s8.contenders.stevedore?.rps);
      L.push(
        table(
          ['server', 'process survived', 'wrk req/s', 'req/s stevedore / this', 'wrk errors', 'clients hung up (at their byte)', 'open fds before → after', 'RSS MiB before → after', 'cold blob stored'],
          contenders(s8.contenders).map((n) => {
            const o = s8.contenders[n]!;
            const ok = o.survived.filter(Boolean).length;
            return [
              n,
              ok === o.survived.length ? 'yes' : `**no** (${o.survived.length - ok} of ${o.survived.length} runs: ${o.problems.join('; ')})`,
              mmm(o.rps),
              n === 'stevedore' ? '' : ratio(sRps, med(o.rps)),
              String(sum(o.wrkErrors)),
              `${sum(o.hangups).toLocaleString('en-US')} (${sum(o.cut).toLocaleString('en-US')})`,
              `${o.fdsBefore[0]} → ${o.fdsAfter.at(-1)}`,
              `${num(o.rssBefore[0]! / MiB, 1)} → ${num(o.rssAfter.at(-1)! / MiB, 1)}`,
              o.coldStored.length ? `${o.coldStored.filter(Boolean).length} of ${o.coldStored.length}` : '–',
            ];
          }),
        ),
        '',
        'Each contender in turn, warm, one set per run: open descriptors (`/proc/<pid>/fd`) and RSS, then wrk on the blob ' +
          `${h.wrkRuns} times in a row (each run ends by closing its ${h.connections} connections mid-body, as wrk does), then rounds of ${h.clients} raw clients at once, each ` +
          'GETting a warm blob and resetting the connection (TCP RST) at a random byte of the answer; through stevedore and distribution one more round on a blob pushed to ' +
          `the upstream just before, the link paced to ${num(h.coldLinkRate / MiB, 0)} MiB/s so that the clients leave while the proxy downloads it. After ${num(h.settleMs / 1000, 1)} s ` +
          'of quiet: descriptors and RSS again (first run\'s before → last run\'s after; nginx: its workers, summed), then the process must be alive, have logged no ' +
          'defect (else the benchmark fails) and answer (`GET /v2/` 200; nginx: `GET /` below 500). "cold blob stored": stevedore\'s store holds the cold blob afterwards, digest verified.',
        '',
      );
      return L;
    },
    targets(s8): Target[] {
      const out: Target[] = [];
      const sd = s8.contenders.stevedore;
      if (sd && sd.survived.length) {
        const ends = sd.rps.length;
        const clients = sum(sd.hangups);
        const all = sd.survived.every(Boolean);
        out.push({
          group: 'last',
          target: `8. stevedore survives every hang-up (wrk ends ×${ends}, ${clients.toLocaleString('en-US')} clients reset mid-body)`,
          measured: all ? 'survived, answering' : `did not answer: ${sd.problems.join('; ')}`,
          met: all,
        });
        const before = sd.fdsBefore[0]!;
        const after = sd.fdsAfter.at(-1)!;
        out.push({ group: 'last', target: '8. stevedore open fds back within +16 of before', measured: `${before} → ${after}`, met: after - before <= 16 });
        if (sd.coldStored.length) {
          out.push({
            group: 'last',
            target: '8. stevedore stores the cold blob that every client left mid-download',
            measured: `${sd.coldStored.filter(Boolean).length} of ${sd.coldStored.length} run(s), digest verified`,
            met: sd.coldStored.every(Boolean),
          });
        }
      }
      return out;
    },
  },
});
