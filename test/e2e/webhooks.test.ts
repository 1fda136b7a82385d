// Webhooks (config webhooks, lib/events/webhooks.ts): CloudEvents 1.0 for pushes and deletes,
// signed with HMAC-SHA256, delivered by a bounded queue with bounded retries that never holds a
// request up. The receiver is a small server the test starts (test/fixtures/webhook-receiver.ts).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { keyPair } from '../fixtures/signing.js';
import { buildOciImage, MANIFEST_ACCEPT, pseudoRandom, pushImage, sha256 } from '../fixtures/images.js';
import { notFound, startFake } from '../fixtures/fake-upstream.js';
import { rawRequest } from '../fixtures/http-client.js';
import { startRegistry } from '../fixtures/registry.js';
import { skopeoCopy } from '../fixtures/skopeo.js';
import { FakeClock, startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { freePort, tmpDir, waitFor } from '../fixtures/util.js';
import { startReceiver, validSignature, type Receiver } from '../fixtures/webhook-receiver.js';

const SECRET = 'a-webhook-secret-of-32-chars-xyz';

function metric(text: string, name: string, labels: Record<string, string> = {}): number | null {
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries((m[2] ?? '').split(',').filter(Boolean).map((kv) => kv.split('=').map((x) => x.replace(/^"|"$/g, '')) as [string, string]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return null;
}

async function deliveries(sd: Stevedore, outcome: string): Promise<number> {
  const text = await (await fetch(`${sd.url}/metrics`)).text();
  return metric(text, 'stevedore_webhook_deliveries_total', { outcome }) ?? -1;
}

function hooked(url: string, extra: Record<string, unknown> = {}, endpoint: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    registry: { hosted: ['lab/**'], delete: true },
    webhooks: { retryDelay: '50ms', maxRetryDelay: '200ms', timeout: '2s', ...extra, endpoints: [{ url, secret: SECRET, ...endpoint }] },
  };
}

t.test('a skopeo push sends push events with the right digests, signed with the shared secret (structured mode)', async (t) => {
  const src = await startRegistry();
  t.teardown(() => src.stop());
  const v1 = buildOciImage('webhooks/v1', { layers: 1 });
  const v2 = buildOciImage('webhooks/v2', { layers: 1 });
  await pushImage(src.url, 'library/app', 'v1', v1);
  await pushImage(src.url, 'library/app', 'v2', v2);
  const rx = await startReceiver(t);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: hooked(rx.url) });

  const r1 = await skopeoCopy(`docker://${src.host}/library/app:v1`, `docker://${sd.host}/lab/app:latest`);
  t.equal(r1.code, 0, r1.stderr);
  await rx.waitFor(1);
  const r2 = await skopeoCopy(`docker://${src.host}/library/app:v2`, `docker://${sd.host}/lab/app:latest`);
  t.equal(r2.code, 0, r2.stderr);
  await rx.waitFor(2);

  for (const req of rx.requests) {
    t.equal(req.method, 'POST');
    t.match(String(req.headers['content-type']), /^application\/cloudevents\+json/);
    t.ok(validSignature(SECRET, req.body, req.headers['x-stevedore-signature']), 'the HMAC-SHA256 of the body is valid');
    t.notOk(validSignature('another-secret-of-32-characters!', req.body, req.headers['x-stevedore-signature']), 'and is not valid for another secret');
  }
  const [first, second] = rx.events();
  t.match(first, { specversion: '1.0', type: 'dev.stevedore.push', source: '/stevedore', subject: 'lab/app:latest', datacontenttype: 'application/json' });
  t.match(first!.data, { type: 'push', repository: 'lab/app', tag: 'latest', digest: v1.manifest.digest, previousDigest: null });
  t.match(second!.data, { type: 'push', repository: 'lab/app', tag: 'latest', digest: v2.manifest.digest, previousDigest: v1.manifest.digest });
  t.not(first!.id, second!.id, 'each event has its own id');
  t.equal(first!.id, first!.data.id, 'the data repeats the id (signed with the body)');
  t.equal(rx.requests.length, 2, 'one event per manifest pushed, nothing for blob uploads');
});

t.test('binary mode: ce-* headers, the data as the body, the HMAC over that body; a delete is an event too', async (t) => {
  const rx = await startReceiver(t);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: hooked(rx.url, {}, { mode: 'binary' }) });
  const img = buildOciImage('webhooks/binary', { layers: 1 });
  await pushImage(sd.url, 'lab/bin', 'v1', img);
  await rx.waitFor(1);
  const del = await fetch(`${sd.url}/v2/lab/bin/manifests/${img.manifest.digest}`, { method: 'DELETE' });
  t.equal(del.status, 202);
  await rx.waitFor(2);
  const [push, gone] = rx.requests;
  t.equal(push!.headers['ce-specversion'], '1.0');
  t.equal(push!.headers['ce-type'], 'dev.stevedore.push');
  t.equal(push!.headers['ce-subject'], 'lab/bin:v1');
  t.equal(push!.headers['content-type'], 'application/json');
  t.ok(validSignature(SECRET, push!.body, push!.headers['x-stevedore-signature']), 'the HMAC of the body is valid');
  const data = JSON.parse(push!.body.toString()) as Record<string, unknown>;
  t.match(data, { type: 'push', id: push!.headers['ce-id'], digest: img.manifest.digest, repository: 'lab/bin' });
  t.equal(gone!.headers['ce-type'], 'dev.stevedore.delete');
  t.match(JSON.parse(gone!.body.toString()), { type: 'delete', target: 'manifest', repository: 'lab/bin', digest: img.manifest.digest, tags: ['v1'] });
});

t.test('an upstream tag that moved is a tag.moved event naming the digest it had and the one it names now', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const a = buildOciImage('webhooks/moved-a', { layers: 1 });
  const b = buildOciImage('webhooks/moved-b', { layers: 1 });
  await pushImage(reg.url, 'library/moving', 'v1', a);
  const rx = await startReceiver(t);
  const clock = new FakeClock();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, clock, config: { webhooks: { endpoints: [{ url: rx.url, secret: SECRET, types: ['tag.moved'] }] } } });
  const pull = async (): Promise<string | null> => {
    const r = await fetch(`${sd.url}/v2/library/moving/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
    await r.arrayBuffer();
    return r.headers.get('docker-content-digest');
  };
  t.equal(await pull(), a.manifest.digest);
  await pushImage(reg.url, 'library/moving', 'v1', b);
  clock.advance(10 * 60_000);
  t.equal(await pull(), b.manifest.digest, 'the revalidation found the tag moved');
  await rx.waitFor(1);
  t.match(rx.events()[0], {
    type: 'dev.stevedore.tag.moved',
    subject: 'docker.io/library/moving:v1',
    data: { repository: 'docker.io/library/moving', tag: 'v1', digest: b.manifest.digest, previousDigest: a.manifest.digest, user: null },
  });
  t.equal(rx.requests.length, 1, 'the first pull (no tag stored before) is no move');
});

t.test('a cached tag deleted upstream is one image.gone event, not one per pull', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildOciImage('webhooks/gone', { layers: 1 });
  await pushImage(reg.url, 'library/going', 'v1', img);
  const rx = await startReceiver(t);
  const clock = new FakeClock();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, clock, config: { webhooks: { endpoints: [{ url: rx.url, secret: SECRET, types: ['image.gone'] }] } } });
  const pull = async (): Promise<number> => {
    const r = await fetch(`${sd.url}/v2/library/going/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
    await r.arrayBuffer();
    return r.status;
  };
  t.equal(await pull(), 200);
  const del = await fetch(`${reg.directUrl}/v2/library/going/manifests/${img.manifest.digest}`, { method: 'DELETE' });
  t.equal(del.status, 202, 'the upstream deleted the image');
  for (let i = 0; i < 3; i++) {
    clock.advance(10 * 60_000);
    t.equal(await pull(), 200, 'the kept tag is still served');
  }
  await rx.waitFor(1);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(rx.requests.length, 1, 'one event for the tag going, none for the pulls after');
  t.match(rx.events()[0], { type: 'dev.stevedore.image.gone', subject: 'docker.io/library/going:v1', data: { repository: 'docker.io/library/going', tag: 'v1', digest: img.manifest.digest } });
});

t.test('a manifest a signature policy refuses is a signature.refused event and audit line (not an access.denied one)', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildOciImage('webhooks/unsigned', { layers: 1 });
  await pushImage(reg.url, 'lab/unsigned', 'v1', img);
  const key = await keyPair(t, 'ec');
  const rx = await startReceiver(t);
  const auditFile = path.join(await tmpDir(t), 'audit.log');
  const sd = await startStevedore(t, {
    upstreams: { 'ghcr.io': { url: reg.url } },
    defaultUpstream: 'ghcr.io',
    config: {
      verify: { policies: [{ repository: 'ghcr.io/lab/**', mode: 'require', keys: [key.publicKeyFile] }] },
      audit: { enabled: true, file: auditFile },
      webhooks: { endpoints: [{ url: rx.url, secret: SECRET, types: ['signature.refused'] }] },
    },
  });
  const r = await fetch(`${sd.url}/v2/lab/unsigned/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
  t.equal(r.status, 403);
  await r.arrayBuffer();
  await rx.waitFor(1);
  t.match(rx.events()[0], { type: 'dev.stevedore.signature.refused', data: { repository: 'ghcr.io/lab/unsigned', digest: img.manifest.digest, reason: /requires a valid signature/ } });
  const lines = (): Array<Record<string, unknown>> => (existsSync(auditFile) ? readFileSync(auditFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) : []);
  await waitFor('the audit line', async () => lines().some((l) => l.act === 'signature.refused'));
  t.match(lines().find((l) => l.act === 'signature.refused'), { repository: 'ghcr.io/lab/unsigned', digest: img.manifest.digest, address: '127.0.0.1' });
  t.notOk(lines().some((l) => l.act === 'access.denied'), 'the refusal is not also an access.denied line');
});

t.test('an upstream download whose bytes do not match its digest is a download.verification-failed event', async (t) => {
  const good = pseudoRandom('webhooks/verify', 64 * 1024);
  const digest = sha256(good);
  const bad = Buffer.from(good);
  bad[100] = bad[100]! ^ 0xff;
  const up = await startFake(t, (req, res, url) => {
    if (url.pathname === '/v2/') {
      res.writeHead(200, { 'content-length': '2' });
      res.end('{}');
    } else if (url.pathname === `/v2/r/blobs/${digest}`) {
      res.writeHead(200, { 'content-length': String(bad.length), 'content-type': 'application/octet-stream' });
      res.end(req.method === 'HEAD' ? undefined : bad);
    } else {
      notFound(res);
    }
  });
  const rx = await startReceiver(t);
  const sd = await startStevedore(t, { upstreams: { 'blobs.test': { url: up.url } }, defaultUpstream: null, config: { webhooks: { endpoints: [{ url: rx.url, secret: SECRET }] } } });
  const r = await rawRequest(`${sd.url}/v2/r/blobs/${digest}?ns=blobs.test`);
  t.notOk(r.status === 200 && r.complete, 'the client is not given a complete answer');
  await rx.waitFor(1);
  t.match(rx.events()[0], { type: 'dev.stevedore.download.verification-failed', subject: `blobs.test/r@${digest}`, data: { repository: 'blobs.test/r', digest, reason: /does not match/ } });
});

t.test('filters: an endpoint gets only the event types and repositories it names', async (t) => {
  const all = await startReceiver(t);
  const some = await startReceiver(t);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: {
      registry: { hosted: ['lab/**', 'other/**'], delete: true },
      webhooks: {
        endpoints: [
          { url: all.url, secret: SECRET },
          { url: some.url, secret: SECRET, types: ['delete'], repositories: ['lab/*'] },
        ],
      },
    },
  });
  const a = buildOciImage('webhooks/filter-a', { layers: 1 });
  await pushImage(sd.url, 'lab/a', 'v1', a);
  await pushImage(sd.url, 'other/b', 'v1', a);
  t.equal((await fetch(`${sd.url}/v2/other/b/manifests/v1`, { method: 'DELETE' })).status, 202);
  t.equal((await fetch(`${sd.url}/v2/lab/a/manifests/v1`, { method: 'DELETE' })).status, 202);
  await all.waitFor(4);
  await some.waitFor(1);
  await new Promise((r) => setTimeout(r, 300));
  // Deliveries run side by side: the order of arrival is not the order of the acts.
  t.same(all.events().map((e) => `${String(e.type)} ${String(e.subject)}`).sort(), ['dev.stevedore.delete lab/a:v1', 'dev.stevedore.delete other/b:v1', 'dev.stevedore.push lab/a:v1', 'dev.stevedore.push other/b:v1']);
  t.same(some.events().map((e) => `${String(e.type)} ${String(e.subject)}`), ['dev.stevedore.delete lab/a:v1'], 'only the delete under lab/*');
});

async function pushOne(sd: Stevedore, n: number): Promise<void> {
  await pushImage(sd.url, 'lab/retry', `v${n}`, buildOciImage(`webhooks/retry-${n}`, { layers: 1 }));
}

t.test('a receiver answering 500 gets the first attempt and exactly `retries` more, then the delivery is given up', async (t) => {
  const rx = await startReceiver(t, 'fail');
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: hooked(rx.url, { retries: 3 }) });
  await pushOne(sd, 1);
  await waitFor('the delivery given up', async () => (await deliveries(sd, 'failed')) === 1);
  await new Promise((r) => setTimeout(r, 600));
  t.equal(rx.requests.length, 4, '1 attempt + 3 retries reached the receiver, no more');
  t.equal(new Set(rx.events().map((e) => e.id)).size, 1, 'every attempt carries the same event id');
  t.equal(await deliveries(sd, 'retried'), 3);
  t.equal(await deliveries(sd, 'delivered'), 0);
  const gaps = rx.requests.slice(1).map((r, i) => r.at - rx.requests[i]!.at);
  t.ok(gaps.every((g) => g >= 30), `attempts are spaced by the backoff (${gaps.join(', ')} ms)`);
  t.ok(gaps[2]! > gaps[0]!, `the backoff grows (${gaps.join(', ')} ms)`);
});

t.test('a receiver that is down costs bounded retries, then the delivery is given up', async (t) => {
  const port = await freePort();
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: hooked(`http://127.0.0.1:${port}/hook`, { retries: 2 }) });
  await pushOne(sd, 1);
  await waitFor('the delivery given up', async () => (await deliveries(sd, 'failed')) === 1);
  await new Promise((r) => setTimeout(r, 500));
  t.equal(await deliveries(sd, 'retried'), 2, 'two retries, no more');
  t.equal(await deliveries(sd, 'failed'), 1);
});

t.test('a slow receiver is given up on after the timeout, with bounded retries; then it recovers', async (t) => {
  const rx = await startReceiver(t, 'stall');
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: hooked(rx.url, { retries: 1, timeout: '300ms' }) });
  await pushOne(sd, 1);
  await waitFor('the delivery given up', async () => (await deliveries(sd, 'failed')) === 1);
  t.equal(rx.requests.length, 2, 'one attempt and one retry, each cut at the timeout');
  rx.behave('ok');
  await pushOne(sd, 2);
  await waitFor('the next event delivered', async () => (await deliveries(sd, 'delivered')) === 1);
  t.equal(rx.requests.length, 3);
});

t.test('the queue bound holds while the receiver stalls: deliveries past it are dropped and counted', async (t) => {
  const rx = await startReceiver(t, 'stall');
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: hooked(rx.url, { queueSize: 2, concurrency: 1, timeout: '30s' }),
  });
  for (let i = 1; i <= 6; i++) await pushOne(sd, i);
  await rx.waitFor(1);
  await new Promise((r) => setTimeout(r, 200));
  t.equal(await deliveries(sd, 'dropped'), 4, 'six events, two held (one in flight, one waiting), four dropped');
  t.equal(rx.requests.length, 1, 'one request in flight, the stalled one');
  t.ok(sd.logs.some((l) => l.msg === 'webhook queue full: event dropped'), 'each drop is logged');
});

/** Median ms of `n` sequential manifest + blob pulls. */
async function pullMedian(sd: Stevedore, repo: string, img: ReturnType<typeof buildOciImage>, n: number): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = performance.now();
    const m = await fetch(`${sd.url}/v2/${repo}/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
    await m.arrayBuffer();
    const b = await fetch(`${sd.url}/v2/${repo}/blobs/${img.layers[0]!.digest}`);
    await b.arrayBuffer();
    if (m.status !== 200 || b.status !== 200) throw new Error(`pull failed: ${m.status} ${b.status}`);
    ms.push(performance.now() - start);
  }
  ms.sort((a, b) => a - b);
  return ms[Math.floor(ms.length / 2)]!;
}

t.test('pulls are not slowed while the receiver stalls and the queue is full', async (t) => {
  const rx = await startReceiver(t, 'stall');
  const plain = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: { registry: { hosted: ['lab/**'] } } });
  const hooked_ = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: hooked(rx.url, { queueSize: 4, concurrency: 2, timeout: '60s' }) });
  const img = buildOciImage('webhooks/latency', { layers: 1, layerSize: 256 * 1024 });
  await pushImage(plain.url, 'lab/fast', 'v1', img);
  await pushImage(hooked_.url, 'lab/fast', 'v1', img);
  // Fill the queue past its bound: two deliveries stalled in flight, two waiting, the rest dropped.
  for (let i = 1; i <= 8; i++) await pushOne(hooked_, i);
  await rx.waitFor(2);
  t.ok((await deliveries(hooked_, 'dropped')) > 0, 'the queue is full');
  await pullMedian(plain, 'lab/fast', img, 5);
  await pullMedian(hooked_, 'lab/fast', img, 5);
  const without = await pullMedian(plain, 'lab/fast', img, 30);
  const withStall = await pullMedian(hooked_, 'lab/fast', img, 30);
  t.ok(withStall <= without * 3 + 20, `median pull with a stalled receiver ${withStall.toFixed(1)} ms vs ${without.toFixed(1)} ms without webhooks`);
  // A push (which emits an event) is answered as fast as well: it does not wait for the receiver.
  const start = performance.now();
  await pushOne(hooked_, 99);
  t.ok(performance.now() - start < 2_000, 'a push with a stalled receiver is answered at once');
});

t.test('an endpoint secret shorter than 16 characters is refused at start-up, naming the key', async (t) => {
  const rx: Receiver = await startReceiver(t);
  await t.rejects(
    startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: { webhooks: { endpoints: [{ url: rx.url, secret: 'short' }] } } }),
    /webhooks\.endpoints\.0\.secret: at least 16 characters/,
  );
});
