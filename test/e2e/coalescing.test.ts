// One upstream fetch per digest, streamed to every waiting client as it arrives. The upstream is a
// real CNCF distribution behind a counting proxy that paces bodies like a slow link.
import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { request } from 'undici';
import { makeBlob, pushBlob } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore } from '../fixtures/stevedore.js';

const MiB = 1024 * 1024;

interface ClientResult {
  status: number;
  digest: string;
  bytes: number;
  firstByteAt: number;
  endAt: number;
}

/** GETs a URL, hashing the body as it streams; optionally reads at `bytesPerSecond`. */
async function fetchAndHash(url: string, opts: { bytesPerSecond?: number; signal?: AbortSignal } = {}): Promise<ClientResult> {
  const res = await request(url, { ...(opts.signal ? { signal: opts.signal } : {}) });
  const hash = createHash('sha256');
  let bytes = 0;
  let firstByteAt = 0;
  const started = performance.now();
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    if (!firstByteAt) firstByteAt = performance.now();
    hash.update(chunk);
    bytes += chunk.length;
    if (opts.bytesPerSecond) {
      const due = started + (bytes / opts.bytesPerSecond) * 1000;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    }
  }
  return { status: res.statusCode, digest: `sha256:${hash.digest('hex')}`, bytes, firstByteAt, endAt: performance.now() };
}

t.test('50 concurrent clients on one cold 100 MiB blob', async (t) => {
  // 100 MiB paced at 256 MiB/s; the clients share the CPU with the proxy (same process), so it runs slower.
  const reg = await startRegistry({ bytesPerSecond: 256 * MiB });
  t.teardown(() => reg.stop());
  const blob = makeBlob(randomBytes(100 * MiB), 'application/octet-stream');
  await pushBlob(reg.directUrl, 'library/big', blob);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } } });
  const url = `${sd.url}/v2/library/big/blobs/${blob.digest}?ns=docker.io`;

  reg.resetCounts();
  const results = await Promise.all(Array.from({ length: 50 }, () => fetchAndHash(url)));
  const upstreamGets = reg.requests.filter((q) => q.method === 'GET' && q.path.includes(blob.digest));

  t.equal(upstreamGets.length, 1, 'exactly one upstream GET for the digest');
  t.ok(results.every((r) => r.status === 200), 'every client got 200');
  t.ok(results.every((r) => r.digest === blob.digest && r.bytes === blob.size), 'every client got the right bytes');
  const downloadStart = upstreamGets[0]!.startedAt;
  const downloadEnd = upstreamGets[0]!.finishedAt!;
  const downloadMs = downloadEnd - downloadStart;
  const firstBytes = results.map((r) => r.firstByteAt - downloadStart).sort((a, b) => a - b);
  const worstFirstByte = firstBytes[firstBytes.length - 1]!;
  const medianFirstByte = firstBytes[Math.floor(firstBytes.length / 2)]!;
  t.comment(`upstream download ${downloadMs.toFixed(0)} ms; first byte: median client ${medianFirstByte.toFixed(0)} ms, last client ${worstFirstByte.toFixed(0)} ms`);
  // Clients are answered from the download in progress, not from the store after it. With several
  // workers on two busy cores, the last connections are accepted an event-loop turn of a busy worker
  // at a time (node:cluster hands a worker one connection per turn), so only the median is held to
  // the first half; every client must still have had bytes before the download ended.
  t.ok(medianFirstByte < downloadMs / 2, 'most clients had their first byte before the download was half done');
  t.ok(worstFirstByte < downloadMs, 'every client had its first byte while the download was still running');

  const again = await fetchAndHash(url);
  t.equal(again.digest, blob.digest);
  t.equal(upstreamGets.length, reg.requests.filter((q) => q.method === 'GET' && q.path.includes(blob.digest)).length, 'then served from the store');
});

t.test('a slow client does not slow a fast one on the same cold blob', async (t) => {
  const reg = await startRegistry({ bytesPerSecond: 64 * MiB });
  t.teardown(() => reg.stop());
  const blob = makeBlob(randomBytes(32 * MiB), 'application/octet-stream');
  await pushBlob(reg.directUrl, 'library/slowfast', blob);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } } });
  const url = `${sd.url}/v2/library/slowfast/blobs/${blob.digest}?ns=docker.io`;

  const slowAbort = new AbortController();
  const slow = fetchAndHash(url, { bytesPerSecond: 1 * MiB, signal: slowAbort.signal }).catch((err: unknown) => err);
  await new Promise((r) => setTimeout(r, 50));
  const fast = await fetchAndHash(url);
  const get = reg.requests.find((q) => q.method === 'GET' && q.path.includes(blob.digest))!;
  const downloadMs = get.finishedAt! - get.startedAt;
  const fastMs = fast.endAt - get.startedAt;
  t.comment(`upstream download ${downloadMs.toFixed(0)} ms; fast client done after ${fastMs.toFixed(0)} ms`);
  t.equal(fast.digest, blob.digest, 'fast client got the right bytes');
  t.ok(fastMs < downloadMs + 500, 'the fast client finished at upstream speed (the slow reader at 1 MiB/s would need 32 s)');
  t.equal(reg.count('GET', new RegExp(blob.digest)), 1, 'one upstream GET for both');

  // The slow client leaving cancels nothing: the blob is stored.
  slowAbort.abort();
  await slow;
  // On S3 the last byte goes out once the digest verified, a moment before the object is complete.
  await sd.app.pull.drain();
  const head = await fetch(url, { method: 'HEAD' });
  t.equal(head.headers.get('x-cache'), 'hit', 'stored');
});

t.test('the download finishes into the store after every client has gone', async (t) => {
  const reg = await startRegistry({ bytesPerSecond: 32 * MiB });
  t.teardown(() => reg.stop());
  const blob = makeBlob(randomBytes(8 * MiB), 'application/octet-stream');
  await pushBlob(reg.directUrl, 'library/abandoned', blob);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } } });
  const url = `${sd.url}/v2/library/abandoned/blobs/${blob.digest}?ns=docker.io`;
  const ac = new AbortController();
  const res = await request(url, { signal: ac.signal });
  for await (const _ of res.body) break; // first chunk, then hang up
  ac.abort();
  // 8 MiB at 32 MiB/s: ~250 ms; waiting for the download itself keeps this true on a busy machine.
  await sd.app.pull.drain();
  const head = await fetch(url, { method: 'HEAD' });
  t.equal(head.headers.get('x-cache'), 'hit', 'the blob was stored although nobody waited for it');
  t.equal(reg.count('GET', new RegExp(blob.digest)), 1);
});

t.test('with finishAbandonedDownloads off, the download stops when the last client goes', async (t) => {
  const reg = await startRegistry({ bytesPerSecond: 8 * MiB });
  t.teardown(() => reg.stop());
  const blob = makeBlob(randomBytes(8 * MiB), 'application/octet-stream');
  await pushBlob(reg.directUrl, 'library/dropped', blob);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    config: { cache: { finishAbandonedDownloads: false } },
  });
  const url = `${sd.url}/v2/library/dropped/blobs/${blob.digest}?ns=docker.io`;
  const ac = new AbortController();
  const res = await request(url, { signal: ac.signal });
  for await (const _ of res.body) break;
  ac.abort();
  await new Promise((r) => setTimeout(r, 1500)); // a full download would take 1 s
  const files = await sd.storeFiles();
  t.notOk(files.some((f) => f.endsWith(blob.digest.slice(7))), 'nothing stored');
  t.notOk(files.some((f) => f.startsWith('tmp/')), 'no temp file left');
});
