// server.workers: 2 — `stevedore serve` as a supervisor and two workers on one port and one store,
// coordinated through the supervisor (no Redis), in front of a real registry (CNCF distribution
// behind a counting, pacing proxy). Both workers answer; a cold blob is fetched once for the host;
// the worker holding a download killed -9 is restarted and its download taken over; SIGTERM drains
// both; /metrics answers with the host's figures.
import { promises as fsp } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import t, { type Test } from 'tap';
import { makeBlob, pseudoRandom } from '../fixtures/images.js';
import { blobGets, fetchAndHash, MiB, sha256File, upstreamWith } from '../fixtures/cluster.js';
import { spawnStevedore, type StevedoreProcess } from '../fixtures/stevedore-process.js';
import { tmpDir, waitFor } from '../fixtures/util.js';

// Two workers started for each test: minutes on a busy 2-core machine.
t.setTimeout(10 * 60_000);

/** A GET on a connection of its own (round-robin hands out connections, not requests). */
function getAlone(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

/** The samples of one metric in a /metrics text: labels → value. */
function samples(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`).exec(line);
    if (m) out.set(m[1] ?? '', Number(m[2]));
  }
  return out;
}

async function workersOn(t: Test, upstreamUrl: string, extra: Record<string, unknown> = {}): Promise<{ p: StevedoreProcess; storeDir: string }> {
  const storeDir = await tmpDir(t, 'stevedore-workers-');
  const p = await spawnStevedore(t, {
    upstreams: { 'docker.io': { url: upstreamUrl } },
    storage: { path: storeDir },
    cluster: { leaseTTL: '2s', pollInterval: '50ms' },
    ...extra,
    server: { workers: 2, ...(extra.server as Record<string, unknown> | undefined) },
  });
  return { p, storeDir };
}

const blobUrl = (p: StevedoreProcess, digest: string): string => `${p.url}/v2/library/big/blobs/${digest}?ns=docker.io`;
/** The pid of the worker whose log says it holds the download's lease (its replica id is <host>-<pid>). */
const holderPid = (p: StevedoreProcess): number | null => {
  const line = p.logs.find((l) => l.msg === 'downloading a blob for the cluster (holding its lease)');
  return line ? Number(/-(\d+)$/.exec(String(line.replica))?.[1]) : null;
};

t.test('two workers serve one port, both answer, and /metrics gives the host\'s sums with per-worker figures', async (t) => {
  const reg = await upstreamWith(t, makeBlob(pseudoRandom('w-small', 1024), 'application/octet-stream'), 100 * MiB);
  const { p } = await workersOn(t, reg.url);
  t.equal(p.logs.filter((l) => l.msg === 'stevedore listening').length, 2, 'two workers listening');
  const statuses: number[] = [];
  for (let i = 0; i < 20; i++) statuses.push((await getAlone(`${p.url}/v2/`)).status);
  t.same([...new Set(statuses)], [200]);
  const text = (await getAlone(`${p.url}/metrics`)).body;
  const perWorker = samples(text, 'stevedore_worker_http_requests_total');
  t.same([...perWorker.keys()].sort(), ['{worker="1"}', '{worker="2"}'], 'a request count for each worker');
  t.ok([...perWorker.values()].every((n) => n >= 5), `round-robin: each worker answered a share of 20 connections (${[...perWorker.values()].join(', ')})`);
  const base = samples(text, 'stevedore_http_requests_total').get('{route="base",method="GET",status="200",cache="none"}');
  t.equal(base, 20, 'the host\'s request count is the sum of the workers\'');
  t.equal(samples(text, 'stevedore_workers').get(''), 2);
  t.same([...samples(text, 'stevedore_worker_resident_memory_bytes').keys()].sort(), ['{worker="1"}', '{worker="2"}'], 'each worker\'s RSS');
  const state = JSON.parse((await getAlone(`${p.url}/ui/api/state`)).body) as { hour: { requests: number }; workers: Array<{ worker: string; requests: number }> | null };
  t.same(state.workers?.map((w) => w.worker), ['1', '2'], 'the dashboard has a row for each worker');
  t.equal(state.hour.requests, 20, 'and its hour is the host\'s: both workers\' requests');
  t.equal(state.workers?.reduce((n, w) => n + w.requests, 0), 20);
});

t.test('a cold blob pulled by 12 clients through two workers is fetched once from the upstream', async (t) => {
  const blob = makeBlob(pseudoRandom('w-cold', 24 * MiB), 'application/octet-stream');
  // ~1.5 s on the wire: every client arrives while the download runs.
  const reg = await upstreamWith(t, blob, 16 * MiB);
  const { p, storeDir } = await workersOn(t, reg.url);
  const results = await Promise.all(Array.from({ length: 12 }, () => fetchAndHash(blobUrl(p, blob.digest))));
  t.same(results.filter((r) => r.status !== 200 || r.digest !== blob.digest).map((r) => r.error ?? r.status), [], 'every client got 200 and the right bytes');
  t.equal(blobGets(reg, blob.digest).length, 1, 'one upstream GET for the host');
  const perWorker = samples((await getAlone(`${p.url}/metrics`)).body, 'stevedore_worker_http_requests_total');
  t.ok([...perWorker.values()].filter((n) => n > 0).length === 2, 'both workers served clients');
  const hex = blob.digest.slice(7);
  t.equal(await sha256File(path.join(storeDir, 'blobs', 'sha256', hex.slice(0, 2), hex)), blob.digest, 'the stored blob verifies');
});

t.test('the worker holding a download killed -9: the other takes it over, every client gets the right bytes, the worker is restarted', async (t) => {
  const blob = makeBlob(pseudoRandom('w-kill', 48 * MiB), 'application/octet-stream');
  // ~3 s on the wire: the kill lands mid-body.
  const reg = await upstreamWith(t, blob, 16 * MiB);
  const { p, storeDir } = await workersOn(t, reg.url);
  const clients = Array.from({ length: 8 }, () => fetchAndHash(blobUrl(p, blob.digest)));
  await waitFor('the download to start', async () => holderPid(p) !== null, 10_000);
  await waitFor('a quarter of the blob on disk', async () => {
    const st = await fsp.stat(path.join(storeDir, 'tmp', 'shared', `sha256-${blob.digest.slice(7)}.part`)).catch(() => null);
    return (st?.size ?? 0) > blob.size / 4;
  }, 10_000);
  const killed = holderPid(p)!;
  process.kill(killed, 'SIGKILL');
  const results = await Promise.all(clients);
  // A client of the killed worker lost its connection mid-body (as with any process killed); a
  // retry is served, from the store or the taken-over download.
  const retried = await Promise.all(results.map((r) => (r.status === 200 && r.digest === blob.digest ? r : fetchAndHash(blobUrl(p, blob.digest)))));
  t.same(retried.filter((r) => r.status !== 200 || r.digest !== blob.digest).map((r) => r.error ?? r.status), [], 'every client has the right bytes');
  t.ok(results.some((r) => r.status === 200 && r.digest === blob.digest), 'the other worker\'s clients completed without retrying');
  const gets = blobGets(reg, blob.digest);
  t.ok(gets.length >= 2 && gets.slice(1).some((g) => g.range !== null), `taken over with a Range resume (${JSON.stringify(gets)})`);
  t.ok(p.logs.some((l) => l.msg === 'worker exited; restarting it' && l.pid === killed), 'the supervisor saw the worker die');
  await waitFor('the worker restarted', async () => p.logs.filter((l) => l.msg === 'stevedore listening').length >= 3, 30_000);
  const perWorker = samples((await getAlone(`${p.url}/metrics`)).body, 'stevedore_worker_restarts_total');
  t.equal([...perWorker.values()].reduce((a, b) => a + b, 0), 1, 'one restart counted');
});

t.test('SIGTERM drains both workers: a transfer in flight completes and the supervisor exits within the grace period', async (t) => {
  const blob = makeBlob(pseudoRandom('w-drain', 16 * MiB), 'application/octet-stream');
  // ~2 s on the wire.
  const reg = await upstreamWith(t, blob, 8 * MiB);
  const { p } = await workersOn(t, reg.url, { server: { shutdownGrace: '10s' } });
  const client = fetchAndHash(blobUrl(p, blob.digest));
  await waitFor('the download to start', async () => blobGets(reg, blob.digest).length === 1, 10_000);
  const started = Date.now();
  const exited = new Promise<number | null>((resolve) => p.child.once('exit', (code) => resolve(code)));
  await p.kill('SIGTERM');
  const code = await exited.catch(() => p.child.exitCode);
  const took = Date.now() - started;
  const got = await client;
  t.equal(got.status, 200);
  t.equal(got.digest, blob.digest, 'the transfer in flight completed');
  t.equal(p.logs.filter((l) => l.msg === 'draining').length, 2, 'both workers drained');
  t.ok(p.logs.some((l) => l.msg === 'supervisor: every worker has exited'));
  t.equal(p.child.exitCode ?? code, 0, 'the supervisor exits 0');
  t.ok(took < 10_000, `within the grace period (${took} ms)`);
});

t.test('SIGHUP to the supervisor reaches every worker: each reads its signature policies again, and all keep serving', async (t) => {
  const dir = await tmpDir(t, 'stevedore-workers-hup-');
  const keyFile = path.join(dir, 'cosign.pub');
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  await fsp.writeFile(keyFile, publicKey.export({ type: 'spki', format: 'pem' }));
  const { p } = await workersOn(t, 'http://127.0.0.1:1', { verify: { policies: [{ repository: 'docker.io/lab/**', keys: [keyFile] }] } });
  const listening = (): Set<unknown> => new Set(p.logs.filter((l) => l.msg === 'stevedore listening').map((l) => l.worker));
  await waitFor('both workers to listen', async () => listening().size === 2, 30_000);
  const before = p.logs.filter((l) => l.msg === 'signature policies loaded').length;
  p.child.kill('SIGHUP');
  await waitFor('both workers to read them again', async () => p.logs.filter((l) => l.msg === 'signature policies loaded').length === before + 2, 30_000);
  const again = p.logs.filter((l) => l.msg === 'signature policies loaded').slice(before);
  t.same([...new Set(again.map((l) => l.worker))].sort(), [1, 2], 'one reload in each worker (their lines name them)');
  t.ok(p.logs.some((l) => l.msg === 'supervisor: passing the signal to every worker' && l.signal === 'SIGHUP'), 'the supervisor logged it');
  t.equal(p.child.exitCode, null, 'the supervisor still runs');
  t.equal((await getAlone(`${p.url}/healthz`)).status, 200, 'and serves');
});

t.test("the dashboard's list of images a warn policy served unsigned counts every worker's answers", async (t) => {
  const { startRegistry } = await import('../fixtures/registry.js');
  const { buildOciImage, pushImage } = await import('../fixtures/images.js');
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildOciImage('workers/unsigned', { layers: 1, layerSize: 64 });
  await pushImage(reg.url, 'lab/unsigned', 'v1', img);
  const dir = await tmpDir(t, 'stevedore-workers-warn-');
  const keyFile = path.join(dir, 'cosign.pub');
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  await fsp.writeFile(keyFile, publicKey.export({ type: 'spki', format: 'pem' }));
  const { p } = await workersOn(t, reg.url, { verify: { policies: [{ repository: 'docker.io/lab/**', mode: 'warn', keys: [keyFile] }] } });
  await waitFor('both workers to listen', async () => new Set(p.logs.filter((l) => l.msg === 'stevedore listening').map((l) => l.worker)).size === 2, 30_000);
  // Connections of their own: round-robin gives each worker a share of the ten pulls.
  for (let i = 0; i < 10; i++) t.equal((await getAlone(`${p.url}/v2/lab/unsigned/manifests/${img.manifest.digest}?ns=docker.io`)).status, 200);
  const state = JSON.parse((await getAlone(`${p.url}/ui/api/state`)).body) as { unverified: Array<{ repository: string; digest: string; count: number }> | null };
  t.same(state.unverified?.map((u) => [u.repository, u.digest, u.count]), [['docker.io/lab/unsigned', img.manifest.digest, 10]], 'one row, both workers\' answers added up');
});
