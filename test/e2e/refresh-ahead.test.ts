// Refresh-ahead for hot tags (cache.refreshAhead), against a real CNCF distribution whose manifest
// HEADs are slowed to 2 s by the counting proxy in front of it: a hot tag is revalidated in the
// background before its TTL ends, so no client waits on that HEAD, and the upstream still sees
// about one HEAD per TTL. Real time (the point is who waits on a slow upstream), short TTLs.
import t from 'tap';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { getTag, assertServes } from '../fixtures/tags.js';
import { sleep } from '../fixtures/fake-upstream.js';
import { startCluster } from '../fixtures/cluster.js';
import { MANIFEST_ACCEPT } from '../fixtures/images.js';
import { rawRequest } from '../fixtures/http-client.js';

const HEAD_DELAY_MS = 2_000;
// The revalidation starts once less than half the TTL is left (refreshAhead.before is capped
// there): with a 2 s HEAD, a TTL above 4 s leaves it time to finish before the answer expires.
const TTL_MS = 6_000;
const REQUESTS = 1_000;
const TTLS = 3;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

t.test('a hot tag is revalidated ahead: 1000 requests over three TTLs never wait on a 2 s HEAD, one HEAD per TTL', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('refresh-ahead/hot', { layers: 1 });
  await pushImage(reg.url, 'team/hot', 'latest', img);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    config: { cache: { tagTTL: `${TTL_MS / 1000}s`, refreshAhead: { before: '3s', minRequests: 3 } } },
  });
  assertServes(t, await getTag(sd, 'team/hot', 'latest'), img, 'miss');
  reg.resetCounts();
  reg.setFault({ kind: 'delay', method: 'HEAD', ms: HEAD_DELAY_MS });

  // Requests at a steady pace over three TTLs, each sent on schedule whether or not the one
  // before has been answered (a slow answer cannot hide the next one's wait).
  const span = TTLS * TTL_MS;
  const started = performance.now();
  const latencies: number[] = [];
  const bad: string[] = [];
  await Promise.all(
    Array.from({ length: REQUESTS }, async (_, i) => {
      await sleep((i * span) / REQUESTS);
      const t0 = performance.now();
      const r = await getTag(sd, 'team/hot', 'latest');
      latencies.push(performance.now() - t0);
      if (r.status !== 200 || r.headers['docker-content-digest'] !== img.manifest.digest) bad.push(`${r.status} ${String(r.headers['docker-content-digest'])}`);
    }),
  );
  const elapsed = performance.now() - started;
  const sorted = [...latencies].sort((a, b) => a - b);
  const p50 = percentile(sorted, 50);
  const p99 = percentile(sorted, 99);
  const max = sorted.at(-1)!;
  t.comment(`${REQUESTS} requests in ${Math.round(elapsed)} ms: p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${max.toFixed(1)} ms`);
  t.same(bad, [], 'every answer is 200 with the tag\'s digest');
  t.ok(max < 1_500, `no request waited on the upstream's 2 s HEAD (slowest: ${max.toFixed(0)} ms)`);
  const heads = reg.count('HEAD', /\/manifests\/latest/);
  const periods = elapsed / TTL_MS;
  t.comment(`upstream HEADs: ${heads} in ${periods.toFixed(2)} TTL periods`);
  t.ok(Math.abs(heads - periods) <= 1, `one HEAD per TTL: ${heads} HEADs over ${periods.toFixed(2)} TTLs`);
  t.equal(reg.count('GET', /\/manifests\//), 0, 'no manifest GET: the tag did not move');
  t.equal(sd.app.pull.refreshAhead?.started, heads, 'every HEAD was a background revalidation');
  const metrics = await rawRequest(`${sd.url}/metrics`);
  t.match(metrics.body.toString(), new RegExp(`^stevedore_tag_refreshes_ahead_total ${heads}$`, 'm'), 'counted in /metrics');
});

t.test('a tag asked for less than minRequests times is not revalidated ahead: it expires, and its next client waits on the HEAD', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('refresh-ahead/cold', { layers: 1 });
  await pushImage(reg.url, 'team/cold', 'latest', img);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    config: { cache: { tagTTL: '3s', refreshAhead: { before: '3s', minRequests: 1000 } } },
  });
  assertServes(t, await getTag(sd, 'team/cold', 'latest'), img, 'miss');
  reg.setFault({ kind: 'delay', method: 'HEAD', ms: HEAD_DELAY_MS });
  reg.resetCounts();
  for (let i = 0; i < 10; i++) {
    assertServes(t, await getTag(sd, 'team/cold', 'latest'), img, 'hit');
    await sleep(200);
  }
  t.equal(reg.count('HEAD', /\/manifests\//), 0, 'no HEAD while the answer is fresh');
  await sleep(1_500);
  const t0 = performance.now();
  assertServes(t, await getTag(sd, 'team/cold', 'latest'), img, 'revalidated');
  const waited = performance.now() - t0;
  t.ok(waited >= HEAD_DELAY_MS - 100, `the first client after the TTL waited on the HEAD (${waited.toFixed(0)} ms)`);
  t.equal(reg.count('HEAD', /\/manifests\//), 1, 'one HEAD, on expiry');
  t.equal(sd.app.pull.refreshAhead?.started, 0, 'no background revalidation');
});

t.test('no refresh-ahead while the upstream cools down after a 429: the hot tag expires and is served stale', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('refresh-ahead/quota', { layers: 1 });
  await pushImage(reg.url, 'team/busy', 'latest', img);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    config: { cache: { tagTTL: '3s', refreshAhead: { before: '3s', minRequests: 2 } } },
  });
  assertServes(t, await getTag(sd, 'team/busy', 'latest'), img, 'miss');
  // A 429 with Retry-After puts docker.io in cool-down (a blob request reaches it and is refused).
  reg.setFault({ kind: 'status', status: 429, headers: { 'retry-after': '60' }, body: JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down' }] }) });
  const r = await getTag(sd, 'team/busy', 'other');
  t.equal(r.status, 429, 'the upstream rate-limits');
  reg.resetCounts();
  for (let i = 0; i < 20; i++) {
    assertServes(t, await getTag(sd, 'team/busy', 'latest'), img, 'hit');
    await sleep(100);
  }
  await sleep(1_200);
  const after = await getTag(sd, 'team/busy', 'latest');
  t.equal(after.headers['x-cache'], 'stale', 'past its TTL the tag is served stale, not revalidated');
  t.equal(reg.requests.length, 0, 'the upstream was asked nothing during the cool-down');
  t.equal(sd.app.pull.refreshAhead?.started ?? 0, 1, 'the due revalidation was started, and stopped at the cool-down');
});

t.test('cluster mode: two replicas share a hot tag\'s refresh-ahead: no client waits, about one HEAD per TTL for the cluster', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('refresh-ahead/cluster', { layers: 1 });
  await pushImage(reg.url, 'team/shared', 'latest', img);
  const c = await startCluster(t, {
    replicas: 2,
    upstreamUrl: reg.url,
    config: { defaultUpstream: null, cache: { tagTTL: `${TTL_MS / 1000}s`, refreshAhead: { before: '3s', minRequests: 3 } } },
  });
  const get = (i: number): Promise<{ status: number; digest: unknown; ms: number }> => {
    const t0 = performance.now();
    return rawRequest(`${c.replicas[i % 2]!.url}/v2/docker.io/team/shared/manifests/latest`, { headers: { accept: MANIFEST_ACCEPT } }).then((r) => ({
      status: r.status,
      digest: r.headers['docker-content-digest'],
      ms: performance.now() - t0,
    }));
  };
  for (let i = 0; i < 2; i++) t.equal((await get(i)).status, 200, `replica ${i} has the tag`);
  reg.resetCounts();
  reg.setFault({ kind: 'delay', method: 'HEAD', ms: HEAD_DELAY_MS });
  const n = 400;
  const span = TTLS * TTL_MS;
  const started = performance.now();
  const answers = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      await sleep((i * span) / n);
      return get(i);
    }),
  );
  const elapsed = performance.now() - started;
  const sorted = answers.map((a) => a.ms).sort((a, b) => a - b);
  t.comment(`${n} requests over 2 replicas in ${Math.round(elapsed)} ms: p50 ${percentile(sorted, 50).toFixed(1)} ms, p99 ${percentile(sorted, 99).toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms`);
  t.ok(answers.every((a) => a.status === 200 && a.digest === img.manifest.digest), 'every answer is the tag\'s manifest');
  t.ok(sorted.at(-1)! < 1_500, `no request waited on the upstream's 2 s HEAD (slowest: ${sorted.at(-1)!.toFixed(0)} ms)`);
  const heads = reg.count('HEAD', /\/manifests\/latest/);
  const periods = elapsed / TTL_MS;
  t.comment(`upstream HEADs: ${heads} in ${periods.toFixed(2)} TTL periods, for 2 replicas`);
  t.ok(Math.abs(heads - periods) <= 1, `one HEAD per TTL for the cluster: ${heads} HEADs over ${periods.toFixed(2)} TTLs`);
});
