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
 *                for before lazy pulling);
 *   - distribution: CNCF distribution in proxy mode (bench/lib/servers.ts startDistribution, as
 *                `npm run bench` starts it) in front of the same upstream, both blobs cold for it:
 *                the same last 64 KiB, then the same ten ranges. On a blob it does not hold,
 *                distribution answers a Range with the whole blob (200) as it streams it from the
 *                upstream: the range's first byte is timed when the stream reaches it, and the
 *                connection is closed after its last byte (a snapshotter wants no more).
 *
 * Times are to the first byte and to the last byte of the answer, from the request. With `rttMs`,
 * every request to the upstream (stevedore's and the direct one) waits that long before it is
 * forwarded, like a link with that round-trip time (the localhost one is well under a millisecond).
 *
 *   npm run build && TAP_TIMEOUT=0 TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import bench/lazy-range.ts [sizeMiB] [mibps] [runs] [rttMs]
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { frontProxy } from '../test/fixtures/front-proxy.js';
import { makeBlob, pushBlob, type Blob } from '../test/fixtures/images.js';
import { startRegistry } from '../test/fixtures/registry.js';
import { spawnStevedore } from '../test/fixtures/stevedore-process.js';
import { startDistribution } from './lib/servers.js';

const MiB = 1024 * 1024;
const sizeMiB = Number(process.argv[2] ?? 256);
const mibps = Number(process.argv[3] ?? 32);
const runs = Number(process.argv[4] ?? 3);
const rttMs = Number(process.argv[5] ?? 0);
const teardowns: Array<() => unknown> = [];
const t = { teardown: (fn: () => unknown) => void teardowns.push(fn), fail: (m: string) => console.error(`FAIL ${m}`) };

/**
 * Time to the first and the last byte of a ranged GET (ms), checking the bytes. A 200 (the whole
 * blob, `wholeOk`: distribution on a blob it does not hold) is read up to the range's bytes, timed
 * when they come, and closed after the last one.
 */
async function timedRange(url: string, blob: Blob, start: number, end: number, wholeOk = false): Promise<{ t0: number; first: number; last: number }> {
  const t0 = performance.now();
  const res = await request(url, { headers: { range: `bytes=${start}-${end}` } });
  const skip = res.statusCode === 200 && wholeOk ? start : 0;
  const want = end - start + 1;
  let first = 0;
  let at = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    const from = Math.max(0, skip - at);
    at += chunk.length;
    if (from >= chunk.length) continue;
    if (!first) first = performance.now() - t0;
    chunks.push(chunk.subarray(from));
    if (at - skip >= want) break;
  }
  const last = performance.now() - t0;
  res.body.destroy();
  const got = Buffer.concat(chunks).subarray(0, want);
  if ((res.statusCode !== 206 && !skip && !(wholeOk && res.statusCode === 200)) || !got.equals(blob.data.subarray(start, end + 1))) {
    throw new Error(`${url}: bytes ${start}-${end} answered ${res.statusCode} with other bytes`);
  }
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
  // Stevedore's store (two blobs of sizeMiB per run): removed once stevedore stopped.
  teardowns.push(() => rm(dir, { recursive: true, force: true }));
  const sd = await spawnStevedore(t, { upstreams: { 'docker.io': { url: upstream } }, storage: { path: path.join(dir, 'store') } });
  const dist = await startDistribution(upstream);
  teardowns.push(() => dist.stop());
  const rows: Record<string, number[]> = {
    directFirst: [],
    directLast: [],
    tailFirst: [],
    tailLast: [],
    randomFirst: [],
    randomLast: [],
    whole: [],
    wholeAsked: [],
    rangeAsked: [],
    distTailFirst: [],
    distTailLast: [],
    distRandomFirst: [],
    distRandomLast: [],
    directRandomFirst: [],
    directRandomLast: [],
    firstRandomFirst: [],
    distFirstRandomFirst: [],
  };
  let distStatus = '';
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
    const starts = Array.from({ length: 10 }, () => Math.floor(Math.random() * (b.size - MiB)));
    for (const start of starts) {
      const r = await timedRange(`${sd.url}/v2/library/lazy/blobs/${b.digest}?ns=docker.io`, b, start, start + MiB - 1);
      rows.randomFirst!.push(r.first);
      rows.randomLast!.push(r.last);
      if (start === starts[0]) rows.firstRandomFirst!.push(r.first);
      const d = await timedRange(`${upstream}/v2/library/lazy/blobs/${b.digest}`, b, start, start + MiB - 1);
      rows.directRandomFirst!.push(d.first);
      rows.directRandomLast!.push(d.last);
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
    // Distribution (proxy mode), once stevedore's downloads ended: both blobs cold for it.
    const dt = await timedRange(`${dist.url}/v2/library/lazy/blobs/${a.digest}`, a, ...tail, true);
    rows.distTailFirst!.push(dt.first);
    rows.distTailLast!.push(dt.last);
    for (const start of starts) {
      const r = await timedRange(`${dist.url}/v2/library/lazy/blobs/${b.digest}`, b, start, start + MiB - 1, true);
      rows.distRandomFirst!.push(r.first);
      rows.distRandomLast!.push(r.last);
      if (start === starts[0]) rows.distFirstRandomFirst!.push(r.first);
    }
    const probe = await request(`${dist.url}/v2/library/lazy/blobs/${b.digest}`, { headers: { range: 'bytes=0-0' } });
    probe.body.destroy();
    distStatus = `after the run distribution answers a 1-byte Range on the second blob with ${probe.statusCode}`;
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
  console.log(`| random 1 MiB ranges, direct ranged GET to the upstream | ${fmt(median(rows.directRandomFirst!))} | ${fmt(median(rows.directRandomLast!))} |`);
  console.log(`| last 64 KiB through distribution (proxy mode), cold | ${fmt(median(rows.distTailFirst!))} | ${fmt(median(rows.distTailLast!))} |`);
  console.log(`| random 1 MiB ranges through distribution (proxy mode), cold blob | ${fmt(median(rows.distRandomFirst!))} | ${fmt(median(rows.distRandomLast!))} |`);
  console.log(`| the first of the ten ranges (the blob cold), first byte: stevedore / distribution | ${fmt(median(rows.firstRandomFirst!))} / ${fmt(median(rows.distFirstRandomFirst!))} | |`);
  console.log(`| the whole-blob download (what a range waited for before) | | ${fmt(median(rows.whole!))} |`);
  console.log(`\n${distStatus}`);
} finally {
  for (const fn of teardowns.reverse()) await fn();
}
