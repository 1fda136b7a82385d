// Cluster mode when the upstream lies or refuses: the replica holding a download fails it, and the
// clients following it from other replicas fail too (never a complete body of unverified bytes,
// never a hang), with the holder's reason when they had not been answered yet.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { blobUrl, fetchAndHash, MiB, startCluster, storedPath } from '../fixtures/cluster.js';
import { notFound, sendJson, sleep, startFake, writeAndWait, type Fake } from '../fixtures/fake-upstream.js';
import { pseudoRandom, makeBlob } from '../fixtures/images.js';
import { waitFor } from '../fixtures/util.js';
import { hangUp, requestHead } from '../fixtures/hangup.js';

const blob = makeBlob(pseudoRandom('cluster-faults', 4 * MiB), 'application/octet-stream');

/**
 * An upstream that sends `body` as blob `digest` (of any repository, or only of `repo`) in pieces
 * of `piece` bytes every 100 ms, so that clients of other replicas join while it runs; anything
 * else is 404.
 */
function slowUpstream(t: Test, digest: string, body: Buffer, opts: { repo?: string; piece?: number } = {}): Promise<Fake> {
  const piece = opts.piece ?? 512 * 1024;
  return startFake(t, async (req, res, url) => {
    if (url.pathname === '/v2/') return sendJson(res, 200, {});
    const mine = opts.repo ? url.pathname === `/v2/${opts.repo}/blobs/${digest}` : url.pathname.endsWith(`/blobs/${digest}`);
    if (!mine) return notFound(res);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(body.length) });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    for (let i = 0; i < body.length; i += piece) {
      if (!(await writeAndWait(res, body.subarray(i, i + piece)))) return;
      await sleep(100);
    }
    res.end();
  });
}

t.test('wrong bytes from the upstream: no client of any replica gets a complete body, nothing is stored', async (t) => {
  const wrong = pseudoRandom('not-the-blob', blob.size);
  // About 1.5 s: clients of the other replica join while it runs.
  const fake = await slowUpstream(t, blob.digest, wrong, { piece: 256 * 1024 });
  const c = await startCluster(t, { replicas: 2, upstreamUrl: fake.url });
  const first = fetchAndHash(blobUrl(c.replicas[0]!, blob.digest));
  await waitFor('the download to start', async () => fake.count('GET', /\/blobs\//) === 1, 10_000);
  const others = await Promise.all([1, 2, 3].map(() => fetchAndHash(blobUrl(c.replicas[1]!, blob.digest))));
  const all = [await first, ...others];
  t.same(
    all.filter((r) => r.status === 200 && r.bytes === blob.size),
    [],
    'no client received a complete body: the last byte is held back until the digest matches',
  );
  t.equal(fake.count('GET', /\/blobs\//), 1, 'one upstream download for both replicas');
  t.equal(await fsp.stat(storedPath(c, blob.digest)).catch(() => null), null, 'nothing stored');
  const parts = await fsp.readdir(path.join(c.storeDir, 'tmp', 'shared')).catch(() => []);
  t.same(parts, [], 'and the shared temp file is gone');
});

t.test('the upstream does not have it: clients of the other replica get BLOB_UNKNOWN from the holder, not a download of their own', async (t) => {
  const fake = await startFake(t, async (req, res, url) => {
    if (url.pathname === '/v2/') return sendJson(res, 200, {});
    await sleep(800); // the other replica's clients arrive while the holder waits for this answer
    notFound(res);
  });
  const c = await startCluster(t, { replicas: 2, upstreamUrl: fake.url });
  const first = fetchAndHash(blobUrl(c.replicas[0]!, blob.digest));
  await waitFor('the request to reach the upstream', async () => fake.count('GET', /\/blobs\//) === 1, 10_000);
  const others = await Promise.all([1, 2].map(() => fetch(blobUrl(c.replicas[1]!, blob.digest))));
  t.equal((await first).status, 404);
  for (const r of others) {
    t.equal(r.status, 404, 'the follower answers 404');
    t.match(await r.json(), { errors: [{ code: 'BLOB_UNKNOWN' }] });
  }
  t.equal(fake.count('GET', /\/blobs\//), 1, 'the upstream was asked once');
});

t.test('clients of a following replica hang up at every stage: it keeps serving, the download completes for the rest', async (t) => {
  const good = makeBlob(pseudoRandom('cluster-hangups', 8 * MiB), 'application/octet-stream');
  const fake = await slowUpstream(t, good.digest, good.data);
  const c = await startCluster(t, { replicas: 2, upstreamUrl: fake.url });
  const first = fetchAndHash(blobUrl(c.replicas[0]!, good.digest));
  await waitFor('the download to start', async () => fake.count('GET', /\/blobs\//) === 1, 10_000);
  const follower = c.replicas[1]!;
  const port = Number(new URL(follower.url).port);
  const p = `/v2/library/big/blobs/${good.digest}?ns=docker.io`;
  const cuts = await Promise.all([
    hangUp(port, [requestHead('GET', p)], { afterReceived: 0 }), // as the answer begins
    hangUp(port, [requestHead('GET', p)], { afterReceived: 64 * 1024 }), // mid-body
    hangUp(port, [requestHead('GET', p)], { afterReceived: 1024 * 1024, reset: false }), // mid-body, FIN
    hangUp(port, [requestHead('GET', p).subarray(0, 20)], { afterSent: 20 }), // mid-request
  ]);
  t.equal(cuts.length, 4);
  const late = await fetchAndHash(blobUrl(follower, good.digest));
  t.equal(late.digest, good.digest, 'a client after the hang-ups gets the whole blob from the following replica');
  t.equal((await first).digest, good.digest);
  t.equal(fake.count('GET', /\/blobs\//), 1, 'still one upstream download');
  t.same(follower.defects, [], 'no unhandled rejection or uncaught exception in the following replica');
});

t.test("a download one replica holds for one repository is not served by another replica under a name the upstream does not confirm", async (t) => {
  const secret = makeBlob(pseudoRandom('cluster-rule9', 4 * MiB), 'application/octet-stream');
  // Only library/private has it; library/other does not.
  const fake = await slowUpstream(t, secret.digest, secret.data, { repo: 'library/private' });
  const c = await startCluster(t, { replicas: 2, upstreamUrl: fake.url });
  const owner = fetchAndHash(blobUrl(c.replicas[0]!, secret.digest, 'library/private'));
  await waitFor('the download to start', async () => fake.count('GET', /\/blobs\//) === 1, 10_000);
  const other = await fetch(blobUrl(c.replicas[1]!, secret.digest, 'library/other'));
  t.equal(other.status, 404, 'another name is refused while the download runs on the other replica');
  await other.arrayBuffer();
  t.equal((await owner).digest, secret.digest);
  const after = await fetch(blobUrl(c.replicas[1]!, secret.digest, 'library/other'));
  t.equal(after.status, 404, 'and once it is stored');
  await after.arrayBuffer();
  const same = await fetchAndHash(blobUrl(c.replicas[1]!, secret.digest, 'library/private'));
  t.equal(same.digest, secret.digest, 'the repository that has it is served by every replica');
});

t.test('a Range request on a replica following another one\'s download gets exactly those bytes', async (t) => {
  const big = makeBlob(pseudoRandom('cluster-range', 8 * MiB), 'application/octet-stream');
  const fake = await slowUpstream(t, big.digest, big.data);
  const c = await startCluster(t, { replicas: 2, upstreamUrl: fake.url });
  const first = fetchAndHash(blobUrl(c.replicas[0]!, big.digest));
  await waitFor('the download to start', async () => fake.count('GET', /\/blobs\//) === 1, 10_000);
  const start = 5 * MiB + 3;
  const end = 6 * MiB + 100;
  const res = await fetch(blobUrl(c.replicas[1]!, big.digest), { headers: { range: `bytes=${start}-${end}` } });
  t.equal(res.status, 206);
  t.equal(res.headers.get('content-range'), `bytes ${start}-${end}/${big.size}`);
  const body = Buffer.from(await res.arrayBuffer());
  t.ok(body.equals(big.data.subarray(start, end + 1)), 'the bytes of the range, from the growing shared file');
  t.equal((await first).digest, big.digest);
  // One download of the whole blob; the range, far past what the shared file held, may also have
  // been asked of the upstream on its own (lazy ranges, lib/cache/upstream-ranges.ts) — this
  // upstream ignores Range, so that answer was dropped and the range followed the download.
  const gets = fake.requests.filter((r) => r.method === 'GET' && /\/blobs\//.test(r.path));
  t.equal(gets.filter((r) => r.headers.range === undefined).length, 1, 'one upstream download of the whole blob');
  t.ok(gets.filter((r) => r.headers.range !== undefined).every((r) => r.headers.range === `bytes=${start}-${end}`), 'any other GET asked for the range alone');
});

// Found by the soak (bench/scenarios/s13-soak.ts): a follower reads the shared temp file through a
// descriptor it opened once. When the holder's download fails its digest, that file is deleted, and
// a new download of the digest (the next request) writes a new one and stores it: the follower's
// descriptor still reads the deleted file of wrong bytes, and "stored, of the announced size" let it
// send them whole.
t.test('wrong bytes, then a new download that stores the blob: a client following the failed one on another replica never gets a complete body of the wrong bytes', async (t) => {
  const wrong = Buffer.from(blob.data);
  wrong[100] = wrong[100]! ^ 0xff;
  let gets = 0;
  const fake = await startFake(t, async (req, res, url) => {
    if (url.pathname === '/v2/') return sendJson(res, 200, {});
    if (!url.pathname.endsWith(`/blobs/${blob.digest}`)) return notFound(res);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) });
    if (req.method === 'HEAD') return void res.end();
    // The first download: the wrong bytes (one changed), about 1.6 s; then the right ones at once.
    const first = ++gets === 1;
    const body = first ? wrong : blob.data;
    for (let i = 0; i < body.length; i += 256 * 1024) {
      if (!(await writeAndWait(res, body.subarray(i, i + 256 * 1024)))) return;
      if (first) await sleep(100);
    }
    res.end();
  });
  // The follower looks every 3 s: the failure and the new download both fall between two looks.
  const c = await startCluster(t, { replicas: 2, upstreamUrl: fake.url, cluster: { leaseTTL: '10s', pollInterval: '3s' } });
  const holderClient = fetchAndHash(blobUrl(c.replicas[0]!, blob.digest));
  await waitFor('the download to start', async () => fake.count('GET', /\/blobs\//) === 1, 10_000);
  await sleep(300);
  const follower = fetchAndHash(blobUrl(c.replicas[1]!, blob.digest));
  t.not((await holderClient).digest, blob.digest, "the holder's client is cut (the wrong bytes did not verify)");
  // The next request on the holder's replica downloads the blob again, and stores it.
  let again = await fetchAndHash(blobUrl(c.replicas[0]!, blob.digest));
  for (let i = 0; i < 10 && again.digest !== blob.digest; i++) {
    await sleep(100);
    again = await fetchAndHash(blobUrl(c.replicas[0]!, blob.digest));
  }
  t.equal(again.digest, blob.digest, 'a new download stores the right bytes');
  const f = await follower;
  t.notOk(f.status === 200 && f.bytes === blob.size && f.digest !== blob.digest, `the follower got no complete body of wrong bytes (status ${f.status}, ${f.bytes} bytes, ${f.digest.slice(0, 19)}, ${f.error ?? 'no error'})`);
  t.ok(f.digest === blob.digest || f.error !== undefined, 'it got the blob or was cut');
});
