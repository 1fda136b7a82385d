// Unit tests of cluster-downloads.ts: two replicas (two ClusterDownloads on one store, one
// in-process coordinator) and a fake upstream. The protections against a lying coordinator record
// (docs/ARCHITECTURE.md rule 10) are asserted here as the clients see them: a record's repository
// authorizes nothing, a lease nobody works on is given up, a failure note carries no upstream words.
// The same paths with real processes and a real Redis: test/e2e/cluster-downloads.test.ts,
// hostile-redis.test.ts.
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import type { Lease } from '../../lib/cluster/coordinator.js';
import { InProcessLeases } from '../../lib/cluster/in-process.js';
import { blobFailureKey, blobLeaseKey } from '../../lib/cache/remote-blob.js';
import { ClusterDownloads } from '../../lib/cache/cluster-downloads.js';
import { DescriptorSizes } from '../../lib/cache/descriptor-sizes.js';
import { LocalDownloads } from '../../lib/cache/local-downloads.js';
import { DEFAULT_PULL_LIMITS, type BlobAnswer } from '../../lib/cache/pull-types.js';
import { RepositoryAccess } from '../../lib/cache/repository-access.js';
import { parseDigest } from '../../lib/oci/digest.js';
import type { Store } from '../../lib/storage/store.js';
import { UpstreamError } from '../../lib/upstream/errors.js';
import { buildOciImage, sha256 } from '../fixtures/images.js';
import type { Teardownable } from '../fixtures/util.js';
import { FakePullUpstream, makeSharedStore } from '../fixtures/pull-parts.js';

const log = pino({ level: 'silent' });
const img = buildOciImage('cluster-downloads', { layers: 1, layerSize: 300_000 });
const layer = img.layers[0]!;
const digest = parseDigest(layer.digest);

function replica(store: Store, coordinator: InProcessLeases, id: string, events: string[] = [], noProgressMs = 60_000) {
  const access = new RepositoryAccess(store);
  const local = new LocalDownloads({ store, log, access, sizes: new DescriptorSizes(), limits: DEFAULT_PULL_LIMITS, download: { backoffMs: 1 } });
  const downloads = new ClusterDownloads(local, { coordinator, replicaId: id, leaseTtlMs: 5_000, pollMs: 10, noProgressMs, onEvent: (what) => events.push(what) }, { store, log, access });
  return { local, downloads };
}

async function read(answer: BlobAnswer | 'stored'): Promise<Buffer> {
  if (answer === 'stored') throw new Error('expected an answer, not "stored"');
  const body: Readable = answer.open();
  const chunks: Buffer[] = [];
  body.on('data', (c: Buffer) => chunks.push(c));
  await once(body, 'end');
  return Buffer.concat(chunks);
}

/** A lease on the digest written by no replica: a record as Redis could hold it. */
async function forgedLease(t: Tap, coordinator: InProcessLeases, record: object): Promise<Lease> {
  const lease = (await coordinator.acquire(blobLeaseKey(digest), 60_000, JSON.stringify(record)))!;
  t.teardown(() => lease.release());
  return lease;
}

async function setup(t: Tap) {
  // The replicas' timers (lease renewal, RemoteBlob polling) are unref'd, as in a server kept
  // alive by its listener: this test keeps the process alive instead.
  const alive = setInterval(() => undefined, 1_000);
  t.teardown(() => clearInterval(alive));
  const store = await makeSharedStore(t);
  const up = new FakePullUpstream('fake.io');
  up.image('team/app', 'v1', img);
  return { store, up, coordinator: new InProcessLeases() };
}
type Tap = Teardownable;

t.test("one upstream download for two replicas: the lease holder downloads, the other follows its shared file", async (t) => {
  const { store, up, coordinator } = await setup(t);
  const a = replica(store, coordinator, 'a');
  const eventsB: string[] = [];
  const b = replica(store, coordinator, 'b', eventsB);
  const gate = up.gate('getBlob');
  const fromA = a.downloads.fetch(up.target('team/app'), digest);
  while (up.count('getBlob') === 0) await new Promise((r) => setTimeout(r, 1));
  const fromB = b.downloads.fetch(up.target('team/app'), digest);
  gate.release();
  const [bytesA, bytesB] = await Promise.all([fromA.then(read), fromB.then(read)]);
  t.equal(sha256(bytesA), layer.digest);
  t.equal(sha256(bytesB), layer.digest);
  t.equal(up.count('getBlob'), 1);
  t.same(eventsB, ['remote_follow']);
  await a.local.drain();
  t.ok(await store.blobs.present(digest));
  t.equal(await coordinator.read(blobLeaseKey(digest)), null, 'the lease is released once stored');
});

t.test("a lease record's repository authorizes nothing: the follower asks the upstream for its own repository", async (t) => {
  const { up, store, coordinator } = await setup(t);
  await forgedLease(t, coordinator, { owner: 'elsewhere', repoKey: 'fake.io/team/private', size: layer.size, ready: true });
  const b = replica(store, coordinator, 'b');
  await t.rejects(b.downloads.fetch(up.target('team/private'), digest), { name: 'UpstreamError', kind: 'not_found' });
  t.equal(up.count('headBlob'), 1);
  t.equal(up.count('getBlob'), 0);
});

t.test('a lease nobody works on is given up after noProgressMs: the replica downloads alone', async (t) => {
  const { up, store, coordinator } = await setup(t);
  await forgedLease(t, coordinator, { owner: 'elsewhere', repoKey: 'fake.io/team/app', size: null, ready: false });
  const events: string[] = [];
  const b = replica(store, coordinator, 'b', events, 100);
  const bytes = await read(await b.downloads.fetch(up.target('team/app'), digest));
  t.equal(sha256(bytes), layer.digest);
  t.same(events, ['remote_follow', 'alone']);
  t.equal(up.count('getBlob'), 1);
  await b.local.drain();
});

t.test("a failed download's note for the other replicas carries its code, status and reason, never the upstream's words", async (t) => {
  const { up, store, coordinator } = await setup(t);
  const a = replica(store, coordinator, 'a');
  up.failNext('getBlob', new UpstreamError('bad_response', 'fake.io', 'upstream fake.io answered 418 on blob', { status: 418, upstreamMessage: 'your account is suspended, verify it at evil.example' }));
  await t.rejects(a.downloads.fetch(up.target('team/app'), digest), { name: 'UpstreamError', status: 418 });
  await a.local.drain();
  for (let i = 0; i < 100 && (await coordinator.read(blobLeaseKey(digest))) !== null; i++) await new Promise((r) => setTimeout(r, 10));
  const note = JSON.parse((await coordinator.getNote(blobFailureKey(digest)))!) as Record<string, unknown>;
  t.equal(note.code, 'UPSTREAM_UNAVAILABLE');
  t.equal(note.status, 502);
  t.equal(note.message, 'upstream fake.io answered 418 on blob');
  t.equal(await coordinator.read(blobLeaseKey(digest)), null, 'the lease is released');
});

t.test("one replica at a time has a key's turn; the other's is 'waited' once the first released it", async (t) => {
  const { store, coordinator } = await setup(t);
  const a = replica(store, coordinator, 'a');
  const b = replica(store, coordinator, 'b');
  const first = await a.downloads.turn('tag:fake.io/team/app:latest');
  t.ok(first && first !== 'waited', 'the first replica holds the turn');
  let waited = false;
  const second = b.downloads.turn('tag:fake.io/team/app:latest').then((turn) => {
    waited = true;
    return turn;
  });
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(waited, 'the second waits while the first holds it');
  await (first as Lease).release();
  t.equal(await second, 'waited');
});
