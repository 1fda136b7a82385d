// Peers are trusted by digest only (issue 14): a peer that dies mid-transfer, sends wrong bytes or
// stalls costs that transfer a switch to the next source, never a corrupt answer. The faulty peer is
// a programmable server announced in the real peers' directory (Redis); the rest is real: a node
// instance, the central stevedore, a CNCF registry.
import t from 'tap';
import type { ServerResponse } from 'node:http';
import { request } from 'undici';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage, type BuiltImage } from '../fixtures/images.js';
import { announce, blobRequestsFor, logged, metric, startTiers, type Tiers } from '../fixtures/node-tier.js';
import { startFake, type Fake } from '../fixtures/fake-upstream.js';
import { fetchAndHash, MiB } from '../fixtures/cluster.js';

type Fault = (res: ServerResponse, data: Buffer) => void;

const LAYER = 2 * MiB;

/** A peer that answers the peer endpoint for `blob` with `fault`, announced as holding it. */
async function faultyPeer(t: Parameters<typeof startFake>[0], tier: Tiers, data: Buffer, digest: string, fault: Fault): Promise<Fake> {
  const fake = await startFake(t, (req, res, url) => {
    if (url.pathname !== `/_stevedore/peer/v1/blobs/${digest}`) {
      res.writeHead(404).end();
      return;
    }
    fault(res, data);
  });
  await announce(tier.redis.url, digest, fake.url);
  return fake;
}

async function image(tier: Tiers, seed: string): Promise<BuiltImage> {
  const img = buildDockerImage(seed, { layers: 1, layerSize: LAYER });
  await pushImage(tier.registry.directUrl, `library/${seed}`, 'v1', img);
  return img;
}

/** The manifest through the node (so the repository links its layers), then the layer. */
async function pullLayer(tier: Tiers, repo: string, img: BuiltImage): Promise<Awaited<ReturnType<typeof fetchAndHash>>> {
  const node = tier.nodes[0]!;
  const m = await request(`${node.url}/v2/${repo}/manifests/v1?ns=docker.io`, { headers: { accept: MANIFEST_ACCEPT } });
  await m.body.text();
  return fetchAndHash(`${node.url}/v2/${repo}/blobs/${img.layers[0]!.digest}?ns=docker.io`);
}

async function centralAnswers(tier: Tiers, digest: string): Promise<number[]> {
  return (await blobRequestsFor(tier.central, digest, 1)).map((l) => Number(l.status));
}

async function markedBad(tier: Tiers, peer: string): Promise<boolean> {
  return (await logged(tier.nodes[0]!, (l) => l.msg === 'peer failed a transfer; not asked again for a while' && l.peer === peer, 1)).length > 0;
}

t.test('faulty peers', async (t) => {
  const tier = await startTiers(t, { nodes: 1 });
  const layerBytes = (img: BuiltImage): Buffer => img.layers[0]!.data;

  await t.test('a peer that dies mid-transfer: the client gets the right bytes, central is asked for the rest with Range', async (t) => {
    const img = await image(tier, 'peer-dies');
    const d = img.layers[0]!.digest;
    const peer = await faultyPeer(t, tier, layerBytes(img), d, (res, data) => {
      res.writeHead(200, { 'content-length': String(data.length), 'content-type': 'application/octet-stream' });
      res.write(data.subarray(0, data.length / 2), () => setTimeout(() => res.socket?.destroy(), 50));
    });
    const got = await pullLayer(tier, 'library/peer-dies', img);
    t.equal(got.digest, d, 'the client received the layer intact');
    t.equal(peer.count('GET', /\/_stevedore\/peer\//), 1, 'the peer was asked once');
    t.ok(await markedBad(tier, peer.url), 'the peer is marked bad in the log');
    t.same(await centralAnswers(tier, d), [206], 'central was asked once, for the missing part (206)');
    // Central holds nothing of it yet: the whole layer once for its store, and (lazy ranges) the
    // part the node asked for may come ahead of that download as a ranged GET.
    const gets = tier.registry.requests.filter((q) => q.method === 'GET' && q.path.includes(`/blobs/${d}`));
    t.ok(gets.filter((q) => q.headers.range === undefined).length <= 1, 'the registry sent the whole layer at most once (to central)');
    t.ok(gets.filter((q) => q.headers.range !== undefined).length <= 1, 'and at most the missing part once more, as a range');
  });

  await t.test('a peer that sends wrong bytes: the client gets the right bytes, fetched again from central', async (t) => {
    const img = await image(tier, 'peer-lies');
    const d = img.layers[0]!.digest;
    const peer = await faultyPeer(t, tier, layerBytes(img), d, (res, data) => {
      const wrong = Buffer.from(data);
      for (let i = 1000; i < 2000; i++) wrong[i] = wrong[i]! ^ 0xff;
      res.writeHead(200, { 'content-length': String(wrong.length), 'content-type': 'application/octet-stream' });
      res.end(wrong);
    });
    const got = await pullLayer(tier, 'library/peer-lies', img);
    t.equal(got.status, 200);
    t.equal(got.digest, d, 'the client received the layer intact, none of the wrong bytes');
    t.equal(got.bytes, img.layers[0]!.size, 'and exactly its bytes');
    t.ok(await markedBad(tier, peer.url), 'the peer is marked bad in the log');
    t.same(await centralAnswers(tier, d), [200], 'central sent the whole layer once');
  });

  await t.test('a stalled peer: the client gets the right bytes, central is asked for the rest with Range', async (t) => {
    const img = await image(tier, 'peer-stalls');
    const d = img.layers[0]!.digest;
    const peer = await faultyPeer(t, tier, layerBytes(img), d, (res, data) => {
      res.writeHead(200, { 'content-length': String(data.length), 'content-type': 'application/octet-stream' });
      res.write(data.subarray(0, 256 * 1024));
      // ...and nothing more: the connection stays open.
    });
    const started = Date.now();
    const got = await pullLayer(tier, 'library/peer-stalls', img);
    t.equal(got.digest, d, 'the client received the layer intact');
    t.ok(Date.now() - started < 15_000, 'within the stall window and a transfer, not a long timeout');
    t.ok(await markedBad(tier, peer.url), 'the peer is marked bad in the log');
    t.same(await centralAnswers(tier, d), [206], 'central was asked once, for the missing part (206)');
  });

  await t.test('a peer marked bad is not asked again while it is', async (t) => {
    const img = await image(tier, 'peer-skipped');
    const d = img.layers[0]!.digest;
    const first = await faultyPeer(t, tier, layerBytes(img), d, (res) => res.socket?.destroy());
    const got = await pullLayer(tier, 'library/peer-skipped', img);
    t.equal(got.digest, d, 'the client received the layer intact');
    t.equal(first.count('GET', /\/_stevedore\/peer\//), 1, 'the peer that reset the connection was asked once');
    // Announced again for another blob: skipped while it is marked bad.
    const other = await image(tier, 'peer-skipped-2');
    await announce(tier.redis.url, other.layers[0]!.digest, first.url);
    const again = await pullLayer(tier, 'library/peer-skipped-2', other);
    t.equal(again.digest, other.layers[0]!.digest);
    t.equal(first.count('GET', /\/_stevedore\/peer\//), 1, 'not asked for the second blob');
    t.ok((await metric(tier.nodes[0]!, 'stevedore_peer_transfers_total', { event: 'marked_bad' })) >= 4, 'every faulty peer counted as marked bad');
  });
});
