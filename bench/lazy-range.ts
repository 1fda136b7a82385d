/**
 * Issue 30, item 2 (lazy pulling): how soon a Range on a cold blob is answered over a slow upstream
 * link. A real distribution behind the test registry's counting proxy, paced at `mibps` MiB/s; one
 * `stevedore serve` process (dist/: `npm run build` first). For each run a fresh cold blob of
 * `sizeMiB` MiB, and:
 *
 *   - direct:    a ranged GET of the blob's last 64 KiB to the upstream itself (the floor);
 *   - stevedore: the same Range through stevedore, the blob cold (the whole-blob download starts
 *                with it); then ten random 1 MiB ranges on another cold blob, one after another;
 *   - whole:     how long stevedore's whole-blob download of that blob took (what a Range waited
 *                for before lazy pulling).
 *
 * Times are to the first byte and to the last byte of the answer, from the request. With `rttMs`,
 * every request to the upstream (stevedore's and the direct one) waits that long before it is
 * forwarded, like a link with that round-trip time (the localhost one is well under a millisecond).
 *
 *   npm run build && TAP_TIMEOUT=0 TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import bench/lazy-range.ts [sizeMiB] [mibps] [runs] [rttMs]
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { frontProxy } from '../test/fixtures/front-proxy.js';
import { makeBlob, pushBlob, type Blob } from '../test/fixtures/images.js';
import { startRegistry } from '../test/fixtures/registry.js';
import { spawnStevedore } from '../test/fixtures/stevedore-process.js';

const MiB = 1024 * 1024;
const sizeMiB = Number(process.argv[2] ?? 256);
const mibps = Number(process.argv[3] ?? 32);
const runs = Number(process.argv[4] ?? 3);
const rttMs = Number(process.argv[5] ?? 0);
const teardowns: Array<() => unknown> = [];
const t = { teardown: (fn: () => unknown) => void teardowns.push(fn), fail: (m: string) => console.error(`FAIL ${m}`) };

/** Time to the first and the last byte of a ranged GET (ms), checking the bytes. */
async function timedRange(url: string, blob: Blob, start: number, end: number): Promise<{ t0: number; first: number; last: number }> {
  const t0 = performance.now();
  const res = await request(url, { headers: { range: `bytes=${start}-${end}` } });
  let first = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    if (!first) first = performance.now() - t0;
    chunks.push(chunk);
  }
  const last = performance.now() - t0;
  if (res.statusCode !== 206 || !Buffer.concat(chunks).equals(blob.data.subarray(start, end + 1))) throw new Error(`${url}: bytes ${start}-${end} answered ${res.statusCode} with other bytes`);
  return { t0, first, last };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};
const fmt = (ms: number): string => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);

try {
  const reg = await startRegistry({ bytesPerSecond: mibps * MiB });
  teardowns.push(() => reg.stop());
  const upstream = rttMs > 0 ? await frontProxy(t, reg.url, (req, _res, forward) => setTimeout(() => forward(req.headers.range), rttMs)) : reg.url;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'lazy-range-bench-'));
  const sd = await spawnStevedore(t, { upstreams: { 'docker.io': { url: upstream } }, storage: { path: path.join(dir, 'store') } });
  const rows: Record<string, number[]> = { directFirst: [], directLast: [], tailFirst: [], tailLast: [], randomFirst: [], randomLast: [], whole: [], wholeAsked: [], rangeAsked: [] };
  for (let run = 0; run < runs; run++) {
    const a = makeBlob(randomBytes(sizeMiB * MiB), 'application/octet-stream');
    const b = makeBlob(randomBytes(sizeMiB * MiB), 'application/octet-stream');
    await pushBlob(reg.directUrl, 'library/lazy', a);
    await pushBlob(reg.directUrl, 'library/lazy', b);
    const tail: [number, number] = [a.size - 64 * 1024, a.size - 1];
    const direct = await timedRange(`${upstream}/v2/library/lazy/blobs/${a.digest}`, a, ...tail);
    rows.directFirst!.push(direct.first);
    rows.directLast!.push(direct.last);
    reg.resetCounts();
    const through = await timedRange(`${sd.url}/v2/library/lazy/blobs/${a.digest}?ns=docker.io`, a, ...tail);
    rows.tailFirst!.push(through.first);
    rows.tailLast!.push(through.last);
    for (let i = 0; i < 10; i++) {
      const start = Math.floor(Math.random() * (b.size - MiB));
      const r = await timedRange(`${sd.url}/v2/library/lazy/blobs/${b.digest}?ns=docker.io`, b, start, start + MiB - 1);
      rows.randomFirst!.push(r.first);
      rows.randomLast!.push(r.last);
    }
    // The whole-blob download of `a` (no Range header), once finished.
    for (;;) {
      const whole = reg.requests.find((q) => q.method === 'GET' && q.path.includes(a.digest) && q.headers.range === undefined && q.finishedAt !== undefined);
      const other = reg.requests.find((q) => q.method === 'GET' && q.path.includes(b.digest) && q.headers.range === undefined && q.finishedAt !== undefined);
      if (whole && other) {
        rows.whole!.push(whole.finishedAt! - whole.startedAt);
        // When the upstream saw the whole-blob GET and the ranged GET, from the client's request.
        const ranged = reg.requests.find((q) => q.method === 'GET' && q.path.includes(a.digest) && q.headers.range !== undefined);
        rows.wholeAsked!.push(whole.startedAt - through.t0);
        rows.rangeAsked!.push((ranged?.startedAt ?? NaN) - through.t0);
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    console.error(
      `run ${run + 1}/${runs}: direct ${fmt(direct.first)}, through stevedore ${fmt(through.first)} (first byte of the last 64 KiB; upstream asked for the whole blob at +${fmt(rows.wholeAsked!.at(-1)!)}, for the range at +${fmt(rows.rangeAsked!.at(-1)!)})`,
    );
  }
  console.log(`cold ${sizeMiB} MiB blob, upstream paced at ${mibps} MiB/s, ${rttMs} ms added to each upstream request, ${runs} runs (medians; random ranges: ${runs * 10} of 1 MiB)\n`);
  console.log('| measure | first byte | last byte |');
  console.log('|---|---|---|');
  console.log(`| last 64 KiB, direct ranged GET to the upstream | ${fmt(median(rows.directFirst!))} | ${fmt(median(rows.directLast!))} |`);
  console.log(`| last 64 KiB through stevedore, cold | ${fmt(median(rows.tailFirst!))} | ${fmt(median(rows.tailLast!))} |`);
  console.log(`| the upstream receives the whole-blob GET / the ranged GET, from the cold Range's request | ${fmt(median(rows.wholeAsked!))} / ${fmt(median(rows.rangeAsked!))} | |`);
  console.log(`| random 1 MiB ranges through stevedore, cold blob | ${fmt(median(rows.randomFirst!))} | ${fmt(median(rows.randomLast!))} |`);
  console.log(`| the whole-blob download (what a range waited for before) | | ${fmt(median(rows.whole!))} |`);
} finally {
  for (const fn of teardowns.reverse()) await fn();
}
