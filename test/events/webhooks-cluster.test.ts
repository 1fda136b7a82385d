// Webhooks in cluster mode (lib/events/webhooks.ts): two replicas' dispatchers, each on its own
// Redis coordinator on one real redis-server, see the same act (an upstream fact both replicas
// observed, so it has the same id on both): the receiver gets it once.
import t, { type Test } from 'tap';
import pino from 'pino';
import type { Leases } from '../../lib/cluster/coordinator.js';
import { RedisCoordinator } from '../../lib/cluster/redis/coordinator.js';
import { parseConfig } from '../../lib/config/config.js';
import { stableActId, type Act } from '../../lib/events/acts.js';
import { WebhookDispatcher, type DeliveryOutcome } from '../../lib/events/webhooks.js';
import { startRedis } from '../fixtures/redis.js';
import { waitFor } from '../fixtures/util.js';
import { startReceiver, type Receiver } from '../fixtures/webhook-receiver.js';

const log = pino({ level: 'silent' });
const SECRET = 'cluster-webhook-secret-0123456789';

async function replicas(t: Test, rx: Receiver): Promise<{ dispatchers: WebhookDispatcher[]; outcomes: DeliveryOutcome[]; leases: Leases[] }> {
  const redis = await startRedis(t);
  const ns = `test:${Math.random().toString(36).slice(2)}:`;
  const config = parseConfig({ defaultUpstream: null, upstreams: { 'r.example.com': { url: 'https://r.example.com' } }, webhooks: { retryDelay: '50ms', endpoints: [{ url: rx.url, secret: SECRET }] } }).webhooks;
  const outcomes: DeliveryOutcome[] = [];
  const coordinators = [await RedisCoordinator.open(redis.url, log), await RedisCoordinator.open(redis.url, log)];
  const leases = coordinators.map((c) => c.scope(ns).leases);
  const dispatchers = leases.map((l) => new WebhookDispatcher({ config, log, leases: l, onDelivery: (o) => outcomes.push(o) }));
  t.teardown(async () => {
    for (const d of dispatchers) await d.close();
    for (const c of coordinators) await c.close();
  });
  return { dispatchers, outcomes, leases };
}

function movedAct(): Act {
  const id = stableActId('tag.moved', 'docker.io', 'library/app', 'v1', 'sha256:aa', 'sha256:bb');
  return { id, type: 'tag.moved', time: new Date().toISOString(), user: null, address: null, reqId: null, repository: 'docker.io/library/app', tag: 'v1', digest: 'sha256:bb', previousDigest: 'sha256:aa' };
}

t.test('an event both replicas emit at once is delivered once for the cluster', async (t) => {
  const rx = await startReceiver(t);
  const { dispatchers, outcomes } = await replicas(t, rx);
  for (const d of dispatchers) d.consume(movedAct());
  await waitFor('both replicas settled', async () => outcomes.length === 2);
  await new Promise((r) => setTimeout(r, 200));
  t.equal(rx.requests.length, 1, 'one request reached the receiver');
  t.same([...outcomes].sort(), ['delivered', 'skipped']);
});

t.test('an event a replica emits after another delivered it is not sent again', async (t) => {
  const rx = await startReceiver(t);
  const { dispatchers, outcomes } = await replicas(t, rx);
  dispatchers[0]!.consume(movedAct());
  await waitFor('delivered', async () => outcomes.includes('delivered'));
  dispatchers[1]!.consume(movedAct());
  await waitFor('the second replica settled', async () => outcomes.length === 2);
  t.equal(rx.requests.length, 1);
  t.same(outcomes, ['delivered', 'skipped']);
});

t.test('the replica holding a delivery retries it; the other does not send it meanwhile', async (t) => {
  const rx = await startReceiver(t, 'fail');
  const { dispatchers, outcomes } = await replicas(t, rx);
  dispatchers[0]!.consume(movedAct());
  await rx.waitFor(1);
  dispatchers[1]!.consume(movedAct());
  await waitFor('the second replica skipped it', async () => outcomes.includes('skipped'));
  rx.behave('ok');
  await waitFor('delivered by the holder', async () => outcomes.includes('delivered'));
  const ids = rx.events().map((e) => e.id);
  t.ok(ids.every((id) => id === movedAct().id), 'every request was the one event');
  t.equal(rx.requests.length, outcomes.filter((o) => o === 'retried').length + 1, 'each request is an attempt of the holder (the first or a retry)');
  t.equal(outcomes.filter((o) => o === 'delivered').length, 1);
});

t.test('a "done" note that is not exactly the marker is not believed', async (t) => {
  const rx = await startReceiver(t);
  const { dispatchers, outcomes, leases } = await replicas(t, rx);
  const act = movedAct();
  // What a hostile writer of Redis could leave: a note of another shape.
  await leases[1]!.setNote(`webhook:0:${act.id}:done`, 'delivered\u0000yes', 60_000);
  dispatchers[0]!.consume(act);
  await waitFor('settled', async () => outcomes.length === 1);
  t.same(outcomes, ['delivered']);
  t.equal(rx.requests.length, 1);
});
