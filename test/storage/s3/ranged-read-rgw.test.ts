// Large blobs on the S3 backend are read by parallel ranged GETs (lib/storage/s3/ranged-reader.ts)
// from a real Ceph RADOS Gateway (test/fixtures/ceph.ts) and answered through the real HTTP edge
// (server/blob-response.ts): the bytes, whole and by ranges; which GETs reached the gateway; the
// memory budget shared by concurrent clients; and what a client hanging up leaves behind (budget,
// sockets to the gateway). In `npm run test:s3`.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import t, { type Test } from 'tap';
import { parseDigest, type Digest } from '../../../lib/oci/digest.js';
import type { PullThrough } from '../../../lib/cache/pull-through.js';
import { sendBlob } from '../../../lib/server/blob-response.js';
import { Metrics } from '../../../lib/server/metrics.js';
import type { BlobStore } from '../../../lib/storage/blob-store.js';
import { pooledGetSockets, SLAB } from '../../../lib/storage/s3/pooled-get.js';
import { S3Backend } from '../../../lib/storage/s3/s3-backend.js';
import { createS3Client, type S3Settings } from '../../../lib/storage/s3/s3-client.js';
import { s3Client, s3Storage } from '../../fixtures/s3.js';
import { tmpDir } from '../../fixtures/util.js';

const MiB = 1024 * 1024;
const PART = 4 * MiB;

interface Setup {
  backend: S3Backend;
  /** The S3 client's pool of connections to the gateway. */
  agent: http.Agent;
  /** GetObject requests sent to the gateway: their Range ('' for none) and If-Match. */
  gets: Array<{ range: string; ifMatch: string }>;
  /** Of those, the ones sent through the SDK's client (the others: pooled-get.ts). */
  sdkGets: () => number;
  url: string;
  /** Requests being answered now. */
  answering: () => number;
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** An object of the bucket stored under `data`'s digest, as the backend stores a blob. */
async function putBlob(s: Awaited<ReturnType<typeof s3Storage>>, data: Buffer): Promise<Digest> {
  const hex = sha(data);
  await s3Client(s).send(new PutObjectCommand({ Bucket: s.bucket, Key: `blobs/sha256/${hex.slice(0, 2)}/${hex}`, Body: data }));
  return parseDigest(`sha256:${hex}`);
}

/** The backend on a new bucket, parallel reads from 8 MiB in parts of 4 MiB, 4 at once; an HTTP server answering GET /<digest> as the registry edge does. */
async function setup(t: Test, blobs: Buffer[], read: Partial<S3Settings> = {}): Promise<Setup & { digests: Digest[] }> {
  const s = await s3Storage();
  const digests: Digest[] = [];
  for (const b of blobs) digests.push(await putBlob(s, b));
  const settings: S3Settings = {
    ...s,
    prefix: '',
    accessKeyIdFile: null,
    secretAccessKeyFile: null,
    sse: null,
    sseKmsKeyId: null,
    redirect: false,
    redirectTTL: 60_000,
    partSize: 5 * MiB,
    readThreshold: 8 * MiB,
    readPartSize: PART,
    readConcurrency: 4,
    readMemory: 64 * MiB,
    ...read,
  };
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const client = createS3Client(settings, { http: agent });
  const gets: Setup['gets'] = [];
  let sdkGets = 0;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      if (context.commandName === 'GetObjectCommand') {
        const input = args.input as { Range?: string; IfMatch?: string };
        gets.push({ range: input.Range ?? '', ifMatch: input.IfMatch ?? '' });
        sdkGets++;
      }
      return next(args);
    },
    // At the deserialize step: requests sent (a presigned URL's signing stops before it).
    { step: 'deserialize' },
  );
  // Parts are asked through the SDK's client (open(), the first part) or received into pooled memory (sendTo(): pooled-get.ts): both counted.
  const backend = new S3Backend(await tmpDir(t, 'stevedore-s3-ranged-'), settings, { client, onPooledGet: (g) => gets.push(g) });
  await backend.open({ sweep: false });
  t.teardown(() => backend.close());
  let answering = 0;
  const server = http.createServer((req, res) => {
    answering++;
    res.once('close', () => answering--);
    const d = digests.find((x) => req.url === `/${x.value}`)!;
    const size = blobs[digests.indexOf(d)]!.length;
    void (async () => {
      const body = await backend.read(d, size, () => undefined);
      await sendBlob(res, req.headers.range, {}, body!, {});
    })().catch(() => res.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { backend, agent, gets, sdkGets: () => sdkGets, digests, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, answering: () => answering };
}

/** GET with an optional Range; `slowMs` between chunks read. */
function get(url: string, headers: Record<string, string> = {}, slowMs = 0): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          chunks.push(c);
          if (slowMs) {
            res.pause();
            setTimeout(() => res.resume(), slowMs);
          }
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

/** GETs the blob and hangs up (destroys the socket) after `after` bytes (0: right after the headers). */
function hangUp(url: string, after: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      let n = 0;
      if (after === 0) {
        req.destroy();
        return resolve(0);
      }
      res.on('data', (c: Buffer) => {
        n += c.length;
        if (n >= after) {
          req.destroy();
          resolve(n);
        }
      });
      res.on('error', () => undefined);
    });
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
  });
}

/** Sockets of the S3 client in use (not idle in the pool). */
function busySockets(agent: http.Agent): number {
  return Object.values(agent.sockets).reduce((n, l) => n + (l?.length ?? 0), 0);
}

async function settled(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const big = randomBytes(18 * MiB + 12_345);

t.test('a large blob comes byte for byte, whole and by ranges (first byte, middle, last byte, suffix), by ranged GETs of its parts', async (t) => {
  const u = await setup(t, [big]);
  const path = `${u.url}/${u.digests[0]!.value}`;
  const whole = await get(path);
  t.equal(whole.status, 200);
  t.equal(whole.headers['content-length'], String(big.length));
  t.equal(sha(whole.body), sha(big), 'the whole blob: its digest');
  const parts = Math.ceil(big.length / PART);
  t.equal(u.gets.length, parts, `${parts} GETs, one per part of 4 MiB`);
  t.ok(u.gets.every((g) => /^bytes=\d+-\d+$/.test(g.range)), 'every one ranged');
  t.ok(u.gets.slice(1).every((g) => g.ifMatch !== '' && g.ifMatch === u.gets[1]!.ifMatch), 'the parts after the first asked If-Match the first answer\'s ETag');
  t.equal(u.sdkGets(), 0, 'every part, the first included, received into pooled memory: none through the SDK');

  for (const [range, start, end] of [
    ['bytes=0-0', 0, 0],
    ['bytes=5000000-12345678', 5_000_000, 12_345_678],
    [`bytes=${big.length - 1}-${big.length - 1}`, big.length - 1, big.length - 1],
    ['bytes=-6000000', big.length - 6_000_000, big.length - 1],
    [`bytes=${PART - 1}-${PART}`, PART - 1, PART],
  ] as const) {
    u.gets.length = 0;
    const r = await get(path, { Range: range });
    t.equal(r.status, 206, range);
    t.equal(r.headers['content-range'], `bytes ${start}-${end}/${big.length}`);
    t.equal(sha(r.body), sha(big.subarray(start, end + 1)), `${range}: exactly those bytes`);
    // The GET that found the object (its first part), then the range's parts (that first answer
    // is used when the range starts at 0).
    const rangeParts = Math.ceil((end - start + 1) / PART);
    t.equal(u.gets.length, start === 0 && end >= PART - 1 ? rangeParts : 1 + rangeParts, `${range}: ${u.gets.length} GETs`);
  }
  t.equal(u.backend.readBudget.stats().inUse, 0, 'no budget held');
  // The parts after the first were received into pooled slabs (pooled-get.ts): every one of them is
  // back in the pool once its bytes were written to the client.
  // (Past 16 MiB, slabs given back are dropped rather than kept.)
  await settled('the slabs back', () => u.backend.slabs.stats().pooled === Math.min(u.backend.slabs.stats().allocated * SLAB, 16 * MiB));
  t.ok(u.backend.slabs.stats().allocated > 0, `${u.backend.slabs.stats().allocated} slabs used`);
  t.ok(u.backend.slabs.stats().allocated * SLAB <= 4 * PART + 4 * SLAB, 'no more than the parts in flight at once');
  t.ok(u.backend.slabs.stats().pooled <= 16 * MiB, 'at most 16 MiB of them kept for reuse');
});

t.test('a large blob gone from the bucket: the first GET (into pooled memory) finds it missing, and read() says so (null), asking the SDK nothing', async (t) => {
  const u = await setup(t, [big]);
  await u.backend.bucket.s3.send(new DeleteObjectCommand({ Bucket: u.backend.bucket.settings.bucket, Key: u.backend.bucket.blobKey(u.digests[0]!) }));
  u.gets.length = 0;
  t.equal(await u.backend.read(u.digests[0]!, big.length, () => undefined), null);
  t.same(u.gets, [{ range: `bytes=0-${PART - 1}`, ifMatch: '' }], 'one GET, of the first part');
  t.equal(u.sdkGets(), 0);
  await settled('its connection closed', () => pooledGetSockets() === 0);
});

t.test('a small blob (below readThreshold) is read by one GET, taking no budget', async (t) => {
  const small = randomBytes(3 * MiB);
  const u = await setup(t, [small]);
  const r = await get(`${u.url}/${u.digests[0]!.value}`);
  t.equal(sha(r.body), sha(small));
  t.same(u.gets, [{ range: '', ifMatch: '' }], 'one GET of the whole object');
  t.equal(u.backend.readBudget.stats().peak, 0, 'no budget taken');
});

t.test('readConcurrency auto with pooled reads: a small blob (below readThreshold) is one GET into pooled memory too, and an empty one goes through the SDK', async (t) => {
  const small = randomBytes(3 * MiB);
  const empty = Buffer.alloc(0);
  const u = await setup(t, [small, empty], { readConcurrency: 'auto' });
  const whole = await get(`${u.url}/${u.digests[0]!.value}`);
  t.equal(sha(whole.body), sha(small), 'byte for byte');
  t.same(u.gets, [{ range: `bytes=0-${small.length - 1}`, ifMatch: '' }], 'one GET, of the whole object');
  t.equal(u.sdkGets(), 0, 'received into pooled memory, not through the SDK');
  u.gets.length = 0;
  const r = await get(`${u.url}/${u.digests[0]!.value}`, { Range: 'bytes=1000-99999' });
  t.equal(r.status, 206);
  t.equal(sha(r.body), sha(small.subarray(1000, 100_000)), 'a range of it');
  t.equal(u.sdkGets(), 0, 'that too');
  // A ranged GET of an empty object is refused (416): it is read as it always was.
  u.gets.length = 0;
  const e = await get(`${u.url}/${u.digests[1]!.value}`);
  t.equal(e.status, 200);
  t.equal(e.body.length, 0, 'the empty blob');
  t.same(u.gets, [{ range: '', ifMatch: '' }], 'one GET through the SDK');
  t.equal(u.backend.readBudget.stats().peak, 0, 'no budget taken');
  await settled('sockets closed', () => pooledGetSockets() === 0);
});

t.test('clients hanging up (right after the headers, in the first part, mid-blob) give back all budget and every socket to the gateway', async (t) => {
  const u = await setup(t, [big], { readMemory: 12 * MiB });
  const path = `${u.url}/${u.digests[0]!.value}`;
  // A slow client keeps holding budget meanwhile, so some of the readers also wait for it.
  const slow = get(path, {}, 3);
  for (const after of [0, 1, 2 * MiB, 9 * MiB, 15 * MiB]) await hangUp(path, after);
  await settled('the hung-up answers to end', () => u.answering() <= 1);
  const s = await slow;
  t.equal(sha(s.body), sha(big), 'the slow client got the whole blob meanwhile');
  await settled('every answer to end', () => u.answering() === 0);
  await settled('the budget to be given back', () => u.backend.readBudget.stats().inUse === 0);
  t.equal(u.backend.readBudget.stats().inUse, 0, 'budget back to full');
  t.equal(u.backend.readBudget.stats().waiting, 0, 'nobody waiting for it');
  await settled('no socket to the gateway in use', () => busySockets(u.agent) === 0 && pooledGetSockets() === 0);
  t.equal(busySockets(u.agent), 0, 'no GET of the SDK left in flight');
  t.equal(pooledGetSockets(), 0, 'no pooled GET left in flight');
  // And the blob still comes whole afterwards.
  t.equal(sha((await get(path)).body), sha(big));
});

t.test('concurrent clients of large blobs never hold more than readMemory together; the ones that find it taken still finish', async (t) => {
  const u = await setup(t, [big], { readMemory: 3 * PART });
  const path = `${u.url}/${u.digests[0]!.value}`;
  const got = await Promise.all(Array.from({ length: 4 }, () => get(path, {}, 1)));
  for (const [i, r] of got.entries()) t.equal(sha(r.body), sha(big), `client ${i}: the whole blob`);
  const st = u.backend.readBudget.stats();
  t.ok(st.peak <= st.limit, `at most ${st.limit} bytes held (peak ${st.peak})`);
  t.ok(st.waited > 0, `${st.waited} parts waited for budget`);
  t.equal(st.inUse, 0, 'all of it given back');
});

t.test('/metrics shows the read-ahead memory in use and its limit (stevedore_s3_read_ahead_bytes)', async (t) => {
  const u = await setup(t, [big], { readMemory: 3 * PART });
  // Only the store's backend is looked at by this gauge.
  const metrics = new Metrics({ store: { backend: u.backend } as unknown as BlobStore, pull: {} as PullThrough, upstreams: new Map() });
  const gauge = async (): Promise<Record<string, number>> => {
    const m = await metrics.registry.getSingleMetric('stevedore_s3_read_ahead_bytes')!.get();
    return Object.fromEntries(m.values.map((v) => [String(v.labels.state), v.value]));
  };
  t.same(await gauge(), { in_use: 0, limit: 3 * PART }, 'nothing held at rest');
  // A client that stops reading: parts pile up ahead of it, up to the budget.
  const path = `${u.url}/${u.digests[0]!.value}`;
  const req = http.get(path, { agent: false });
  const res = await new Promise<http.IncomingMessage>((r) => req.once('response', r));
  res.pause();
  await settled('parts read ahead', () => u.backend.readBudget.stats().inUse === 3 * PART);
  t.same(await gauge(), { in_use: 3 * PART, limit: 3 * PART }, 'held while the client does not read');
  req.destroy();
  await settled('the budget back', () => u.backend.readBudget.stats().inUse === 0);
  t.same(await gauge(), { in_use: 0, limit: 3 * PART }, 'given back when it hangs up');
});

t.test('with pooledReads: false every part goes through the SDK\'s client, byte for byte', async (t) => {
  const u = await setup(t, [big], { pooledReads: false });
  const r = await get(`${u.url}/${u.digests[0]!.value}`);
  t.equal(sha(r.body), sha(big));
  t.equal(u.backend.slabs.stats().allocated, 0, 'no pooled slab used');
  t.equal(u.gets.length, Math.ceil(big.length / PART), 'one GET per part, all through the SDK');
});

t.test('readConcurrency auto with pooled reads: a large blob is one GET of the whole object, a Range one GET of the range (after the one that found the object), byte for byte, no budget taken', async (t) => {
  const u = await setup(t, [big], { readConcurrency: 'auto' });
  t.equal(u.backend.readConcurrency, 1, 'auto is 1 where parts are received into pooled memory');
  const path = `${u.url}/${u.digests[0]!.value}`;
  const whole = await get(path);
  t.equal(sha(whole.body), sha(big), 'the whole blob');
  t.same(u.gets, [{ range: `bytes=0-${big.length - 1}`, ifMatch: '' }], 'one GET, of the whole object');
  t.equal(u.sdkGets(), 0, 'received into pooled memory');
  u.gets.length = 0;
  const r = await get(path, { Range: 'bytes=5000000-12345678' });
  t.equal(r.status, 206);
  t.equal(sha(r.body), sha(big.subarray(5_000_000, 12_345_679)), 'the range');
  t.equal(u.gets.length, 2, 'the GET that found the object, then one of the range');
  t.same(u.gets[1], { range: 'bytes=5000000-12345678', ifMatch: u.gets[1]!.ifMatch }, 'the range in one GET');
  t.not(u.gets[1]!.ifMatch, '', 'If-Match the ETag found');
  t.equal(u.backend.readBudget.stats().peak, 0, 'no part read ahead: no budget taken');
  await settled('sockets closed', () => pooledGetSockets() === 0);
});

t.test('readConcurrency auto without pooled reads (the SDK) reads ahead 4 parts at once', async (t) => {
  const u = await setup(t, [big], { readConcurrency: 'auto', pooledReads: false });
  t.equal(u.backend.readConcurrency, 4);
  const r = await get(`${u.url}/${u.digests[0]!.value}`);
  t.equal(sha(r.body), sha(big));
  t.equal(u.gets.length, Math.ceil(big.length / PART), 'one GET per part');
});

t.test('an object replaced in the bucket while a client reads it: the gateway refuses the next part (If-Match, sent with the presigned URL), the client is cut, no byte of the new version reaches it', async (t) => {
  const u = await setup(t, [big], { readMemory: PART });
  const s = (u.backend as unknown as { settings: { bucket: string } }).settings;
  const key = `blobs/sha256/${u.digests[0]!.hex.slice(0, 2)}/${u.digests[0]!.hex}`;
  const received: Buffer[] = [];
  const cut = new Promise<boolean>((resolve) => {
    const req = http.get(`${u.url}/${u.digests[0]!.value}`, { agent: false }, (res) => {
      res.on('data', (c: Buffer) => {
        received.push(c);
        res.pause();
        setTimeout(() => res.resume(), 5);
      });
      res.on('end', () => resolve(false));
      res.on('aborted', () => resolve(true));
      res.on('error', () => resolve(true));
    });
    req.on('error', () => resolve(true));
  });
  await settled('a part after the first asked', () => u.gets.length >= 2);
  const other = randomBytes(big.length);
  await s3Client(await s3Storage()).send(new PutObjectCommand({ Bucket: s.bucket, Key: key, Body: other }));
  t.equal(await cut, true, 'the answer was cut');
  const got = Buffer.concat(received);
  t.ok(got.length < big.length, `${got.length} of ${big.length} bytes`);
  t.ok(got.equals(big.subarray(0, got.length)), 'every byte received is the old version\'s');
  t.ok(u.gets.some((g) => g.ifMatch !== ''), 'parts asked If-Match');
});
