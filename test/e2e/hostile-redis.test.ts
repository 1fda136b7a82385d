// Whoever can write to Redis is not trusted (issue 25): a test writes fake download holders, fake
// peers, wrong sizes and foreign repositories into a real redis-server under cluster mode on a
// shared disk, cluster mode on S3 (a real RGW) and the node tier. No client of any replica gets a
// complete answer whose bytes are not its digest's, no secret reaches an address Redis named, and
// every replica goes on serving the right bytes.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createClient } from '@redis/client';
import t, { type Test as Tap } from 'tap';
import { makeBlob, pseudoRandom, type Blob } from '../fixtures/images.js';
import { blobUrl, fetchAndHash, MiB, startCluster, upstreamWith, type Got } from '../fixtures/cluster.js';
import { startRedis } from '../fixtures/redis.js';
import { s3Storage } from '../fixtures/s3.js';
import { spawnStevedore, type FailableTest, type StevedoreProcess } from '../fixtures/stevedore-process.js';
import { freePort, tmpDir, waitFor } from '../fixtures/util.js';
import { ociErrors, rawRequest } from '../fixtures/http-client.js';
import { holders, PEER_TOKEN, pullImage, startTiers } from '../fixtures/node-tier.js';
import { buildDockerImage, pushBlob, pushImage } from '../fixtures/images.js';

// Several multi-replica runs of large blobs: more than tap's default 300 s per file on a busy 2-core machine.
t.setTimeout(10 * 60_000);

const CLUSTER_TOKEN = 'replicas-shared-secret-0123456789';

/** A fake stevedore at an address Redis names: answers every request with 176 × "A", records what it was sent. */
async function fakeHolder(t: FailableTest, host = '127.0.0.1'): Promise<{ url: string; requests: Array<{ path: string; headers: IncomingHttpHeaders }> }> {
  const requests: Array<{ path: string; headers: IncomingHttpHeaders }> = [];
  const server: Server = createServer((req, res) => {
    requests.push({ path: req.url ?? '', headers: req.headers });
    const body = Buffer.alloc(176, 'A');
    res.writeHead(200, { 'content-length': String(body.length), 'content-type': 'application/octet-stream' });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://${host}:${(server.address() as AddressInfo).port}`, requests };
}

type Client = ReturnType<typeof newClient>;
function newClient(url: string) {
  return createClient({ url });
}

async function redisClient(t: FailableTest, url: string): Promise<Client> {
  const c = newClient(url);
  c.on('error', () => undefined);
  await c.connect();
  t.teardown(() => c.close());
  return c;
}

/** The Redis key prefix of a replica's store (its log says the store id). */
function storePrefix(p: StevedoreProcess): string {
  const line = p.logs.find((l) => l.msg === 'cluster mode: coordinating with the replicas on this store through Redis');
  return `stevedore:${String(line?.storeId)}:`;
}

/** The outcome of a GET: right (200, its digest), refused (an OCI error), or cut (no complete answer). */
function judged(r: Got, blob: Blob): 'right' | 'refused' | 'cut' | 'WRONG' {
  if (r.error !== undefined || r.status === 0) return 'cut';
  if (r.status >= 400) return 'refused';
  return r.status === 200 && r.digest === blob.digest && r.bytes === blob.size ? 'right' : 'WRONG';
}

/** Asks until the replica serves the right bytes; every answer before that must be a refusal or a cut. */
async function untilRight(t: Tap, url: string, blob: Blob, what: string, ms = 60_000): Promise<string[]> {
  const seen: string[] = [];
  const until = Date.now() + ms;
  for (;;) {
    const r = judged(await fetchAndHash(url), blob);
    seen.push(r);
    if (r === 'right' || Date.now() > until) break;
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  t.notOk(seen.includes('WRONG'), `${what}: no complete answer with wrong bytes (${seen.join(', ')})`);
  t.equal(seen.at(-1), 'right', `${what}: the replica serves the right bytes in the end`);
  return seen;
}

function noSecret(t: Tap, requests: Array<{ headers: IncomingHttpHeaders }>, secret: string, what: string): void {
  const leaked = requests.filter((q) => JSON.stringify(q.headers).includes(secret) || JSON.stringify(q.headers).includes(Buffer.from(secret).toString('base64')));
  t.same(leaked, [], `${what}: the secret never reached the fake address`);
}

t.test('cluster mode on a shared disk', async (t) => {
  const blob = makeBlob(pseudoRandom('hostile-redis-disk', 3 * MiB), 'application/octet-stream');
  const reg = await upstreamWith(t, blob, 4 * MiB);
  const c = await startCluster(t, {
    replicas: 2,
    upstreamUrl: reg.url,
    // A holder that shows no progress is given up after firstByte + 2 × leaseTTL.
    config: { timeouts: { firstByte: '2s', stall: '1s' } },
  });
  const redis = await redisClient(t, c.redis.url);
  const prefix = storePrefix(c.replicas[0]!);
  const fake = await fakeHolder(t);
  /** Once the real holder published that it is ready, rewrites fields of its record (its token kept, so it goes on renewing). */
  const overwriteRecord = async (key: string, fields: Record<string, unknown>): Promise<void> => {
    let raw: string | null = null;
    await waitFor('the holder to publish its size', async () => {
      raw = await redis.get(key);
      return raw !== null && raw.includes('"ready":true');
    }, 20_000);
    const sep = raw!.indexOf(' ');
    await redis.set(key, `${raw!.slice(0, sep)} ${JSON.stringify({ ...(JSON.parse(raw!.slice(sep + 1)) as object), ...fields })}`, { expiration: 'KEEPTTL' });
  };

  await t.test('a lease nobody works on (a fake holder, a wrong size): clients are cut or refused, then the replica downloads alone', async (t) => {
    await redis.set(`${prefix}blob:${blob.digest}`, `x ${JSON.stringify({ owner: 'e', repoKey: 'docker.io/library/big', size: 176, ready: true, url: fake.url })}`, { expiration: { type: 'PX', value: 120_000 } });
    await untilRight(t, blobUrl(c.replicas[1]!, blob.digest), blob, 'replica 1');
    t.same(fake.requests, [], 'the address in the record was never asked');
    t.ok(c.replicas[1]!.logs.some((l) => l.msg === 'not following the download another replica holds; downloading it here'), 'the replica says why it downloaded alone');
  });

  await t.test('a wrong size written over a real holder\'s record: the clients of the others are cut, never answered complete', async (t) => {
    const other = makeBlob(pseudoRandom('hostile-redis-disk-size', 4 * MiB), 'application/octet-stream');
    await pushBlobTo(reg, other);
    // The download starts on replica 0 (it takes the lease), slowly.
    const first = fetchAndHash(blobUrl(c.replicas[0]!, other.digest));
    await overwriteRecord(`${prefix}blob:${other.digest}`, { size: 1000 });
    const followers = await Promise.all(Array.from({ length: 4 }, () => fetchAndHash(blobUrl(c.replicas[1]!, other.digest))));
    t.same(followers.map((r) => judged(r, other)).filter((j) => j === 'WRONG'), [], 'no follower got a complete answer with the announced 1000 bytes');
    t.equal(judged(await first, other), 'right', "the holder's own client got the blob");
    t.equal(judged(await fetchAndHash(blobUrl(c.replicas[1]!, other.digest)), other), 'right', 'once stored, replica 1 serves it');
  });

  await t.test('a foreign repository written into a real holder\'s record does not open another repository', async (t) => {
    const secret = makeBlob(pseudoRandom('hostile-redis-disk-repo', 4 * MiB), 'application/octet-stream');
    await pushBlobTo(reg, secret);
    const first = fetchAndHash(blobUrl(c.replicas[0]!, secret.digest));
    await overwriteRecord(`${prefix}blob:${secret.digest}`, { repoKey: 'docker.io/library/elsewhere' });
    // library/elsewhere does not hold this blob upstream: Redis saying otherwise opens nothing.
    const r = await rawRequest(blobUrl(c.replicas[1]!, secret.digest, 'library/elsewhere'));
    t.equal(r.status, 404, 'refused through the repository the record named');
    t.equal(ociErrors(r)?.[0]?.code, 'BLOB_UNKNOWN');
    await first;
  });

  for (const r of c.replicas) t.same(r.defects, [], `${r.url}: no defect`);
});

t.test('cluster mode on S3: a fake holder in the lease record', async (t) => {
  const blob = makeBlob(pseudoRandom('hostile-redis-s3', 2 * MiB), 'application/octet-stream');
  const reg = await upstreamWith(t, blob, 16 * MiB);
  const redis = await startRedis(t);
  const s3 = await s3Storage();
  const start = async (i: number, cluster: Record<string, unknown> = {}): Promise<StevedoreProcess> => {
    const port = await freePort();
    return spawnStevedore(t, {
      listen: `127.0.0.1:${port}`,
      upstreams: { 'docker.io': { url: reg.url } },
      storage: { path: await tmpDir(t, `stevedore-hostile-s3-${i}-`), backend: 's3', s3: { ...s3, partSize: '8MiB' } },
      metadata: { redis: redis.url },
      timeouts: { firstByte: '2s', stall: '1s' },
      cluster: { leaseTTL: '2s', pollInterval: '50ms', replicaId: `replica-${i}`, advertise: `http://127.0.0.1:${port}`, token: CLUSTER_TOKEN, ...cluster },
    });
  };
  const replica = await start(0);
  const client = await redisClient(t, redis.url);
  const prefix = storePrefix(replica);

  await t.test('176 × "A" from a fake holder never reaches a client as the blob, the token never reaches the fake, and the replica serves on', async (t) => {
    const fake = await fakeHolder(t);
    await client.set(`${prefix}blob:${blob.digest}`, `x ${JSON.stringify({ owner: 'e', repoKey: 'docker.io/library/big', size: 176, ready: true, url: fake.url })}`, { expiration: { type: 'PX', value: 120_000 } });
    const first = judged(await fetchAndHash(blobUrl(replica, blob.digest)), blob);
    t.not(first, 'WRONG', `the first client was not answered with the fake bytes (${first})`);
    t.ok(fake.requests.length > 0, 'the fake holder was asked');
    noSecret(t, fake.requests, CLUSTER_TOKEN, 'cluster.token');
    t.ok(fake.requests.every((q) => String(q.headers.authorization).startsWith('Stevedore-Signature ')), 'it was sent a per-request signature');
    // What the fake collected opens nothing at a real replica.
    const collected = String(fake.requests[0]!.headers.authorization);
    const replay = await rawRequest(`${replica.url}${fake.requests[0]!.path}`, { headers: { authorization: collected } });
    t.equal(replay.status, 401, 'the collected signature is refused by a real replica');
    await untilRight(t, blobUrl(replica, blob.digest), blob, 'the replica');
    t.ok(replica.logs.some((l) => l.msg === 'a replica holding a download failed or sent bytes that do not verify; not asked again for a while'), 'the fake holder was marked bad, and said so');
  });

  await t.test('a holder address outside cluster.allowedNetworks is never connected to', async (t) => {
    const other = makeBlob(pseudoRandom('hostile-redis-s3-net', MiB), 'application/octet-stream');
    await pushBlobTo(reg, other);
    const fenced = await start(1, { allowedNetworks: ['127.0.0.1/32'] });
    const fake = await fakeHolder(t, '127.0.0.2');
    await client.set(`${prefix}blob:${other.digest}`, `x ${JSON.stringify({ owner: 'e', repoKey: 'docker.io/library/big', size: 176, ready: true, url: fake.url })}`, { expiration: { type: 'PX', value: 120_000 } });
    t.equal(judged(await fetchAndHash(blobUrl(fenced, other.digest)), other), 'right', 'served right, downloaded alone');
    t.same(fake.requests, [], 'the address outside the networks was not asked');
    t.ok(fenced.logs.some((l) => l.msg === 'refused an address another process named (Redis): not connected to (logged once per address)' && l.setting === 'cluster.allowedNetworks'), 'the refusal was logged, naming the setting');
    t.same(fenced.defects, []);
  });

  t.same(replica.defects, [], 'no defect');
});

t.test('node tier: fake peers in the directory', async (t) => {
  const tier = await startTiers(t, { nodes: 1 });
  const node = tier.nodes[0]!;
  const img = buildDockerImage('hostile-redis-peers', { layers: 2, layerSize: MiB });
  await pushImage(tier.registry.directUrl, 'library/app', 'v1', img);
  const fake = await fakeHolder(t);
  const client = await redisClient(t, tier.redis.url);
  // Every layer "held" by the fake, and the fake "fetching" it.
  for (const l of img.layers) {
    await client.zAdd(`stevedore:peers:default:has:${l.digest}`, { score: Date.now() + 600_000, value: fake.url });
    await client.set(`stevedore:peers:default:fetching:${l.digest}`, `x ${fake.url}`, { expiration: { type: 'PX', value: 600_000 } });
  }
  const pulled = await pullImage(node.url, 'library/app', 'v1');
  for (const [d, got] of pulled.blobs) t.equal(got, d, `${d}: the node served its own digest's bytes`);
  t.ok(fake.requests.length > 0, 'the fake peer was asked');
  noSecret(t, fake.requests, PEER_TOKEN, 'node.peers.token');
  // What the fake collected opens nothing at a real node.
  const replay = await rawRequest(`${node.url}${fake.requests[0]!.path}`, { headers: { authorization: String(fake.requests[0]!.headers.authorization) } });
  t.equal(replay.status, 401, "the collected signature is refused by a real node");
  t.ok((await holders(tier.redis.url, img.layers[0]!.digest)).includes(node.url), 'the node announced what it stored');
  t.same(node.defects, [], 'no defect');
});

async function pushBlobTo(reg: { directUrl: string }, blob: Blob): Promise<void> {
  await pushBlob(reg.directUrl, 'library/big', blob);
}
