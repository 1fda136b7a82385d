// Node-local tier (issue 14): node instances in front of a central stevedore in front of a real
// registry, peers found through a real redis-server. Every process on 127.0.0.1.
import t from 'tap';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage, sha256 } from '../fixtures/images.js';
import { request } from 'undici';
import { hangUp, requestHead } from '../fixtures/hangup.js';
import { blobRequests, blobRequestsFor, holders, logged, metric, peerServed, pullImage, startTiers } from '../fixtures/node-tier.js';
import { waitFor } from '../fixtures/util.js';
import { startRegistry } from '../fixtures/registry.js';
import { MiB } from '../fixtures/cluster.js';

t.test('a pull through a node fetches once at each tier; a second node gets every blob from the first (0 blob requests at central and registry)', async (t) => {
  const tier = await startTiers(t, { nodes: 2 });
  const img = buildDockerImage('node-tier-two', { layers: 3, layerSize: 512 * 1024 });
  await pushImage(tier.registry.directUrl, 'library/app', 'v1', img);
  tier.registry.resetCounts();
  const [a, b] = tier.nodes as [typeof tier.nodes[0], typeof tier.nodes[0]];

  const first = await pullImage(a.url, 'library/app', 'v1');
  for (const [d, got] of first.blobs) t.equal(got, d, `node A served ${d} intact`);
  const blobDigests = [img.config.digest, ...img.layers.map((l) => l.digest)];
  for (const d of blobDigests) {
    t.equal(tier.registry.count('GET', new RegExp(`/blobs/${d}`)), 1, `the registry sent ${d} once`);
    t.equal((await blobRequestsFor(tier.central, d, 1)).length, 1, `central served ${d} once`);
  }
  for (const d of blobDigests) {
    await waitFor(`node A announces ${d}`, async () => (await holders(tier.redis.url, d)).includes(a.url));
  }

  tier.registry.resetCounts();
  const centralBefore = blobRequests(tier.central).length;
  const second = await pullImage(b.url, 'library/app', 'v1');
  for (const [d, got] of second.blobs) t.equal(got, d, `node B served ${d} intact`);
  t.equal(blobRequests(tier.central).length - centralBefore, 0, 'central served no blob for the second node');
  t.equal(tier.registry.count('GET', /\/blobs\//), 0, 'the registry sent no blob for the second node');
  t.equal((await logged(a, (l) => l.msg === 'request' && String(l.path).startsWith('/_stevedore/peer/'), blobDigests.length)).length, blobDigests.length, 'node A served each blob to node B');
  t.equal(await metric(b, 'stevedore_peer_transfers_total', { event: 'fetched' }), blobDigests.length, 'node B fetched each blob from a peer');
});

t.test('nodes pulling the same image at the same moment: central serves each blob once, the others stream it from the node fetching it', async (t) => {
  // A slow registry link, so that the three downloads overlap.
  const registry = await startRegistry({ bytesPerSecond: 4 * MiB });
  t.teardown(() => registry.stop());
  const tier = await startTiers(t, { nodes: 3, registry });
  const img = buildDockerImage('node-tier-rollout', { layers: 2, layerSize: 4 * MiB });
  await pushImage(registry.directUrl, 'library/app', 'v1', img);
  registry.resetCounts();
  const pulls = await Promise.all(tier.nodes.map((n) => pullImage(n.url, 'library/app', 'v1')));
  for (const [i, p] of pulls.entries()) for (const [d, got] of p.blobs) t.equal(got, d, `node ${i} served ${d} intact`);
  for (const l of img.layers) {
    const atCentral = await blobRequestsFor(tier.central, l.digest, 1);
    t.equal(atCentral.length, 1, `central served layer ${l.digest} once for the three nodes`);
    t.equal(registry.count('GET', new RegExp(`/blobs/${l.digest}`)), 1, 'the registry sent it once');
  }
  // A node logs what it served a peer when the answer ends, which may be after the peer's client
  // had its last byte: wait for the layers' own entries (the config blob may be among the others).
  const layersServedToPeers = (): number => tier.nodes.reduce((n, p) => n + peerServed(p).filter((r) => img.layers.some((l) => String(r.path).includes(l.digest))).length, 0);
  await waitFor('the transfers of the layers between nodes are logged', async () => layersServedToPeers() >= 2 * img.layers.length);
  t.equal(layersServedToPeers(), 2 * img.layers.length, 'each layer went node to node to the two other nodes');
});

t.test('a client that hangs up while its node fetches the blob from a peer: the node finishes the transfer and serves the blob from its store after', async (t) => {
  const tier = await startTiers(t, { nodes: 2 });
  const img = buildDockerImage('node-tier-hangup', { layers: 1, layerSize: 8 * MiB });
  await pushImage(tier.registry.directUrl, 'library/app', 'v1', img);
  const [a, b] = tier.nodes as [(typeof tier.nodes)[0], (typeof tier.nodes)[0]];
  await pullImage(a.url, 'library/app', 'v1');
  const layer = img.layers[0]!;
  await waitFor('node A announces the layer', async () => (await holders(tier.redis.url, layer.digest)).includes(a.url));
  // Node B links the layer (its manifest), then its client hangs up mid-body.
  const m = await request(`${b.url}/v2/library/app/manifests/v1?ns=docker.io`, { headers: { accept: MANIFEST_ACCEPT } });
  await m.body.text();
  const port = Number(new URL(b.url).port);
  const cut = await hangUp(port, [requestHead('GET', `/v2/library/app/blobs/${layer.digest}?ns=docker.io`)], { afterReceived: 0 });
  t.ok(cut.firstLine.startsWith('HTTP/1.1 200'), `the answer had begun: ${cut.firstLine}`);
  await waitFor('node B stores the layer', async () => {
    const h = await request(`${b.url}/v2/library/app/blobs/${layer.digest}?ns=docker.io`, { method: 'HEAD' });
    await h.body.text();
    return h.headers['x-cache'] === 'hit';
  });
  const again = await request(`${b.url}/v2/library/app/blobs/${layer.digest}?ns=docker.io`);
  t.equal(sha256(Buffer.from(await again.body.arrayBuffer())), layer.digest, 'served intact from its store');
  t.equal((await logged(a, (l) => l.msg === 'request' && String(l.path).startsWith('/_stevedore/peer/'), 1)).length, 1, 'node A sent it once');
  t.equal((await blobRequestsFor(tier.central, layer.digest, 1)).length, 1, 'central sent it once (to node A)');
});
