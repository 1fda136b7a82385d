// Lazy pulling (issue 30), the early path: a cold blob's Range is asked of the upstream alongside
// the whole-blob GET, not after its answer. Suffix (`bytes=-N`, a footer) and open-ended
// (`bytes=S-`) ranges too; an early 206 whose size the whole-blob GET contradicts is never completed;
// a client leaving while its early GET is pending stops that GET and frees its place in the bound.
// The upstream is a real CNCF distribution behind the counting proxy (paced like a slow link); a
// small front in it holds back or changes what the registry will not.
import { randomBytes } from 'node:crypto';
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { makeBlob, pushBlob, type Blob } from '../fixtures/images.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { frontProxy, slowWholeBlobs } from '../fixtures/front-proxy.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Got {
  status: number;
  contentRange: string | undefined;
  body: Buffer | null;
  /** ms to the answer's first body byte, and to its end. */
  firstByteMs: number;
  ms: number;
}

async function get(url: string, range: string, signal?: AbortSignal): Promise<Got> {
  const started = performance.now();
  let firstByteMs = NaN;
  try {
    const res = await request(url, { headers: { range }, signal });
    const chunks: Buffer[] = [];
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        if (chunks.length === 0) firstByteMs = performance.now() - started;
        chunks.push(chunk);
      }
    } catch {
      // Cut: what came is returned.
    }
    const cr = res.headers['content-range'];
    return { status: res.statusCode, contentRange: Array.isArray(cr) ? cr[0] : cr, body: Buffer.concat(chunks), firstByteMs, ms: performance.now() - started };
  } catch {
    return { status: 0, contentRange: undefined, body: null, firstByteMs, ms: performance.now() - started };
  }
}

async function rangeOutcome(sd: Stevedore, outcome: string): Promise<number> {
  const text = await (await request(`${sd.url}/metrics`)).body.text();
  const line = text.split('\n').find((l) => l.startsWith('stevedore_upstream_range_requests_total{') && l.includes('upstream="docker.io"') && l.includes(`outcome="${outcome}"`));
  return line ? Number(line.split(' ').pop()) : 0;
}

async function coldBlob(t: Test, size: number, front: (reg: Registry) => Promise<string>): Promise<{ reg: Registry; blob: Blob; sd: Stevedore; url: string }> {
  const reg = await startRegistry({ bytesPerSecond: 8 * MiB });
  t.teardown(() => reg.stop());
  const blob = makeBlob(randomBytes(size), 'application/octet-stream');
  await pushBlob(reg.directUrl, 'library/lazy', blob);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: await front(reg) } } });
  reg.resetCounts();
  return { reg, blob, sd, url: `${sd.url}/v2/library/lazy/blobs/${blob.digest}?ns=docker.io` };
}

/** GETs of the blob the registry saw: the whole-blob ones and the Range headers of the others. */
function blobGets(reg: Registry, blob: Blob): { whole: number; ranges: string[] } {
  const gets = reg.requests.filter((q) => q.method === 'GET' && q.path.includes(blob.digest));
  return { whole: gets.filter((q) => q.headers.range === undefined).length, ranges: gets.flatMap((q) => (typeof q.headers.range === 'string' ? [q.headers.range] : [])) };
}

async function waitFor(what: string, cond: () => boolean, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

t.test('a suffix range (bytes=-65536) on a cold blob is asked of the upstream alongside the whole-blob GET, not after its answer', async (t) => {
  // The whole-blob GET is answered 3 s late; the ranged GET at once.
  const { reg, blob, url } = await coldBlob(t, 16 * MiB, (reg) => slowWholeBlobs(t, reg.url, 3000));
  const got = await get(url, 'bytes=-65536');
  t.equal(got.status, 206);
  t.equal(got.contentRange, `bytes ${blob.size - 64 * KiB}-${blob.size - 1}/${blob.size}`);
  t.ok(got.body?.equals(blob.data.subarray(blob.size - 64 * KiB)), 'exactly the last 64 KiB');
  t.ok(got.firstByteMs < 1500, `first byte after ${got.firstByteMs.toFixed(0)} ms, before the whole-blob GET was answered (3 s)`);
  await waitFor('the whole-blob GET', () => blobGets(reg, blob).whole > 0);
  t.same(blobGets(reg, blob), { whole: 1, ranges: ['bytes=-65536'] }, 'one whole-blob GET plus the suffix');
});

t.test('an open-ended range (bytes=S-) past the margin on a cold blob is asked of the upstream alongside the whole-blob GET', async (t) => {
  const { reg, blob, url } = await coldBlob(t, 16 * MiB, (reg) => slowWholeBlobs(t, reg.url, 3000));
  const start = blob.size - 100 * KiB;
  const got = await get(url, `bytes=${start}-`);
  t.equal(got.status, 206);
  t.equal(got.contentRange, `bytes ${start}-${blob.size - 1}/${blob.size}`);
  t.ok(got.body?.equals(blob.data.subarray(start)), 'exactly the bytes from S to the end');
  t.ok(got.firstByteMs < 1500, `first byte after ${got.firstByteMs.toFixed(0)} ms, before the whole-blob GET was answered (3 s)`);
  await waitFor('the whole-blob GET', () => blobGets(reg, blob).whole > 0);
  t.same(blobGets(reg, blob), { whole: 1, ranges: [`bytes=${start}-`] }, 'one whole-blob GET plus the open-ended range');
});

t.test('a range from a client joining a download whose upstream has not answered yet is asked of the upstream at once, not after that answer', async (t) => {
  // A whole-blob client starts the download; the front holds its GET 3 s. A second client's range
  // arrives meanwhile: it joins that download, and its range goes to the upstream now.
  let wholeSeen!: () => void;
  const seen = new Promise<void>((resolve) => (wholeSeen = resolve));
  const { reg, blob, url } = await coldBlob(t, 16 * MiB, (reg) =>
    frontProxy(t, reg.url, (req, _res, forward) => {
      if (req.method === 'GET' && req.url?.includes('/blobs/') === true && req.headers.range === undefined) {
        wholeSeen();
        setTimeout(() => forward(undefined), 3000);
      } else forward(req.headers.range);
    }),
  );
  const whole = request(url).then(async (res) => ({ status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()) }));
  await seen;
  const start = blob.size / 2;
  const got = await get(url, `bytes=${start}-${start + 64 * KiB - 1}`);
  t.equal(got.status, 206);
  t.equal(got.contentRange, `bytes ${start}-${start + 64 * KiB - 1}/${blob.size}`);
  t.ok(got.body?.equals(blob.data.subarray(start, start + 64 * KiB)), 'exactly those 64 KiB');
  t.ok(got.firstByteMs < 1500, `first byte after ${got.firstByteMs.toFixed(0)} ms, before the whole-blob GET was answered (3 s)`);
  const w = await whole;
  t.equal(w.status, 200, 'the whole-blob client is answered');
  t.ok(w.body.equals(blob.data), 'with every byte');
  t.same(blobGets(reg, blob), { whole: 1, ranges: [`bytes=${start}-${start + 64 * KiB - 1}`] }, 'one whole-blob GET plus the range');
});

t.test('a suffix range answered with more than the last N bytes is never passed on: cut, counted as bad_range', async (t) => {
  // The front asks the registry for one byte more than the client's suffix: a 206 that is not the last N bytes.
  const { blob, sd, url } = await coldBlob(t, 16 * MiB, (reg) =>
    frontProxy(t, reg.url, (req, _res, forward) => {
      const m = /^bytes=-(\d+)$/.exec(req.headers.range ?? '');
      forward(m ? `bytes=-${Number(m[1]) + 1}` : req.headers.range);
    }),
  );
  const got = await get(url, 'bytes=-65536');
  t.ok(got.status !== 206 || (got.body?.length ?? 0) < 64 * KiB, `the answer was cut or refused (${got.status}, ${got.body?.length ?? 0} bytes)`);
  t.notOk(got.body?.equals(blob.data.subarray(blob.size - 64 * KiB - 1, blob.size - 1)), 'the wrong bytes were not sent');
  t.equal(await rangeOutcome(sd, 'bad_range'), 1, 'bad_range counted');
});

t.test('an early 206 whose blob size the later whole-blob GET contradicts is cut before its end, counted as bad_range', async (t) => {
  // The front answers ranged GETs at once with the registry's bytes but a Content-Range saying a
  // blob 1000 bytes longer; the whole-blob GET (the true size) comes 1.5 s later.
  const { blob, sd, url } = await coldBlob(t, 16 * MiB, (reg) =>
    frontProxy(t, reg.url, (req: IncomingMessage, res: ServerResponse, forward) => {
      if (req.headers.range === undefined || !req.url?.includes('/blobs/')) {
        if (req.method === 'GET' && req.url?.includes('/blobs/')) setTimeout(() => forward(undefined), 1500);
        else forward(req.headers.range);
        return;
      }
      const to = new URL(reg.url);
      const up = httpRequest({ host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        const headers = { ...answer.headers };
        if (typeof headers['content-range'] === 'string') headers['content-range'] = headers['content-range'].replace(/\/(\d+)$/, (_m, n: string) => `/${Number(n) + 1000}`);
        res.writeHead(answer.statusCode ?? 502, headers);
        answer.pipe(res);
      });
      up.on('error', () => res.destroy());
      up.end();
    }),
  );
  const start = blob.size - 64 * KiB;
  const got = await get(url, `bytes=${start}-${blob.size - 1}`);
  t.ok(got.status !== 206 || (got.body?.length ?? 0) < 64 * KiB, `the answer announced with the wrong size was not completed (${got.status}, ${got.body?.length ?? 0} bytes)`);
  t.equal(await rangeOutcome(sd, 'bad_range'), 1, 'bad_range counted');
});

// The nine clients each read another cold blob: nine downloads, each with its client's early GET.
t.test('clients that leave while their early ranged GETs are pending stop those GETs and free their places in the bound', async (t) => {
  // The front holds every whole-blob GET 10 s, and the first 9 ranged GETs for ever (until their
  // requester goes away); later ranged GETs pass at once.
  const held: { closed: boolean }[] = [];
  const reg = await startRegistry({ bytesPerSecond: 8 * MiB });
  t.teardown(() => reg.stop());
  const blobs = Array.from({ length: 10 }, () => makeBlob(randomBytes(4 * MiB), 'application/octet-stream'));
  for (const b of blobs) await pushBlob(reg.directUrl, 'library/lazy', b);
  const front = await frontProxy(t, reg.url, (req, res, forward) => {
    const blobGet = req.method === 'GET' && req.url?.includes('/blobs/') === true;
    if (blobGet && req.headers.range === undefined) {
      const timer = setTimeout(() => forward(undefined), 10_000);
      res.on('close', () => clearTimeout(timer));
    } else if (blobGet && held.length < 9) {
      const h = { closed: false };
      held.push(h);
      res.on('close', () => (h.closed = true));
    } else forward(req.headers.range);
  });
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: front } } });
  const urlOf = (b: Blob): string => `${sd.url}/v2/library/lazy/blobs/${b.digest}?ns=docker.io`;
  const tail = (b: Blob): string => `bytes=${b.size - 64 * KiB}-${b.size - 1}`;
  const left = await Promise.all(blobs.slice(0, 9).map((b) => get(urlOf(b), tail(b), AbortSignal.timeout(1000))));
  t.ok(left.every((g) => g.status === 0), 'the nine clients left before an answer');
  t.equal(held.length, 9, 'nine ranged GETs were sent early');
  await waitFor('the held ranged GETs to be closed', () => held.every((h) => h.closed), 3000).catch(() => undefined);
  t.equal(held.filter((h) => h.closed).length, 9, 'every pending ranged GET was stopped (its upstream connection closed) within 3 s');
  t.equal(sd.app.pull.ranges.running, 0, 'their places in the bound are free');
  const last = blobs[9]!;
  const next = await get(urlOf(last), tail(last));
  t.equal(next.status, 206, `the process keeps serving ${next.body?.toString().slice(0, 300)}`);
  t.ok(next.body?.equals(last.data.subarray(last.size - 64 * KiB)), 'exactly the last 64 KiB');
  // Its last byte waits for the whole-blob GET's answer (the size it announced is checked against it).
  t.ok(next.firstByteMs < 5000, `served early: first byte after ${next.firstByteMs.toFixed(0)} ms, before the whole-blob GET was answered (10 s)`);
});
