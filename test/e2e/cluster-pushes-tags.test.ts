// Cluster mode, pushes and tags: requests of one push spread over replicas, concurrent chunks,
// one upstream request per tag or manifest for the cluster, a pushed tag seen by every replica.
import t from 'tap';
import { buildDockerImage, makeBlob, pseudoRandom, pushImage } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { fetchAndHash, MiB, startCluster } from '../fixtures/cluster.js';
import { call, openUpload } from '../fixtures/oci-push.js';
import type { StevedoreProcess } from '../fixtures/stevedore-process.js';
import { waitFor } from '../fixtures/util.js';
import { OPEN_AUTH } from '../fixtures/stevedore.js';

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

t.test('a tag and a manifest by digest asked of 3 replicas at once: one upstream request each for the cluster', async (t) => {
  const reg = await startRegistry({ bytesPerSecond: 4 * MiB });
  t.teardown(() => reg.stop());
  const image = buildDockerImage('cluster-tags/v1', { layers: 1 });
  await pushImage(reg.directUrl, 'library/app', 'v1', image);
  const c = await startCluster(t, { replicas: 3, upstreamUrl: reg.url });
  reg.resetCounts();
  const byTag = await Promise.all(
    Array.from({ length: 9 }, (_, i) => fetch(`${c.replicas[i % 3]!.url}/v2/library/app/manifests/v1?ns=docker.io`, { headers: { accept: image.manifest.mediaType } })),
  );
  t.same(byTag.map((r) => r.status), Array(9).fill(200), 'every replica answers the tag');
  t.same(new Set(byTag.map((r) => r.headers.get('docker-content-digest'))), new Set([image.manifest.digest]));
  t.equal(reg.count('*', /\/manifests\/v1$/), 1, 'one upstream request for the tag across the cluster');

  const other = buildDockerImage('cluster-tags/v2', { layers: 1 });
  await pushImage(reg.directUrl, 'library/app', 'v2', other);
  reg.resetCounts();
  const byDigest = await Promise.all(
    Array.from({ length: 9 }, (_, i) => fetch(`${c.replicas[i % 3]!.url}/v2/library/app/manifests/${other.manifest.digest}?ns=docker.io`, { headers: { accept: other.manifest.mediaType } })),
  );
  t.same(byDigest.map((r) => r.status), Array(9).fill(200), 'every replica answers the digest');
  t.equal(reg.count('GET', new RegExp(`/manifests/${other.manifest.digest}$`)), 1, 'one upstream GET for the manifest across the cluster');
});

t.test('a tag pushed into an upstream namespace on one replica is served at once by the others', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const c = await startCluster(t, { replicas: 2, upstreamUrl: reg.url, config: { auth: OPEN_AUTH, cache: { tagTTL: '1h' } } });
  const [a, b] = c.replicas as [StevedoreProcess, StevedoreProcess];
  const first = buildDockerImage('cluster-seed/first', { layers: 1 });
  const get = async (r: StevedoreProcess): Promise<string | null> =>
    (await fetch(`${r.url}/v2/docker.io/library/lab-tool/manifests/v1`, { headers: { accept: first.manifest.mediaType } })).headers.get('docker-content-digest');
  // Seeded: a tag the upstream does not have, pushed into its namespace (air-gap seeding).
  await pushImage(a.url, 'docker.io/library/lab-tool', 'v1', first);
  t.equal(await get(b), first.manifest.digest, 'replica b serves the seeded tag (and remembers its answer for the tag TTL)');
  const second = buildDockerImage('cluster-seed/second', { layers: 1 });
  await pushImage(a.url, 'docker.io/library/lab-tool', 'v1', second);
  t.equal(await get(a), second.manifest.digest, 'the pushing replica serves the new push');
  await waitFor('replica b to forget its answer', async () => (await get(b)) === second.manifest.digest, 3_000);
  t.pass('replica b serves it too, long before its remembered answer would have expired');
});

t.test('upload limits hold for the cluster, not per replica', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const c = await startCluster(t, {
    replicas: 3,
    upstreamUrl: reg.url,
    config: { registry: { hosted: ['lab/**'], maxUploadSessions: 2, uploadQuotaPerUser: '1MiB' }, auth: OPEN_AUTH },
  });
  const [a, b, d] = c.replicas as [StevedoreProcess, StevedoreProcess, StevedoreProcess];
  const s1 = await openUpload(a.url, 'lab/app');
  await openUpload(b.url, 'lab/app');
  const third = await call(d.url, 'POST', '/v2/lab/app/blobs/uploads/', { headers: { 'content-length': '0' } });
  t.equal(third.status, 429, 'a third session on a third replica is refused: two are open in the cluster');
  const part = pseudoRandom('cluster-quota', 600 * 1024);
  const patch = (r: StevedoreProcess, location: string, offset: number): ReturnType<typeof call> =>
    call(r.url, 'PATCH', location, {
      body: part,
      headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${offset + part.length - 1}`, 'content-length': String(part.length) },
    });
  const first = await patch(b, s1.location, 0);
  t.equal(first.status, 202, '600 KiB on another replica than the one that opened the session');
  const second = await patch(d, String(first.headers.location), part.length);
  t.equal(second.status, 413, 'the next 600 KiB, on a third replica, would pass the 1 MiB quota: refused');
});
