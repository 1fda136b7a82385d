// Faults a real registry will not produce on demand: a programmable upstream that resets the
// connection at chosen offsets, or stalls. The download resumes with Range from the bytes it has;
// when it cannot, every client's transfer fails and nothing is stored.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import t from 'tap';
import { filesOnceTempGone } from '../fixtures/oci-push.js';
import { request } from 'undici';
import { startStevedore } from '../fixtures/stevedore.js';

interface Fault {
  /** Reset the connection after sending this many bytes of the body (first request only per offset). */
  resetAt?: number[];
  /** Stop sending after this many bytes and keep the connection open. */
  stallAt?: number;
}

interface FaultyUpstream {
  url: string;
  gets: Array<{ range: string | undefined }>;
  close(): Promise<void>;
}

async function startFaultyUpstream(blob: Buffer, digest: string, fault: Fault): Promise<FaultyUpstream> {
  const resets = [...(fault.resetAt ?? [])];
  const gets: FaultyUpstream['gets'] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    if (req.url === '/v2/' || !req.url?.includes(`/blobs/${digest}`)) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}');
      return;
    }
    if (req.method === 'HEAD') {
      res.writeHead(200, { 'content-length': blob.length, 'docker-content-digest': digest }).end();
      return;
    }
    gets.push({ range: req.headers.range });
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) {
      start = Number(m[1]);
      res.writeHead(206, { 'content-length': blob.length - start, 'content-range': `bytes ${start}-${blob.length - 1}/${blob.length}` });
    } else {
      res.writeHead(200, { 'content-length': blob.length, 'docker-content-digest': digest });
    }
    const resetAt = resets.find((r) => r > start);
    if (resetAt !== undefined) {
      resets.splice(resets.indexOf(resetAt), 1);
      res.write(blob.subarray(start, resetAt), () => setTimeout(() => req.socket.resetAndDestroy(), 5));
      return;
    }
    if (fault.stallAt !== undefined) {
      res.write(blob.subarray(start, fault.stallAt)); // then nothing, connection open
      return;
    }
    res.end(blob.subarray(start));
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    gets,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

async function getAll(url: string): Promise<{ status: number; digest: string; bytes: number; error?: string }> {
  const res = await request(url);
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    for await (const c of res.body as AsyncIterable<Buffer>) {
      hash.update(c);
      bytes += c.length;
    }
  } catch (err) {
    return { status: res.statusCode, digest: '', bytes, error: (err as Error).message };
  }
  return { status: res.statusCode, digest: `sha256:${hash.digest('hex')}`, bytes };
}

const blob = randomBytes(4 * 1024 * 1024 + 123);
const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;

t.test('connection resets at 10 different offsets are resumed with Range and clients get the right bytes', async (t) => {
  const offsets = [1, 1000, 65_536, 65_537, 500_000, 1_048_576, 2_000_000, 3_000_001, 4_194_303, blob.length - 1];
  const up = await startFaultyUpstream(blob, digest, { resetAt: offsets });
  t.teardown(() => up.close());
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: up.url } },
    config: { cache: { downloadResumes: 12 } },
  });
  const url = `${sd.url}/v2/library/x/blobs/${digest}?ns=docker.io`;
  const results = await Promise.all([getAll(url), getAll(url), getAll(url)]);
  for (const r of results) {
    t.equal(r.error, undefined, 'transfer completed');
    t.equal(r.digest, digest, 'right bytes');
  }
  t.equal(up.gets.length, 1 + offsets.length, 'one request plus one resume per reset');
  t.equal(up.gets[0]!.range, undefined, 'first request asks for everything');
  // A reset may drop bytes still in flight, so a resume starts at or before the reset offset,
  // and never before the previous one.
  const starts = up.gets.slice(1).map((g) => Number(/^bytes=(\d+)-$/.exec(g.range ?? '')?.[1] ?? NaN));
  starts.forEach((s, i) => {
    t.ok(s > 0 && s <= offsets[i]!, `resume ${i + 1} asks for bytes=${s}- (reset at ${offsets[i]})`);
    if (i > 0) t.ok(s >= starts[i - 1]!, 'never goes back');
  });
  const files = await filesOnceTempGone(() => sd.storeFiles());
  t.ok(files.includes(`blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`), `stored (${files.join(', ')})`);
  t.notOk(files.some((f) => f.startsWith('tmp/')), 'no temp file left');
});

t.test('when resumes run out, every client transfer fails and nothing is stored', async (t) => {
  const up = await startFaultyUpstream(blob, digest, { resetAt: [100_000, 200_000, 300_000, 400_000] });
  t.teardown(() => up.close());
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: up.url } },
    config: { cache: { downloadResumes: 2 } },
  });
  const url = `${sd.url}/v2/library/x/blobs/${digest}?ns=docker.io`;
  const results = await Promise.all([getAll(url), getAll(url)]);
  for (const r of results) {
    t.equal(r.status, 200, 'headers had gone out');
    t.ok(r.error, `the transfer failed rather than ending short and clean (${r.error})`);
    t.ok(r.bytes < blob.length);
  }
  t.equal(up.gets.length, 3, 'first request + 2 resumes');
  await new Promise((r) => setTimeout(r, 50));
  const files = await sd.storeFiles();
  t.notOk(files.some((f) => f.startsWith('blobs/')), 'nothing stored');
  t.notOk(files.some((f) => f.startsWith('tmp/')), 'no temp file left');
});

t.test('a stalled upstream times out, then clients fail cleanly and nothing is stored', async (t) => {
  const up = await startFaultyUpstream(blob, digest, { stallAt: 1_000_000 });
  t.teardown(() => up.close());
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: up.url } },
    config: { timeouts: { idle: '300ms' }, cache: { downloadResumes: 1 } },
  });
  const url = `${sd.url}/v2/library/x/blobs/${digest}?ns=docker.io`;
  const started = performance.now();
  const r = await getAll(url);
  const ms = performance.now() - started;
  t.ok(r.error, 'the transfer failed');
  t.equal(r.bytes, 1_000_000 - 1, 'after the bytes the upstream did send, less the byte held back until verification');
  t.ok(ms < 5_000, `within the idle timeout and one resume (${ms.toFixed(0)} ms)`);
  t.equal(up.gets.length, 2, 'one resume was tried after the stall');
  await new Promise((r) => setTimeout(r, 50));
  t.notOk((await sd.storeFiles()).some((f) => f.startsWith('blobs/') || f.startsWith('tmp/')), 'nothing stored, no temp file');
  const log = sd.logs.find((l) => l.msg === 'download failed; nothing stored');
  t.ok(log, 'the failure was logged');
});
