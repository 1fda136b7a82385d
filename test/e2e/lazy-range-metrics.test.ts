// stevedore_upstream_range_requests_total{upstream,outcome} (lazy pulling, issue 30): each way a
// client's Range past a cold blob's download can end is counted once, read back from /metrics. The
// upstream is a real CNCF distribution behind the counting proxy (paced like a slow link); a small
// server in front of it changes what the registry will not (ignoring Range, another range, a 503).
import { randomBytes } from 'node:crypto';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { makeBlob, pushBlob, type Blob } from '../fixtures/images.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { frontProxy, type FrontHandler } from '../fixtures/front-proxy.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const OUTCOMES = ['served', 'over_bound', 'ignored', 'bad_range', 'error'] as const;

/** The counter for each outcome of docker.io, from /metrics. */
async function outcomes(sd: Stevedore): Promise<Record<string, number | null>> {
  const text = await (await request(`${sd.url}/metrics`)).body.text();
  const out: Record<string, number | null> = Object.fromEntries(OUTCOMES.map((o) => [o, null]));
  for (const line of text.split('\n')) {
    const m = /^stevedore_upstream_range_requests_total\{([^}]*)\} (\S+)$/.exec(line);
    if (!m || !m[1]!.includes('upstream="docker.io"')) continue;
    const outcome = /outcome="([a-z_]+)"/.exec(m[1]!)?.[1];
    if (outcome) out[outcome] = Number(m[2]);
  }
  return out;
}

/** Every outcome 0 but those given. */
const only = (counts: Partial<Record<(typeof OUTCOMES)[number], number>>): Record<string, number> => Object.fromEntries(OUTCOMES.map((o) => [o, counts[o] ?? 0]));

async function getRange(url: string, start: number, end: number): Promise<{ status: number; body: Buffer | null }> {
  try {
    const res = await request(url, { headers: { range: `bytes=${start}-${end}` } });
    const chunks: Buffer[] = [];
    for await (const chunk of res.body as AsyncIterable<Buffer>) chunks.push(chunk);
    return { status: res.statusCode, body: Buffer.concat(chunks) };
  } catch {
    return { status: 0, body: null };
  }
}

/** A front to the upstream that answers blob GETs carrying a Range with `ranged` (the rest pass). */
function rangeProxy(t: Test, target: string, ranged: FrontHandler): Promise<string> {
  return frontProxy(t, target, (req, res, forward) => {
    if (req.headers.range !== undefined && req.url?.includes('/blobs/')) ranged(req, res, forward);
    else forward(req.headers.range);
  });
}

async function coldBlob(t: Test, size: number, front?: (reg: Registry) => Promise<string>): Promise<{ blob: Blob; sd: Stevedore; url: string }> {
  const reg = await startRegistry({ bytesPerSecond: 8 * MiB });
  t.teardown(() => reg.stop());
  const blob = makeBlob(randomBytes(size), 'application/octet-stream');
  await pushBlob(reg.directUrl, 'library/lazy', blob);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: front ? await front(reg) : reg.url } } });
  return { blob, sd, url: `${sd.url}/v2/library/lazy/blobs/${blob.digest}?ns=docker.io` };
}

t.test('a range served by a ranged upstream GET counts as served', async (t) => {
  const { blob, sd, url } = await coldBlob(t, 16 * MiB);
  t.same(await outcomes(sd), only({}), 'every outcome at 0 before');
  const got = await getRange(url, blob.size - 64 * KiB, blob.size - 1);
  t.equal(got.status, 206);
  t.ok(got.body?.equals(blob.data.subarray(blob.size - 64 * KiB)), 'exactly the last 64 KiB');
  t.same(await outcomes(sd), only({ served: 1 }));
});

t.test('ranges past the bound of ranged GETs per blob count as over_bound', async (t) => {
  const { blob, sd, url } = await coldBlob(t, 64 * MiB);
  // Twelve 2 MiB ranges at once (each a quarter second of the paced link): 8 ranged GETs at most.
  const ranges = Array.from({ length: 12 }, (_, i): [number, number] => [8 * MiB + i * 4 * MiB, 8 * MiB + i * 4 * MiB + 2 * MiB - 1]);
  const got = await Promise.all(ranges.map(([s, e]) => getRange(url, s, e)));
  t.ok(got.every((g, i) => g.status === 206 && g.body?.equals(blob.data.subarray(ranges[i]![0], ranges[i]![1] + 1))), 'every range has exactly its bytes');
  const counts = await outcomes(sd);
  t.ok((counts.over_bound ?? 0) >= 1, `${counts.over_bound} over the bound`);
  t.equal((counts.served ?? 0) + (counts.over_bound ?? 0), 12, 'the others served by the upstream');
  t.same({ ignored: counts.ignored, bad_range: counts.bad_range, error: counts.error }, { ignored: 0, bad_range: 0, error: 0 });
});

t.test('a range the upstream answers with the whole blob (200) counts as ignored', async (t) => {
  const { blob, sd, url } = await coldBlob(t, 16 * MiB, (reg) => rangeProxy(t, reg.url, (_req, _res, forward) => forward(undefined)));
  const got = await getRange(url, blob.size - 64 * KiB, blob.size - 1);
  t.equal(got.status, 206);
  t.ok(got.body?.equals(blob.data.subarray(blob.size - 64 * KiB)), 'exactly the last 64 KiB, from the download');
  t.same(await outcomes(sd), only({ ignored: 1 }));
});

t.test('a 206 for another range than asked counts as bad_range', async (t) => {
  const { blob, sd, url } = await coldBlob(t, 16 * MiB, (reg) =>
    rangeProxy(t, reg.url, (req, _res, forward) => {
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range!);
      forward(m ? `bytes=${Number(m[1]) + 1}-${Number(m[2]) + 1}` : req.headers.range);
    }),
  );
  const got = await getRange(url, blob.size - 64 * KiB - 10, blob.size - 11);
  t.ok(got.body === null || got.body.length < 64 * KiB, 'the answer was cut');
  t.same(await outcomes(sd), only({ bad_range: 1 }));
});

t.test('a ranged GET the upstream fails (503) counts as error, and the range follows the download', async (t) => {
  const { blob, sd, url } = await coldBlob(t, 16 * MiB, (reg) =>
    rangeProxy(t, reg.url, (_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'busy' }] }));
    }),
  );
  const got = await getRange(url, blob.size - 64 * KiB, blob.size - 1);
  t.equal(got.status, 206);
  t.ok(got.body?.equals(blob.data.subarray(blob.size - 64 * KiB)), 'exactly the last 64 KiB, from the download');
  t.same(await outcomes(sd), only({ error: 1 }));
});
