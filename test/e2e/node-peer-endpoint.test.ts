// The endpoint node instances fetch blobs from each other on (issue 14): only to requests signed
// with the shared secret for this instance, this digest and a short time (issue 25), only what the instance holds (never fetched for a peer), bad input refused with OCI
// errors, peers that hang up at any point survived; and the directory kept true: withdrawn on
// shutdown and on eviction. Real processes: registry, central stevedore, node instances, Redis.
import t from 'tap';
import { buildDockerImage, pushImage, sha256 } from '../fixtures/images.js';
import { blobRequests, blobRequestsAtLeast, holders, PEER_TOKEN, peerSignature, pullImage, startTiers } from '../fixtures/node-tier.js';
import { ociErrors, rawRequest } from '../fixtures/http-client.js';
import { hangUp, requestHead } from '../fixtures/hangup.js';
import { waitFor } from '../fixtures/util.js';
import { MiB } from '../fixtures/cluster.js';

const peerPath = (digest: string): string => `/_stevedore/peer/v1/blobs/${digest}`;

t.test('the peer endpoint', async (t) => {
  const tier = await startTiers(t, { nodes: 1 });
  const node = tier.nodes[0]!;
  const img = buildDockerImage('peer-endpoint', { layers: 1, layerSize: 2 * MiB });
  await pushImage(tier.registry.directUrl, 'library/app', 'v1', img);
  await pullImage(node.url, 'library/app', 'v1');
  const layer = img.layers[0]!;
  const auth = peerSignature(node.url, layer.digest);
  await waitFor('the node announces the layer', async () => (await holders(tier.redis.url, layer.digest)).includes(node.url));

  await t.test('serves a held blob by digest to a request signed for it, with Range', async (t) => {
    const whole = await rawRequest(`${node.url}${peerPath(layer.digest)}`, { headers: auth });
    t.equal(whole.status, 200);
    t.equal(sha256(whole.body), layer.digest);
    const part = await rawRequest(`${node.url}${peerPath(layer.digest)}`, { headers: { ...auth, range: 'bytes=100-199' } });
    t.equal(part.status, 206);
    t.same(part.body, layer.data.subarray(100, 200));
  });

  const refusals: Array<[string, Parameters<typeof rawRequest>[1], string, number, string]> = [
    ['no signature', {}, layer.digest, 401, 'UNAUTHORIZED'],
    ['the shared token itself as a Bearer token (what fake peers used to collect)', { headers: { authorization: `Bearer ${PEER_TOKEN}` } }, layer.digest, 401, 'UNAUTHORIZED'],
    ['Basic credentials', { headers: { authorization: `Basic ${Buffer.from(`x:${PEER_TOKEN}`).toString('base64')}` } }, layer.digest, 401, 'UNAUTHORIZED'],
    ['a signature made with another secret', { headers: peerSignature(node.url, layer.digest, { token: 'another-secret-0123456789' }) }, layer.digest, 401, 'UNAUTHORIZED'],
    ['a signature for another address (collected by a fake peer)', { headers: peerSignature('http://127.0.0.1:9', layer.digest) }, layer.digest, 401, 'UNAUTHORIZED'],
    ['a signature for another digest', { headers: peerSignature(node.url, `sha256:${'1'.repeat(64)}`) }, layer.digest, 401, 'UNAUTHORIZED'],
    ['an expired signature', { headers: peerSignature(node.url, layer.digest, { now: () => Date.now() - 5 * 60_000 }) }, layer.digest, 401, 'UNAUTHORIZED'],
    ['a signature that lives for hours', { headers: peerSignature(node.url, layer.digest, { now: () => Date.now() + 5 * 3_600_000 }) }, layer.digest, 401, 'UNAUTHORIZED'],
    ['a malformed digest', { headers: peerSignature(node.url, 'sha256:xyz') }, 'sha256:xyz', 400, 'DIGEST_INVALID'],
    ['a digest it does not hold', { headers: peerSignature(node.url, `sha256:${'0'.repeat(64)}`) }, `sha256:${'0'.repeat(64)}`, 404, 'BLOB_UNKNOWN'],
    ['a malformed Range', { headers: { ...auth, range: 'bytes=x-' } }, layer.digest, 416, 'RANGE_INVALID'],
    ['an unsatisfiable Range', { headers: { ...auth, range: `bytes=${10 * MiB}-` } }, layer.digest, 416, 'RANGE_INVALID'],
    ['a POST', { method: 'POST', headers: peerSignature(node.url, layer.digest, { method: 'POST' }) }, layer.digest, 405, 'UNSUPPORTED'],
  ];
  for (const [what, opts, digest, status, code] of refusals) {
    await t.test(`refuses ${what}: ${status} ${code}`, async (t) => {
      const before = blobRequests(tier.central).length;
      const r = await rawRequest(`${node.url}${peerPath(digest)}`, opts);
      t.equal(r.status, status);
      t.equal(ociErrors(r)?.[0]?.code, code);
      t.equal(blobRequests(tier.central).length, before, 'nothing asked of central');
    });
  }

  await t.test('peers that hang up before the answer, after its head, mid-body: the node serves on', async (t) => {
    const port = Number(new URL(node.url).port);
    const head = requestHead('GET', peerPath(layer.digest), { headers: auth });
    for (const opts of [{ afterSent: 10 }, { afterReceived: 0 }, { afterReceived: 64 * 1024 }, { afterReceived: 1024 * 1024, reset: false }]) {
      await hangUp(port, [head], opts);
    }
    const r = await rawRequest(`${node.url}${peerPath(layer.digest)}`, { headers: auth });
    t.equal(r.status, 200);
    t.equal(sha256(r.body), layer.digest, 'a peer after them gets the blob intact');
  });

  await t.test('a node instance that stops withdraws what it announced', async (t) => {
    t.ok((await holders(tier.redis.url, layer.digest)).includes(node.url));
    await node.kill('SIGTERM');
    t.same(await holders(tier.redis.url, layer.digest), [], 'no holder left in the directory');
  });
});

t.test('a node instance withdraws what it evicts', async (t) => {
  const tier = await startTiers(t, { nodes: 1, nodeConfig: { storage: { maxSize: '3MiB' } } });
  const node = tier.nodes[0]!;
  const one = buildDockerImage('evict-one', { layers: 1, layerSize: 2 * MiB });
  const two = buildDockerImage('evict-two', { layers: 1, layerSize: 2 * MiB });
  await pushImage(tier.registry.directUrl, 'library/one', 'v1', one);
  await pushImage(tier.registry.directUrl, 'library/two', 'v1', two);
  await pullImage(node.url, 'library/one', 'v1');
  await waitFor('announced', async () => (await holders(tier.redis.url, one.layers[0]!.digest)).includes(node.url));
  await pullImage(node.url, 'library/two', 'v1');
  await waitFor('the evicted layer withdrawn', async () => !(await holders(tier.redis.url, one.layers[0]!.digest)).includes(node.url));
  t.ok(node.logs.some((l) => l.msg === 'evicted least recently served content' && l.digest === one.layers[0]!.digest), 'the first layer was evicted');
  t.ok((await holders(tier.redis.url, two.layers[0]!.digest)).includes(node.url), 'the layer it holds stays announced');
});

t.test('with Redis down a node instance pulls through the central one, without peers', async (t) => {
  const tier = await startTiers(t, { nodes: 1 });
  const img = buildDockerImage('peers-no-redis', { layers: 2 });
  await pushImage(tier.registry.directUrl, 'library/app', 'v1', img);
  await tier.redis.stop();
  const pulled = await pullImage(tier.nodes[0]!.url, 'library/app', 'v1');
  for (const [d, got] of pulled.blobs) t.equal(got, d, `${d} intact`);
  t.equal((await blobRequestsAtLeast(tier.central, 3)).length, 3, 'every blob from central');
});
