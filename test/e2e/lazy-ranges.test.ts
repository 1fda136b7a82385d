// Lazy pulling (issue 30): a Range on a cold blob that the download cannot answer yet is asked of
// the upstream at once, while the whole-blob download goes on for the cache. The upstream is a real
// CNCF distribution behind the counting proxy, which paces bodies like a slow link.
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { makeBlob, pushBlob, type Blob } from '../fixtures/images.js';
import { startRegistry, type RecordedRequest, type Registry } from '../fixtures/registry.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { frontProxy, slowWholeBlobs } from '../fixtures/front-proxy.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface RangeResult {
  status: number;
  contentRange: string | undefined;
  body: Buffer;
  /** ms to the first body byte, and to the end. */
  firstByteMs: number;
  ms: number;
}

async function getRange(url: string, start: number, end: number): Promise<RangeResult> {
  const started = performance.now();
  const res = await request(url, { headers: { range: `bytes=${start}-${end}` } });
  const chunks: Buffer[] = [];
  let firstByteMs = NaN;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    if (chunks.length === 0) firstByteMs = performance.now() - started;
    chunks.push(chunk);
  }
  const cr = res.headers['content-range'];
  return { status: res.statusCode, contentRange: Array.isArray(cr) ? cr[0] : cr, body: Buffer.concat(chunks), firstByteMs, ms: performance.now() - started };
}

async function getWhole(url: string): Promise<{ status: number; cache: string | undefined; digest: string }> {
  const res = await request(url);
  const hash = createHash('sha256');
  for await (const chunk of res.body as AsyncIterable<Buffer>) hash.update(chunk);
  const cache = res.headers['x-cache'];
  return { status: res.statusCode, cache: Array.isArray(cache) ? cache[0] : cache, digest: `sha256:${hash.digest('hex')}` };
}

/** Upstream GETs of the digest: the whole-blob one(s) (no Range) and the ranged ones (`bytes=S-E`). */
function blobGets(reg: Registry, blob: Blob): { whole: RecordedRequest[]; ranged: RecordedRequest[] } {
  const gets = reg.requests.filter((q) => q.method === 'GET' && q.path.includes(blob.digest));
  return {
    whole: gets.filter((q) => q.headers.range === undefined),
    ranged: gets.filter((q) => typeof q.headers.range === 'string' && /^bytes=\d+-\d+$/.test(q.headers.range)),
  };
}

async function waitFor(what: string, cond: () => boolean, ms = 60_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function coldBlob(t: Test, size: number, bytesPerSecond: number, upstreamUrl?: (reg: Registry) => Promise<string>): Promise<{ reg: Registry; blob: Blob; sd: Stevedore; url: string }> {
  const reg = await startRegistry({ bytesPerSecond });
  t.teardown(() => reg.stop());
  const blob = makeBlob(randomBytes(size), 'application/octet-stream');
  await pushBlob(reg.directUrl, 'library/lazy', blob);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: upstreamUrl ? await upstreamUrl(reg) : reg.url } } });
  reg.resetCounts();
  return { reg, blob, sd, url: `${sd.url}/v2/library/lazy/blobs/${blob.digest}?ns=docker.io` };
}

t.test('a Range for the last 64 KiB of a cold blob is answered in a fraction of the whole download time', async (t) => {
  const { reg, blob, url } = await coldBlob(t, 64 * MiB, 8 * MiB);
  const tail = await getRange(url, blob.size - 64 * KiB, blob.size - 1);
  t.equal(tail.status, 206);
  await waitFor('the whole-blob download', () => blobGets(reg, blob).whole.some((q) => q.finishedAt !== undefined));
  const whole = blobGets(reg, blob).whole[0]!;
  const downloadMs = whole.finishedAt! - whole.startedAt;
  t.comment(`whole download ${downloadMs.toFixed(0)} ms; the last 64 KiB answered in ${tail.ms.toFixed(0)} ms`);
  t.ok(tail.ms < downloadMs * 0.25, `the range took ${tail.ms.toFixed(0)} ms, under 25 % of the ${downloadMs.toFixed(0)} ms download`);
});

t.test('ranges at the start, middle and end of a cold blob carry exactly those bytes', async (t) => {
  const { blob, url } = await coldBlob(t, 32 * MiB, 8 * MiB);
  const ranges: [number, number][] = [
    [0, 64 * KiB - 1],
    [16 * MiB, 16 * MiB + 64 * KiB - 1],
    [blob.size - 64 * KiB, blob.size - 1],
  ];
  const results = await Promise.all(ranges.map(([s, e]) => getRange(url, s, e)));
  for (const [i, [s, e]] of ranges.entries()) {
    const r = results[i]!;
    t.equal(r.status, 206, `bytes ${s}-${e}: 206`);
    t.equal(r.contentRange, `bytes ${s}-${e}/${blob.size}`, `bytes ${s}-${e}: Content-Range`);
    t.ok(r.body.equals(blob.data.subarray(s, e + 1)), `bytes ${s}-${e}: exactly those bytes`);
  }
});

t.test('the upstream sees one whole-blob GET plus one ranged GET per range the download could not answer yet', async (t) => {
  const { reg, blob, url } = await coldBlob(t, 32 * MiB, 8 * MiB);
  // The start follows the download; the middle and the end are asked of the upstream.
  await Promise.all([
    getRange(url, 0, 64 * KiB - 1),
    getRange(url, 16 * MiB, 16 * MiB + 64 * KiB - 1),
    getRange(url, blob.size - 64 * KiB, blob.size - 1),
  ]);
  await waitFor('the whole-blob download', () => blobGets(reg, blob).whole.some((q) => q.finishedAt !== undefined));
  const { whole, ranged } = blobGets(reg, blob);
  t.equal(whole.length, 1, 'one whole-blob GET');
  t.same(ranged.map((q) => q.headers.range).sort(), [`bytes=${16 * MiB}-${16 * MiB + 64 * KiB - 1}`, `bytes=${blob.size - 64 * KiB}-${blob.size - 1}`].sort(), 'a ranged GET for the middle and one for the end');
});

t.test('a cold blob read by ranges ends up stored and verified', async (t) => {
  const { reg, blob, url } = await coldBlob(t, 32 * MiB, 8 * MiB);
  const tail = await getRange(url, blob.size - 64 * KiB, blob.size - 1);
  t.equal(tail.status, 206);
  await waitFor('the whole-blob download', () => blobGets(reg, blob).whole.some((q) => q.finishedAt !== undefined));
  // The download lingers a moment after its last byte; then the store answers.
  let again = await getWhole(url);
  for (let i = 0; i < 100 && again.cache !== 'hit'; i++) {
    await new Promise((r) => setTimeout(r, 100));
    again = await getWhole(url);
  }
  t.equal(again.cache, 'hit', 'served from the store');
  t.equal(again.digest, blob.digest, 'the whole blob, verified');
  t.equal(blobGets(reg, blob).whole.length, 1, 'downloaded once');
});

/**
 * A server in front of the upstream that changes the Range header (`rewrite` returns the new one,
 * undefined: none, so the registry answers 200): the requests it saw.
 */
async function rangeRewritingProxy(t: Test, target: string, rewrite: (range: string) => string | undefined): Promise<{ url: string; seen: IncomingMessage[] }> {
  const seen: IncomingMessage[] = [];
  const url = await frontProxy(t, target, (req, _res, forward) => {
    seen.push(req);
    forward(req.headers.range === undefined ? undefined : rewrite(req.headers.range));
  });
  return { url, seen };
}

t.test('an upstream that ignores Range is not streamed as a range: the range follows the download', async (t) => {
  let seen: IncomingMessage[] = [];
  const { reg, blob, url } = await coldBlob(t, 16 * MiB, 8 * MiB, async (reg) => {
    const proxy = await rangeRewritingProxy(t, reg.url, () => undefined);
    seen = proxy.seen;
    return proxy.url;
  });
  const tail = await getRange(url, blob.size - 64 * KiB, blob.size - 1);
  t.equal(tail.status, 206);
  t.equal(tail.contentRange, `bytes ${blob.size - 64 * KiB}-${blob.size - 1}/${blob.size}`);
  t.ok(tail.body.equals(blob.data.subarray(blob.size - 64 * KiB)), 'exactly the last 64 KiB');
  t.equal(seen.filter((q) => q.headers.range === `bytes=${blob.size - 64 * KiB}-${blob.size - 1}`).length, 1, 'the upstream was asked for the range once');
  const whole = blobGets(reg, blob).whole;
  t.ok(whole.some((q) => q.finishedAt !== undefined), 'and the answer came from the download, once it had the bytes');
});

// The bound is a semaphore per digest: at most 8 ranged GETs run at a time; a range arriving while
// 8 run follows the download (one that arrives after some ended may take a freed place).
t.test('fifty ranges at once on a cold blob run at most 8 ranged GETs upstream at a time, the rest follow the download', async (t) => {
  const { reg, blob, url } = await coldBlob(t, 64 * MiB, 8 * MiB);
  const ranges = Array.from({ length: 50 }, (_, i): [number, number] => [8 * MiB + i * MiB, 8 * MiB + i * MiB + 256 * KiB - 1]);
  const results = await Promise.all(ranges.map(([s, e]) => getRange(url, s, e)));
  t.ok(
    results.every((r, i) => r.status === 206 && r.body.equals(blob.data.subarray(ranges[i]![0], ranges[i]![1] + 1))),
    'every range has exactly its bytes',
  );
  const { whole, ranged } = blobGets(reg, blob);
  t.equal(whole.length, 1, 'one whole-blob GET');
  t.ok(ranged.length >= 8 && ranged.length < 50, `${ranged.length} ranged GETs: 8 at least, and not one per range`);
  let most = 0;
  for (const q of ranged) most = Math.max(most, ranged.filter((o) => o.startedAt <= q.startedAt && (o.finishedAt ?? Infinity) > q.startedAt).length);
  t.ok(most <= 8, `at most 8 ranged GETs at a time (${most})`);
});

t.test('a 206 from the upstream for another range than asked is never passed on: the answer is cut', async (t) => {
  // The upstream answers every client range one byte further on (a 206 with its own Content-Range).
  const { blob, url } = await coldBlob(t, 16 * MiB, 8 * MiB, async (reg) => {
    const proxy = await rangeRewritingProxy(t, reg.url, (range) => {
      const m = /^bytes=(\d+)-(\d+)$/.exec(range);
      return m ? `bytes=${Number(m[1]) + 1}-${Number(m[2]) + 1}` : range;
    });
    return proxy.url;
  });
  const start = blob.size - 64 * KiB - 10;
  const end = blob.size - 11;
  const got = await getRange(url, start, end).catch((err: unknown) => err as Error);
  if (got instanceof Error) t.pass(`the answer failed: ${got.message}`);
  else t.ok(got.body.length < end - start + 1, `the answer was cut (${got.body.length} of ${end - start + 1} bytes)`);
});

t.test('a Range on a cold blob is asked of the upstream alongside the whole-blob GET, not after its answer', async (t) => {
  // The whole-blob GET is answered 3 s late; the ranged GET at once.
  const { blob, url } = await coldBlob(t, 16 * MiB, 8 * MiB, (reg) => slowWholeBlobs(t, reg.url, 3000));
  const tail = await getRange(url, blob.size - 64 * KiB, blob.size - 1);
  t.equal(tail.status, 206);
  t.equal(tail.contentRange, `bytes ${blob.size - 64 * KiB}-${blob.size - 1}/${blob.size}`);
  t.ok(tail.body.equals(blob.data.subarray(blob.size - 64 * KiB)), 'exactly the last 64 KiB');
  // Its last byte waits for the whole-blob GET's answer: the size announced from the ranged GET is
  // checked against it before the range is complete (lazy-ranges-early.test.ts).
  t.ok(tail.firstByteMs < 1500, `first byte after ${tail.firstByteMs.toFixed(0)} ms, before the whole-blob GET was answered (3 s)`);
});
