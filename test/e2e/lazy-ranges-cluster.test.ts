// Lazy pulling (issue 30) with more than one process: `server.workers: 2` on one host, and two
// replicas on one Redis and one shared store. Ranges on a cold blob arriving at each process are
// asked of the upstream at once, alongside the one whole-blob download the host or cluster makes.
// The upstream is a real CNCF distribution behind the counting proxy (paced like a slow link), with
// a front that answers whole-blob GETs 3 s late: a range answered before that did not wait for it.
import http from 'node:http';
import t, { type Test } from 'tap';
import { blobGets, MiB, startCluster, upstreamWith } from '../fixtures/cluster.js';
import { slowWholeBlobs } from '../fixtures/front-proxy.js';
import { makeBlob, pseudoRandom, type Blob } from '../fixtures/images.js';
import type { Registry } from '../fixtures/registry.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { tmpDir, waitFor } from '../fixtures/util.js';

// Processes started for each test: minutes on a busy 2-core machine.
t.setTimeout(10 * 60_000);

const KiB = 1024;
const LATE = 3000;

interface Got {
  status: number;
  contentRange: string | undefined;
  body: Buffer;
  /** ms to the first body byte, and to the end. */
  firstByteMs: number;
  ms: number;
}

/** A ranged GET on a connection of its own (workers take turns by connection). */
function getRange(url: string, start: number, end: number): Promise<Got> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false, headers: { range: `bytes=${start}-${end}` } }, (res) => {
        const chunks: Buffer[] = [];
        let firstByteMs = NaN;
        res.on('data', (c: Buffer) => {
          if (chunks.length === 0) firstByteMs = performance.now() - started;
          chunks.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, contentRange: res.headers['content-range'], body: Buffer.concat(chunks), firstByteMs, ms: performance.now() - started }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

/** Four ranges past the first MiB of the blob: a quarter in, the middle, three quarters, the last 64 KiB. */
function ranges(blob: Blob): Array<[number, number]> {
  return [
    [blob.size / 4, blob.size / 4 + 64 * KiB - 1],
    [blob.size / 2, blob.size / 2 + 64 * KiB - 1],
    [(blob.size * 3) / 4, (blob.size * 3) / 4 + 64 * KiB - 1],
    [blob.size - 64 * KiB, blob.size - 1],
  ];
}

/**
 * The answers carry exactly their bytes, started before the whole-blob GET was answered (a range
 * asked early ends once it was: its size is checked against it), and the upstream saw one
 * whole-blob GET plus the ranged ones.
 */
async function check(t: Test, reg: Registry, blob: Blob, asked: Array<[number, number]>, got: Got[]): Promise<void> {
  for (const [i, [s, e]] of asked.entries()) {
    const g = got[i]!;
    t.equal(g.status, 206, `bytes ${s}-${e}: 206`);
    t.equal(g.contentRange, `bytes ${s}-${e}/${blob.size}`, `bytes ${s}-${e}: Content-Range`);
    t.ok(g.body.equals(blob.data.subarray(s, e + 1)), `bytes ${s}-${e}: exactly those bytes`);
    t.ok(g.firstByteMs < LATE / 2, `bytes ${s}-${e}: first byte after ${g.firstByteMs.toFixed(0)} ms, before the whole-blob GET was answered (${LATE} ms)`);
  }
  await waitFor('the whole-blob download', async () => reg.requests.some((q) => q.method === 'GET' && q.path.includes(blob.digest) && q.headers.range === undefined && q.finishedAt !== undefined), 60_000);
  const gets = blobGets(reg, blob.digest);
  t.equal(gets.filter((g) => g.range === null).length, 1, 'one whole-blob GET');
  t.same(
    gets.filter((g) => g.range !== null).map((g) => g.range).sort(),
    asked.map(([s, e]) => `bytes=${s}-${e}`).sort(),
    'and one ranged GET for each range',
  );
}

t.test('with server.workers: 2, ranges on a cold blob through both workers are answered from the upstream at once, with one whole-blob GET for the host', async (t) => {
  const blob = makeBlob(pseudoRandom('lazy-workers', 16 * MiB), 'application/octet-stream');
  const reg = await upstreamWith(t, blob, 8 * MiB);
  const front = await slowWholeBlobs(t, reg.url, LATE);
  const p = await spawnStevedore(t, {
    upstreams: { 'docker.io': { url: front } },
    storage: { path: await tmpDir(t, 'stevedore-lazy-workers-') },
    cluster: { leaseTTL: '2s', pollInterval: '50ms' },
    server: { workers: 2 },
  });
  t.equal(p.logs.filter((l) => l.msg === 'stevedore listening').length, 2, 'two workers listening');
  const url = `${p.url}/v2/library/big/blobs/${blob.digest}?ns=docker.io`;
  const asked = ranges(blob);
  const got = await Promise.all(asked.map(([s, e]) => getRange(url, s, e)));
  await check(t, reg, blob, asked, got);
});

t.test('in cluster mode, ranges on a cold blob through both replicas are answered from the upstream at once, with one whole-blob GET for the cluster', async (t) => {
  const blob = makeBlob(pseudoRandom('lazy-cluster', 16 * MiB), 'application/octet-stream');
  const reg = await upstreamWith(t, blob, 8 * MiB);
  const front = await slowWholeBlobs(t, reg.url, LATE);
  const c = await startCluster(t, { replicas: 2, upstreamUrl: front });
  const asked = ranges(blob);
  // Alternately to each replica.
  const got = await Promise.all(asked.map(([s, e], i) => getRange(`${c.replicas[i % 2]!.url}/v2/library/big/blobs/${blob.digest}?ns=docker.io`, s, e)));
  await check(t, reg, blob, asked, got);
});
