// Cluster mode when Redis goes away and comes back, and eviction decided for the whole store by
// one replica at a time.
import { promises as fsp } from 'node:fs';
import t from 'tap';
import { makeBlob, pseudoRandom, pushBlob } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { blobGets, blobUrl, fetchAndHash, MiB, startCluster, storedPath } from '../fixtures/cluster.js';
import { waitFor } from '../fixtures/util.js';
import { testWorkers, type StevedoreProcess } from '../fixtures/stevedore-process.js';
import { pushBlobWhole } from '../fixtures/oci-push.js';
import { OPEN_AUTH } from '../fixtures/stevedore.js';

/** Waits until every replica's /metrics says `stevedore_redis_up <up>`. */
async function waitRedisUp(replicas: StevedoreProcess[], up: 0 | 1, what: string): Promise<void> {
  await waitFor(what, async () => {
    const texts = await Promise.all(replicas.map(async (r) => (await fetch(`${r.url}/metrics`)).text()));
    return texts.every((x) => new RegExp(`^stevedore_redis_up ${up}$`, 'm').test(x));
  }, 15_000);
}

t.test('redis-server killed: every replica keeps serving and pulling; restarted: one fetch per digest again', async (t) => {
  const stored = makeBlob(pseudoRandom('cluster-redis-a', 2 * MiB), 'application/octet-stream');
  const later = makeBlob(pseudoRandom('cluster-redis-b', 2 * MiB), 'application/octet-stream');
  const cold = makeBlob(pseudoRandom('cluster-redis-c', 8 * MiB), 'application/octet-stream');
  const reg = await startRegistry({ bytesPerSecond: 8 * MiB });
  t.teardown(() => reg.stop());
  for (const b of [stored, later, cold]) await pushBlob(reg.directUrl, 'library/big', b);
  const c = await startCluster(t, { replicas: 3, upstreamUrl: reg.url, config: { registry: { hosted: ['lab/**'] }, auth: OPEN_AUTH } });
  t.equal((await fetchAndHash(blobUrl(c.replicas[0]!, stored.digest))).digest, stored.digest);

  await c.redis.stop({ hard: true });
  await waitRedisUp(c.replicas, 0, 'every replica to notice');
  for (const [i, r] of c.replicas.entries()) {
    const got = await fetchAndHash(blobUrl(r, stored.digest));
    t.equal(got.digest, stored.digest, `replica ${i} serves what is stored without Redis`);
  }
  const alone = await fetchAndHash(blobUrl(c.replicas[1]!, later.digest));
  t.equal(alone.digest, later.digest, 'a replica still pulls a cold blob without Redis');
  const metrics = await (await fetch(`${c.replicas[1]!.url}/metrics`)).text();
  t.match(metrics, /stevedore_cluster_downloads_total\{event="alone"\} 1/, 'counted as a download without coordination');
  const pushed = makeBlob(pseudoRandom('cluster-redis-push', MiB + 5), 'application/octet-stream');
  const push = await pushBlobWhole(c.replicas[2]!.url, 'lab/app', pushed.data, pushed.digest);
  t.equal(push.status, 201, 'a push is taken without Redis');
  for (const [i, r] of c.replicas.entries()) {
    t.equal((await fetchAndHash(`${r.url}/v2/lab/app/blobs/${pushed.digest}`)).digest, pushed.digest, `replica ${i} serves the pushed blob without Redis`);
  }
  // Once per process: with workers (npm run test:workers) each worker is a replica of its own.
  t.ok(c.replicas.every((r) => r.logs.filter((l) => String(l.msg).startsWith('Redis is unreachable')).length === testWorkers()), 'each replica (each worker) logged the outage once');

  await c.redis.restart();
  await waitRedisUp(c.replicas, 1, 'every replica to reconnect');
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


t.test('a replica started while Redis is down serves at once, and joins the cluster when Redis comes up', async (t) => {
  const stored = makeBlob(pseudoRandom('cluster-late-a', MiB), 'application/octet-stream');
  const cold = makeBlob(pseudoRandom('cluster-late-b', 8 * MiB), 'application/octet-stream');
  const reg = await startRegistry({ bytesPerSecond: 8 * MiB });
  t.teardown(() => reg.stop());
  for (const b of [stored, cold]) await pushBlob(reg.directUrl, 'library/big', b);
  const c = await startCluster(t, { replicas: 1, upstreamUrl: reg.url });
  t.equal((await fetchAndHash(blobUrl(c.replicas[0]!, stored.digest))).digest, stored.digest);
  await c.redis.stop({ hard: true });
  const late = await c.add();
  t.equal((await fetchAndHash(blobUrl(late, stored.digest))).digest, stored.digest, 'the new replica serves what the store holds');
  t.match(await (await fetch(`${late.url}/metrics`)).text(), /^stevedore_redis_up 0$/m);
  await c.redis.restart();
  await waitRedisUp(c.replicas, 1, 'both replicas to reach Redis');
  reg.resetCounts();
  const results = await Promise.all(Array.from({ length: 4 }, (_, i) => fetchAndHash(blobUrl(c.replicas[i % 2]!, cold.digest))));
  t.ok(results.every((r) => r.digest === cold.digest));
  t.equal(blobGets(reg, cold.digest).length, 1, 'one upstream GET across both: the late replica coordinates');
});
