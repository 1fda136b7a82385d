// config peerListen (issue 25, item 3): the peer endpoint on a listener of its own, so that a
// NetworkPolicy can let only stevedore's pods reach it, while registry clients keep the main one.
// Real processes: registry, central stevedore, two node instances, Redis.
import pino from 'pino';
import t from 'tap';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { blobRequests, peerServed, peerSignature, pullImage, startTiers } from '../fixtures/node-tier.js';
import { ociErrors, rawRequest } from '../fixtures/http-client.js';
import { freePort, tmpDir, waitFor } from '../fixtures/util.js';
import { holders } from '../fixtures/node-tier.js';
import { parseConfig } from '../../lib/config/config.js';
import { buildApp } from '../../lib/server/app.js';
import { MiB } from '../fixtures/cluster.js';

t.test('node instances serve each other on their peer listeners, and the peer endpoint is only there', async (t) => {
  const tier = await startTiers(t, { nodes: 0 });
  const peerPorts = [await freePort(), await freePort()];
  const [a, b] = [
    await tier.addNode({ peerListen: `127.0.0.1:${peerPorts[0]}`, node: { peers: { advertise: `http://127.0.0.1:${peerPorts[0]}` } } }),
    await tier.addNode({ peerListen: `127.0.0.1:${peerPorts[1]}`, node: { peers: { advertise: `http://127.0.0.1:${peerPorts[1]}` } } }),
  ];
  const peerA = `http://127.0.0.1:${peerPorts[0]}`;
  t.ok(a!.logs.some((l) => l.msg === 'peer endpoint listening (peerListen)' && l.url === peerA), 'the peer listener is logged with its URL');
  const img = buildDockerImage('peer-listen', { layers: 2, layerSize: MiB });
  await pushImage(tier.registry.directUrl, 'library/app', 'v1', img);
  await pullImage(a!.url, 'library/app', 'v1');
  const layer = img.layers[0]!;
  await waitFor('node a announces its peer address', async () => (await holders(tier.redis.url, layer.digest)).includes(peerA));
  const centralBefore = blobRequests(tier.central).length;
  const pulled = await pullImage(b!.url, 'library/app', 'v1');
  for (const [d, got] of pulled.blobs) t.equal(got, d, `${d} intact`);
  t.ok(peerServed(a!).length >= img.layers.length, 'node b fetched the layers from node a');
  t.equal(blobRequests(tier.central).length, centralBefore, 'nothing more was asked of central');

  const path = `/_stevedore/peer/v1/blobs/${layer.digest}`;
  const onMain = await rawRequest(`${a!.url}${path}`, { headers: peerSignature(a!.url, layer.digest) });
  t.equal(onMain.status, 404, 'the main listener does not serve the peer endpoint');
  t.equal(ociErrors(onMain)?.[0]?.code, 'NOT_FOUND');
  const onPeer = await rawRequest(`${peerA}${path}`, { headers: peerSignature(peerA, layer.digest) });
  t.equal(onPeer.status, 200, 'the peer listener does, to a signed request');
  for (const other of ['/v2/', `/v2/library/app/blobs/${layer.digest}?ns=docker.io`, '/metrics', '/', '/token']) {
    const r = await rawRequest(`${peerA}${other}`);
    t.equal(r.status, 404, `the peer listener answers nothing else: ${other}`);
  }
  t.same(a!.defects, []);
  t.same(b!.defects, []);
});

t.test('peerListen without a peer endpoint to serve is refused, naming the key', async (t) => {
  const config = parseConfig({ peerListen: '127.0.0.1:0', storage: { path: await tmpDir(t, 'stevedore-peerlisten-') } });
  await t.rejects(buildApp(config, { log: pino({ level: 'silent' }) }), /peerListen: there is no peer endpoint to serve/);
});
