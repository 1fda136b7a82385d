// Webhooks in cluster mode with real replicas (`stevedore serve` processes on one store and one
// redis-server, test/fixtures/cluster.ts), every replica configured with the same endpoint: each
// act reaches the receiver once for the cluster — a push (one replica sees it), and an upstream
// tag that moved, pulled through both replicas at once after its TTL. On a shared store the
// replicas resolve a tag once for the cluster, so one replica sees the move; that two replicas
// emitting the same fact send it once (the lease per event id) is shown with two dispatchers on
// a real redis-server in test/events/webhooks-cluster.test.ts.
import t from 'tap';
import { buildOciImage, MANIFEST_ACCEPT, pushImage } from '../fixtures/images.js';
import { startCluster } from '../fixtures/cluster.js';
import { startRegistry } from '../fixtures/registry.js';
import type { StevedoreProcess } from '../fixtures/stevedore-process.js';
import { waitFor } from '../fixtures/util.js';
import { startReceiver } from '../fixtures/webhook-receiver.js';

const SECRET = 'cluster-webhook-secret-0123456789';

async function delivered(p: StevedoreProcess, outcome: string): Promise<number> {
  const text = await (await fetch(`${p.url}/metrics`)).text();
  const m = new RegExp(`^stevedore_webhook_deliveries_total\\{outcome="${outcome}"[^}]*\\} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

t.test('two replicas with the same endpoint send each event once for the cluster', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const a = buildOciImage('webhooks-cluster/a', { layers: 1 });
  const b = buildOciImage('webhooks-cluster/b', { layers: 1 });
  await pushImage(reg.url, 'library/moving', 'v1', a);
  const rx = await startReceiver(t);
  const c = await startCluster(t, {
    replicas: 2,
    upstreamUrl: reg.url,
    config: {
      registry: { hosted: ['lab/**'] },
      cache: { tagTTL: '1s', refreshAhead: { enabled: false } },
      auth: { rules: [{ repository: '**', users: ['anonymous', '*'], actions: ['pull', 'push', 'delete'] }] },
      webhooks: { retryDelay: '50ms', endpoints: [{ url: rx.url, secret: SECRET }] },
    },
  });
  const [r0, r1] = c.replicas as [StevedoreProcess, StevedoreProcess];
  const pull = async (p: StevedoreProcess): Promise<string | null> => {
    const r = await fetch(`${p.url}/v2/library/moving/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
    await r.arrayBuffer();
    return r.headers.get('docker-content-digest');
  };

  await t.test('a push through one replica: one event', async (t) => {
    await pushImage(r0.url, 'lab/app', 'v1', buildOciImage('webhooks-cluster/push', { layers: 1 }));
    await rx.waitFor(1);
    await new Promise((r) => setTimeout(r, 500));
    t.equal(rx.events().filter((e) => e.type === 'dev.stevedore.push').length, 1);
  });

  await t.test('an upstream tag that moved, pulled through both replicas at once: one tag.moved event', async (t) => {
    t.equal(await pull(r0), a.manifest.digest);
    t.equal(await pull(r1), a.manifest.digest);
    await pushImage(reg.url, 'library/moving', 'v1', b);
    await new Promise((r) => setTimeout(r, 1_500));
    const got = await Promise.all([pull(r0), pull(r1), pull(r0), pull(r1)]);
    t.same(got, [b.manifest.digest, b.manifest.digest, b.manifest.digest, b.manifest.digest], 'both replicas answer the new digest');
    await waitFor('the tag.moved event', async () => rx.events().some((e) => e.type === 'dev.stevedore.tag.moved'));
    await new Promise((r) => setTimeout(r, 1_000));
    const moved = rx.events().filter((e) => e.type === 'dev.stevedore.tag.moved');
    t.equal(moved.length, 1, 'the receiver got the move once');
    t.match(moved[0]!.data, { repository: 'docker.io/library/moving', tag: 'v1', digest: b.manifest.digest, previousDigest: a.manifest.digest });
    const sent = (await delivered(r0, 'delivered')) + (await delivered(r1, 'delivered'));
    t.equal(sent, 2, 'two deliveries in all (the push and the move), across both replicas');
    t.comment(`skipped by a replica (the other sent it): ${(await delivered(r0, 'skipped')) + (await delivered(r1, 'skipped'))}`);
  });
});
