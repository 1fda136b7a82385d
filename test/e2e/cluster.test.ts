// Cluster mode: three `stevedore serve` processes on one store directory and one redis-server, in
// front of a real registry (CNCF distribution behind a counting, pacing proxy), all on 127.0.0.1.
// One upstream fetch per digest across the replicas; a replica that dies (kill -9) or shuts down
// has its download taken over and resumed with Range; pushes span replicas; Redis may go away.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { makeBlob, pseudoRandom, pushBlob, type Blob } from '../fixtures/images.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';
import { startCluster, type Cluster } from '../fixtures/cluster.js';
import { call, openUpload } from '../fixtures/oci-push.js';
import type { StevedoreProcess } from '../fixtures/stevedore-process.js';
import { waitFor } from '../fixtures/util.js';
import { OPEN_AUTH } from '../fixtures/stevedore.js';

const MiB = 1024 * 1024;

interface Got {
  status: number;
  digest: string;
  bytes: number;
  /** performance.now() of the first body byte (0: none). */
  firstByteAt: number;
  error?: string;
}

async function fetchAndHash(url: string): Promise<Got> {
  let firstByteAt = 0;
  let bytes = 0;
  const hash = createHash('sha256');
  try {
    const res = await request(url);
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      if (!firstByteAt) firstByteAt = performance.now();
      hash.update(chunk);
      bytes += chunk.length;
    }
    return { status: res.statusCode, digest: `sha256:${hash.digest('hex')}`, bytes, firstByteAt };
  } catch (err) {
    return { status: 0, digest: '', bytes, firstByteAt, error: (err as Error).message };
  }
}

function blobUrl(p: StevedoreProcess, digest: string, name = 'library/big'): string {
  return `${p.url}/v2/${name}/blobs/${digest}?ns=docker.io`;
}

function storedPath(c: Cluster, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return path.join(c.storeDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of (await fsp.open(file)).createReadStream() as AsyncIterable<Buffer>) hash.update(chunk);
  return `sha256:${hash.digest('hex')}`;
}

function blobGets(reg: Registry, digest: string): Array<{ range: string | null }> {
  return reg.requests.filter((q) => q.method === 'GET' && q.path.includes(`/blobs/${digest}`)).map((q) => ({ range: (q.headers.range as string | undefined) ?? null }));
}

/** The replica whose log says it holds the download's lease (the first one, or any after `skip`). */
function holderOf(c: Cluster, skip: StevedoreProcess[] = []): StevedoreProcess | undefined {
  return c.replicas.find((r) => !skip.includes(r) && r.logs.some((l) => l.msg === 'downloading a blob for the cluster (holding its lease)'));
}

async function upstreamWith(t: Test, blob: Blob, bytesPerSecond: number): Promise<Registry> {
  const reg = await startRegistry({ bytesPerSecond });
  t.teardown(() => reg.stop());
  await pushBlob(reg.directUrl, 'library/big', blob);
  reg.resetCounts();
  return reg;
}

t.test('30 clients spread over 3 replicas on one cold 200 MiB blob: every body right, exactly one upstream GET', async (t) => {
  const blob = makeBlob(pseudoRandom('cluster-200', 200 * MiB), 'application/octet-stream');
  // ~2 s on the wire: every client arrives while the download runs.
  const reg = await upstreamWith(t, blob, 100 * MiB);
  const c = await startCluster(t, { replicas: 3, upstreamUrl: reg.url });
  const results = await Promise.all(Array.from({ length: 30 }, (_, i) => fetchAndHash(blobUrl(c.replicas[i % 3]!, blob.digest))));
  const gets = reg.requests.filter((q) => q.method === 'GET' && q.path.includes(blob.digest));
  t.equal(gets.length, 1, 'one upstream GET for the whole cluster');
  t.same(
    results.filter((r) => r.status !== 200 || r.digest !== blob.digest || r.bytes !== blob.size).map((r) => r.error ?? r.status),
    [],
    'every client got 200 and the right bytes',
  );
  const downloadEnd = gets[0]!.finishedAt!;
  const holder = c.replicas.indexOf(holderOf(c)!);
  const followers = results.filter((_, i) => i % 3 !== holder);
  t.ok(followers.length >= 20, 'two thirds of the clients were on replicas that did not download');
  t.ok(
    followers.every((r) => r.firstByteAt < downloadEnd),
    'clients of the other replicas got their first bytes before the download ended',
  );
  t.equal(await sha256File(storedPath(c, blob.digest)), blob.digest, 'the stored blob verifies');
});

t.test('the downloading replica killed -9 mid-blob: the others take over with a Range resume and their clients complete', async (t) => {
  const blob = makeBlob(pseudoRandom('cluster-kill', 64 * MiB), 'application/octet-stream');
  // ~4 s on the wire: the kill lands mid-body.
  const reg = await upstreamWith(t, blob, 16 * MiB);
  const c = await startCluster(t, { replicas: 3, upstreamUrl: reg.url });
  // The first request decides the holder; the others follow it.
  const first = fetchAndHash(blobUrl(c.replicas[0]!, blob.digest));
  await waitFor('the download to start', async () => blobGets(reg, blob.digest).length === 1, 10_000);
  const holder = holderOf(c)!;
  const others = c.replicas.filter((r) => r !== holder);
  const clients = Array.from({ length: 6 }, (_, i) => fetchAndHash(blobUrl(others[i % 2]!, blob.digest)));
  await waitFor('a quarter of the blob on disk', async () => {
    const st = await fsp.stat(path.join(c.storeDir, 'tmp', 'shared', `sha256-${blob.digest.slice(7)}.part`)).catch(() => null);
    return (st?.size ?? 0) > blob.size / 4;
  }, 10_000);
  await holder.kill('SIGKILL');
  const results = await Promise.all(clients);
  await first;
  t.same(
    results.filter((r) => r.status !== 200 || r.digest !== blob.digest).map((r) => r.error ?? r.status),
    [],
    'every client of the surviving replicas got the whole blob, right',
  );
  const gets = blobGets(reg, blob.digest);
  t.equal(gets.length, 2, 'two upstream GETs: the first download and one resume');
  t.equal(gets[0]!.range, null, 'the first from byte 0');
  t.match(gets[1]!.range, /^bytes=[1-9]\d*-$/, 'the second a Range from where the dead replica stopped');
  t.equal(await sha256File(storedPath(c, blob.digest)), blob.digest, 'the stored blob verifies');
  const taker = holderOf(c, [holder]);
  t.ok(taker?.logs.some((l) => l.msg === 'the replica downloading this blob is gone; taking its download over'), 'a surviving replica logged the takeover');
});

t.test('a replica shut down mid-blob hands its download over: no failure, one Range resume', async (t) => {
  const blob = makeBlob(pseudoRandom('cluster-term', 64 * MiB), 'application/octet-stream');
  const reg = await upstreamWith(t, blob, 16 * MiB);
  const c = await startCluster(t, { replicas: 2, upstreamUrl: reg.url, config: { server: { shutdownGrace: '200ms' } } });
  const first = fetchAndHash(blobUrl(c.replicas[0]!, blob.digest));
  await waitFor('the download to start', async () => blobGets(reg, blob.digest).length === 1, 10_000);
  const holder = holderOf(c)!;
  const other = c.replicas.find((r) => r !== holder)!;
  const clients = Array.from({ length: 3 }, () => fetchAndHash(blobUrl(other, blob.digest)));
  await new Promise((r) => setTimeout(r, 700));
  await holder.kill('SIGTERM');
  const results = await Promise.all(clients);
  await first;
  t.same(results.map((r) => r.digest === blob.digest && r.status === 200), [true, true, true], 'the other replica\'s clients completed');
  t.ok(holder.logs.some((l) => l.msg === 'shutting down: downloads in progress handed over to the other replicas'), 'the stopping replica handed it over');
  const gets = blobGets(reg, blob.digest);
  t.equal(gets.length, 2);
  t.match(gets[1]!.range, /^bytes=[1-9]\d*-$/, 'resumed with Range, not from byte 0');
});

t.test('a chunked push whose POST, PATCHes and PUT land on different replicas reads back from every replica', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const c = await startCluster(t, { replicas: 3, upstreamUrl: reg.url, config: { registry: { hosted: ['lab/**'] }, auth: OPEN_AUTH } });
  const [a, b, d] = c.replicas as [StevedoreProcess, StevedoreProcess, StevedoreProcess];
  const data = pseudoRandom('cluster-push', 3 * MiB + 17);
  const blob = makeBlob(data, 'application/octet-stream');
  const s = await openUpload(a.url, 'lab/app');
  const parts = [data.subarray(0, MiB), data.subarray(MiB, 2 * MiB), data.subarray(2 * MiB)];
  let location = s.location;
  let offset = 0;
  for (const [i, part] of parts.entries()) {
    const replica = [b, d, a][i]!;
    const res = await call(replica.url, 'PATCH', location, {
      body: part,
      headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${offset + part.length - 1}`, 'content-length': String(part.length) },
    });
    t.equal(res.status, 202, `chunk ${i + 1} accepted by replica ${[1, 2, 0][i]}`);
    offset += part.length;
    location = String(res.headers.location);
  }
  const sep = location.includes('?') ? '&' : '?';
  const put = await call(b.url, 'PUT', `${location}${sep}digest=${blob.digest}`, { headers: { 'content-length': '0' } });
  t.equal(put.status, 201, 'the closing PUT on yet another replica verifies it');
  for (const r of c.replicas) {
    const got = await fetchAndHash(`${r.url}/v2/lab/app/blobs/${blob.digest}`);
    t.equal(got.digest, blob.digest, `replica ${c.replicas.indexOf(r)} serves it`);
  }
});

t.test('two chunks of one upload sent to two replicas at once: one is appended, the other refused or appended after it, never interleaved', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const c = await startCluster(t, { replicas: 2, upstreamUrl: reg.url, config: { registry: { hosted: ['lab/**'] }, auth: OPEN_AUTH } });
  const [a, b] = c.replicas as [StevedoreProcess, StevedoreProcess];
  const s = await openUpload(a.url, 'lab/app');
  const chunk = pseudoRandom('cluster-race', 4 * MiB);
  const send = (r: StevedoreProcess): ReturnType<typeof call> =>
    call(r.url, 'PATCH', s.location, { body: chunk, headers: { 'content-type': 'application/octet-stream', 'content-range': `0-${chunk.length - 1}`, 'content-length': String(chunk.length) } });
  const [ra, rb] = await Promise.all([send(a), send(b)]);
  const statuses = [ra.status, rb.status].sort();
  t.equal(statuses[0], 202, 'one chunk is appended');
  t.not(statuses[1], 202, 'the other, sent for the same offset, is refused (its offset is taken)');
  const status = await call(b.url, 'GET', s.location);
  t.equal(String(status.headers.range), `0-${chunk.length - 1}`, 'the session holds exactly one chunk');
});

t.test('redis-server killed: every replica keeps serving and pulling; restarted: one fetch per digest again', async (t) => {
  const stored = makeBlob(pseudoRandom('cluster-redis-a', 2 * MiB), 'application/octet-stream');
  const later = makeBlob(pseudoRandom('cluster-redis-b', 2 * MiB), 'application/octet-stream');
  const cold = makeBlob(pseudoRandom('cluster-redis-c', 8 * MiB), 'application/octet-stream');
  const reg = await startRegistry({ bytesPerSecond: 8 * MiB });
  t.teardown(() => reg.stop());
  for (const b of [stored, later, cold]) await pushBlob(reg.directUrl, 'library/big', b);
  const c = await startCluster(t, { replicas: 3, upstreamUrl: reg.url });
  t.equal((await fetchAndHash(blobUrl(c.replicas[0]!, stored.digest))).digest, stored.digest);

  await c.redis.stop({ hard: true });
  await waitFor('every replica to notice', async () => {
    const texts = await Promise.all(c.replicas.map(async (r) => (await fetch(`${r.url}/metrics`)).text()));
    return texts.every((x) => /^stevedore_redis_up 0$/m.test(x));
  }, 15_000);
  for (const [i, r] of c.replicas.entries()) {
    const got = await fetchAndHash(blobUrl(r, stored.digest));
    t.equal(got.digest, stored.digest, `replica ${i} serves what is stored without Redis`);
  }
  const alone = await fetchAndHash(blobUrl(c.replicas[1]!, later.digest));
  t.equal(alone.digest, later.digest, 'a replica still pulls a cold blob without Redis');
  const metrics = await (await fetch(`${c.replicas[1]!.url}/metrics`)).text();
  t.match(metrics, /stevedore_cluster_downloads_total\{event="alone"\} 1/, 'counted as a download without coordination');
  t.ok(c.replicas.every((r) => r.logs.filter((l) => String(l.msg).startsWith('Redis is unreachable')).length === 1), 'each replica logged the outage once');

  await c.redis.restart();
  await waitFor('every replica to reconnect', async () => {
    const texts = await Promise.all(c.replicas.map(async (r) => (await fetch(`${r.url}/metrics`)).text()));
    return texts.every((x) => /^stevedore_redis_up 1$/m.test(x));
  }, 15_000);
  reg.resetCounts();
  const results = await Promise.all(Array.from({ length: 6 }, (_, i) => fetchAndHash(blobUrl(c.replicas[i % 3]!, cold.digest))));
  t.ok(results.every((r) => r.digest === cold.digest), 'every client got the cold blob');
  t.equal(blobGets(reg, cold.digest).length, 1, 'coordination resumed: one upstream GET across the replicas');
});

t.test('eviction with 3 replicas keeps the store under its bound, one replica evicting', async (t) => {
  const blobs = Array.from({ length: 8 }, (_, i) => makeBlob(pseudoRandom(`cluster-evict-${i}`, 3 * MiB), 'application/octet-stream'));
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  for (const b of blobs) await pushBlob(reg.directUrl, 'library/big', b);
  const c = await startCluster(t, {
    replicas: 3,
    upstreamUrl: reg.url,
    config: { storage: { maxSize: '10MiB' } },
    cluster: { recencyFlush: '200ms', evictionInterval: '300ms' },
  });
  for (const [i, b] of blobs.entries()) {
    t.equal((await fetchAndHash(blobUrl(c.replicas[i % 3]!, b.digest))).digest, b.digest);
    // Recency is batched per flush (200 ms): pulls a flush apart have a well-defined order.
    await new Promise((r) => setTimeout(r, 300));
  }
  const storeBytes = async (): Promise<number> => {
    let total = 0;
    for (const b of blobs) total += (await fsp.stat(storedPath(c, b.digest)).catch(() => null))?.size ?? 0;
    return total;
  };
  // Recently served content is protected for two flushes (and a second): then it goes.
  await waitFor('the store to come under 10 MiB', async () => (await storeBytes()) <= 10 * MiB, 15_000);
  const evictors = c.replicas.filter((r) => r.logs.some((l) => l.msg === 'evicted least recently served content'));
  t.equal(evictors.length, 1, 'one replica evicted for all');
  const kept = [];
  for (const b of blobs) if (await fsp.stat(storedPath(c, b.digest)).catch(() => null)) kept.push(blobs.indexOf(b));
  t.same(kept, [5, 6, 7], 'the least recently served went first');
  // A replica that served an evicted blob before fetches it again instead of failing.
  const again = await fetchAndHash(blobUrl(c.replicas[0]!, blobs[0]!.digest));
  t.equal(again.digest, blobs[0]!.digest, 'an evicted blob is fetched again on demand');
});
