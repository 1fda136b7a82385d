// The dashboard of a cluster replica and of a node instance: which replica, which store, whether
// Redis answers; the node's peer group and its transfers (real processes, a real Redis).
import t from 'tap';
import type { DashboardState } from '../../lib/server/dashboard/dashboard.js';
import { startCluster } from '../fixtures/cluster.js';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage } from '../fixtures/images.js';
import { startTiers } from '../fixtures/node-tier.js';
import { startRegistry } from '../fixtures/registry.js';

async function state(url: string): Promise<DashboardState> {
  const res = await fetch(`${url}/ui/api/state`);
  if (res.status !== 200) throw new Error(`state: ${res.status}`);
  return (await res.json()) as DashboardState;
}

t.test('a cluster replica: its id, the store id and Redis up', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const c = await startCluster(t, { replicas: 2, upstreamUrl: reg.url });
  const [a, b] = [await state(c.replicas[0]!.url), await state(c.replicas[1]!.url)];
  t.equal(a.mode, 'cluster');
  t.equal(a.cluster?.replicaId, 'replica-0');
  t.equal(b.cluster?.replicaId, 'replica-1');
  t.equal(a.cluster?.storeId, b.cluster?.storeId, 'one store');
  t.equal(a.cluster?.redisUp, true);
  t.equal(a.store.clusterBytes, 0, 'the shared store is empty');
  t.equal(a.peers, null);
});

t.test('a node instance: its peer group and the transfers it made', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('dashboard/node', { layers: 1 });
  await pushImage(reg.directUrl, 'library/app', 'v1', img);
  const tiers = await startTiers(t, { nodes: 2, registry: reg });
  const [first, second] = tiers.nodes as [NonNullable<(typeof tiers.nodes)[0]>, NonNullable<(typeof tiers.nodes)[0]>];
  for (const node of [first, second]) {
    await (await fetch(`${node.url}/v2/library/app/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } })).arrayBuffer();
    const r = await fetch(`${node.url}/v2/library/app/blobs/${img.layers[0]!.digest}`);
    t.ok(Buffer.from(await r.arrayBuffer()).equals(img.layers[0]!.data));
  }
  const st = await state(second.url);
  t.equal(st.mode, 'node');
  t.equal(st.cluster, null);
  t.equal(st.peers?.self, second.url);
  t.equal(st.peers?.group, 'default');
  t.equal(st.peers?.transfers.fetched, 1, 'the layer came from the first node');
  const sources = st.upstreams.find((u) => u.name === 'docker.io')!.sources;
  t.same(sources.map((s) => s.url), [tiers.central.url, reg.url], 'central first, then the registry');
  t.same(sources.map((s) => s.state), ['ok', 'ok']);
});
