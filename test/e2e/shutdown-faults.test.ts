// Issue 28 item 7: every process exits within its grace period (server.shutdownGrace) whatever is
// down: Redis, the upstream, a client that does not read. Real processes (`stevedore serve`), a
// real redis-server and the real registry; SIGTERM as a container runtime sends it.
import t from 'tap';
import { blobUrl, fetchAndHash, MiB, startCluster, upstreamWith } from '../fixtures/cluster.js';
import { makeBlob, pseudoRandom } from '../fixtures/images.js';
import { spawnStevedore, type StevedoreProcess } from '../fixtures/stevedore-process.js';
import { tmpDir, waitFor } from '../fixtures/util.js';
import { requestHead } from '../fixtures/hangup.js';
import { notFound, sendJson, sleep, startFake, writeAndWait } from '../fixtures/fake-upstream.js';
import net from 'node:net';

const GRACE_MS = 2_000;
/** What a process may take beyond its grace: the last steps of close() and process exit, on a loaded machine. */
const MARGIN_MS = 2_500;

/**
 * Sends SIGTERM and resolves with how long it took to exit and its exit code; a process still
 * running 15 s later is killed (SIGKILL: code null), so that a hang fails the test, not the run.
 */
async function terminate(p: StevedoreProcess): Promise<{ ms: number; code: number | null }> {
  const started = performance.now();
  const exited = p.kill('SIGTERM');
  const late = setTimeout(() => p.child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(late);
  return { ms: performance.now() - started, code: p.child.exitCode };
}

t.test('three replicas sent SIGTERM while Redis is down each exit within the grace period, with code 0', async (t) => {
  const blob = makeBlob(pseudoRandom('shutdown-redis-down', 1 * MiB), 'application/octet-stream');
  const reg = await upstreamWith(t, blob, 0);
  const c = await startCluster(t, { replicas: 3, upstreamUrl: reg.url, config: { server: { shutdownGrace: `${GRACE_MS}ms` } } });
  // Each replica has done some cluster work (a lease, index records, recency) before Redis goes.
  for (const r of c.replicas) t.equal((await fetchAndHash(blobUrl(r, blob.digest))).digest, blob.digest);
  await c.redis.stop({ hard: true });
  await waitFor('every replica to notice Redis is gone', async () => c.replicas.every((r) => r.logs.some((l) => String(l.msg).startsWith('Redis is unreachable'))), 10_000);
  const exits = await Promise.all(c.replicas.map((r) => terminate(r)));
  for (const [i, e] of exits.entries()) {
    t.ok(e.ms < GRACE_MS + MARGIN_MS, `replica ${i} exited within the grace period (${Math.round(e.ms)} ms)`);
    t.equal(e.code, 0, `replica ${i} exited with code 0`);
    t.notOk(c.replicas[i]!.logs.some((l) => l.step === 'close the coordinator'), `replica ${i} closed its Redis connections at once, not at the deadline`);
  }
});

t.test('SIGTERM while a client is mid-download from a stalled upstream: the process exits within the grace period, the client sees a broken transfer', async (t) => {
  const blob = makeBlob(pseudoRandom('shutdown-stalled', 4 * MiB), 'application/octet-stream');
  // Half the blob, then nothing: the connection stays open, the body never ends.
  const fake = await startFake(t, async (req, res, url) => {
    if (url.pathname === '/v2/') return sendJson(res, 200, {});
    if (!url.pathname.endsWith(`/blobs/${blob.digest}`)) return notFound(res);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) });
    if (req.method === 'HEAD') return void res.end();
    await writeAndWait(res, blob.data.subarray(0, blob.size / 2));
  });
  const p = await spawnStevedore(t, { storage: { path: await tmpDir(t) }, upstreams: { 'docker.io': { url: fake.url } }, server: { shutdownGrace: `${GRACE_MS}ms` } });
  const client = fetchAndHash(blobUrl(p, blob.digest));
  await waitFor('the download to start', async () => fake.count('GET', /\/blobs\//) === 1, 10_000);
  await sleep(300);
  const e = await terminate(p);
  t.ok(e.ms < GRACE_MS + MARGIN_MS, `exited within the grace period (${Math.round(e.ms)} ms)`);
  t.equal(e.code, 0, 'with code 0');
  const got = await client;
  t.not(got.digest, blob.digest, 'the client did not get a whole blob');
  t.ok(got.status === 0 || got.status >= 500, `its transfer broke or it was answered with an error (${got.status} ${got.error ?? ''})`);
  t.ok(p.logs.some((l) => l.msg === 'shutdown: answers or downloads still running at the end of the grace period are cut'), 'the log says what the drain could not finish');
});

t.test('SIGTERM while a client does not read its body: the process exits within the grace period', async (t) => {
  // Larger than what the socket buffers on both sides hold; its bytes need not be random.
  const blob = makeBlob(Buffer.alloc(16 * MiB, 7), 'application/octet-stream');
  const reg = await upstreamWith(t, blob, 0);
  const p = await spawnStevedore(t, { storage: { path: await tmpDir(t) }, upstreams: { 'docker.io': { url: reg.url } }, server: { shutdownGrace: `${GRACE_MS}ms` } });
  t.equal((await fetchAndHash(blobUrl(p, blob.digest))).digest, blob.digest, 'stored');
  // Sends the request, reads nothing: the answer fills the socket buffers and waits.
  const sock = net.connect(Number(new URL(p.url).port), '127.0.0.1');
  t.teardown(() => sock.destroy());
  sock.pause();
  sock.write(requestHead('GET', `/v2/library/big/blobs/${blob.digest}?ns=docker.io`));
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  sock.on('error', () => undefined);
  await sleep(500);
  const e = await terminate(p);
  t.ok(e.ms < GRACE_MS + MARGIN_MS, `exited within the grace period (${Math.round(e.ms)} ms)`);
  t.equal(e.code, 0, 'with code 0');
  sock.resume();
  await closed;
  t.pass('the connection of the client that did not read was closed');
});
