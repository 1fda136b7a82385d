// Unit tests of tag-resolver.ts (manifests by tag): fetched once, then a hit while fresh;
// revalidated with one HEAD when stale; served stale when the upstream fails; resolved again when
// forgotten mid-resolution. Fake upstream, real store, in-memory metadata, a fake clock.
import pino from 'pino';
import t from 'tap';
import { DescriptorSizes } from '../../lib/cache/descriptor-sizes.js';
import type { Turn } from '../../lib/cache/downloads.js';
import { Manifests } from '../../lib/cache/manifests.js';
import { DEFAULT_PULL_LIMITS } from '../../lib/cache/pull-types.js';
import { RepositoryAccess } from '../../lib/cache/repository-access.js';
import { TagResolver } from '../../lib/cache/tag-resolver.js';
import { GoneTags } from '../../lib/cache/gone-tags.js';
import type { Metadata } from '../../lib/metadata/metadata.js';
import type { Store } from '../../lib/storage/store.js';
import { digestOf, parseDigest } from '../../lib/oci/digest.js';
import { buildOciImage } from '../fixtures/images.js';
import type { Teardownable } from '../fixtures/util.js';
import { FakePullUpstream, makeMetadata, makeStore, notFound, rateLimited, upstreamConfig } from '../fixtures/pull-parts.js';

const silent = pino({ level: 'silent' });
const TTL = 60_000;
const v1 = buildOciImage('tag-resolver-v1');
const v2 = buildOciImage('tag-resolver-v2');
const alone = { turn: async (): Promise<Turn> => null };

class FakeClock {
  at = 1_000_000;
  now(): number {
    return this.at;
  }
  /** Moves on; lru-cache reads the clock at most once per millisecond of real time, hence the wait. */
  async advance(ms: number): Promise<void> {
    this.at += ms;
    await new Promise((r) => setTimeout(r, 5));
  }
}

function resolver(store: Store, metadata: Metadata, clock: FakeClock, turns: { turn(key: string): Promise<Turn> } = alone): TagResolver {
  const manifests = new Manifests({ store, access: new RepositoryAccess(store), turns, sizes: new DescriptorSizes(), limits: DEFAULT_PULL_LIMITS, manifestMaxSize: 4 * 1024 * 1024 });
  const gone = new GoneTags({ store, manifests, log: silent, clock });
  return new TagResolver({ store, metadata, log: silent, clock, health: null, quotaTTLMultiplier: 1, manifests, turns, gone, refreshAhead: null });
}


async function setup(t: Tap, extra: Record<string, unknown> = {}) {
  const store = await makeStore(t);
  const metadata = await makeMetadata();
  const clock = new FakeClock();
  const up = new FakePullUpstream('fake.io', upstreamConfig('fake.io', { tagTTL: '60s', ...extra }));
  up.image('team/app', 'latest', v1);
  return { store, metadata, clock, up, tags: resolver(store, metadata, clock) };
}
type Tap = Teardownable;

t.test('a tag not stored is fetched with one GET, then answered from memory as a hit', async (t) => {
  const { up, tags } = await setup(t);
  const first = await tags.getManifest(up.target('team/app'), 'latest');
  t.equal(first.cache, 'miss');
  t.equal(first.digest, v1.manifest.digest);
  t.same(first.bytes, v1.manifest.data);
  const second = await tags.getManifest(up.target('team/app'), 'latest');
  t.equal(second.cache, 'hit');
  t.equal(second.digest, v1.manifest.digest);
  t.equal(up.count('getManifest'), 1);
  t.equal(up.count('headManifest'), 0);
});

t.test('concurrent requests for one tag share one resolution', async (t) => {
  const { up, tags } = await setup(t);
  const answers = await Promise.all(Array.from({ length: 5 }, () => tags.getManifest(up.target('team/app'), 'latest')));
  for (const a of answers) t.equal(a.digest, v1.manifest.digest);
  t.equal(up.count('getManifest'), 1);
});

t.test('a stored tag past its TTL is revalidated with one HEAD and no GET', async (t) => {
  const { up, clock, tags } = await setup(t);
  await tags.getManifest(up.target('team/app'), 'latest');
  await clock.advance(TTL + 1);
  const again = await tags.getManifest(up.target('team/app'), 'latest');
  t.equal(again.cache, 'revalidated');
  t.equal(again.digest, v1.manifest.digest);
  t.equal(up.count('headManifest'), 1);
  t.equal(up.count('getManifest'), 1);
});

t.test('a tag that moved upstream is fetched again once stale', async (t) => {
  const { store, up, clock, tags } = await setup(t);
  await tags.getManifest(up.target('team/app'), 'latest');
  up.image('team/app', 'latest', v2);
  await clock.advance(TTL + 1);
  const moved = await tags.getManifest(up.target('team/app'), 'latest');
  t.equal(moved.cache, 'miss');
  t.equal(moved.digest, v2.manifest.digest);
  t.equal((await store.repos.getTag({ upstream: 'fake.io', name: 'team/app' }, 'latest'))?.digest, v2.manifest.digest);
  t.equal(up.count('headManifest'), 1);
  t.equal(up.count('getManifest'), 2);
});

t.test('the upstream rate-limiting: the stored tag is served, marked stale with the reason', async (t) => {
  const { up, clock, tags } = await setup(t);
  await tags.getManifest(up.target('team/app'), 'latest');
  await clock.advance(TTL + 1);
  up.failNext('headManifest', rateLimited('fake.io', 30));
  const stale = await tags.getManifest(up.target('team/app'), 'latest');
  t.equal(stale.cache, 'stale');
  t.equal(stale.digest, v1.manifest.digest);
  t.equal(stale.staleReason, 'upstream fake.io is rate-limiting (429)');
});

t.test('a tag answered from memory keeps its manifest from eviction: when the upstream then rate-limits, it is still served (stale)', async (t) => {
  const store = await makeStore(t, { maxSize: v1.manifest.data.length + 3 * 1000 });
  const clock = new FakeClock();
  const up = new FakePullUpstream('fake.io', upstreamConfig('fake.io', { tagTTL: '60s' }));
  up.image('team/app', 'latest', v1);
  const tags = resolver(store, await makeMetadata(), clock);
  t.equal((await tags.getManifest(up.target('team/app'), 'latest')).cache, 'miss');
  // Other content stored after it, the tag asked between each: only memory answers it.
  const others = Array.from({ length: 6 }, (_, i) => Buffer.alloc(1000, i + 1));
  for (const o of others) {
    await store.blobs.putSmall(o, digestOf(o));
    t.equal((await tags.getManifest(up.target('team/app'), 'latest')).cache, 'hit');
  }
  t.notOk(store.blobs.has(digestOf(others[0]!)), 'content stored after it was evicted meanwhile');
  t.ok(store.blobs.has(parseDigest(v1.manifest.digest)), 'the manifest served from memory all along is still stored');
  await clock.advance(TTL + 1);
  up.failNext('headManifest', rateLimited('fake.io', 30));
  const stale = await tags.getManifest(up.target('team/app'), 'latest');
  t.equal(stale.cache, 'stale');
  t.equal(stale.digest, v1.manifest.digest);
  t.same(stale.bytes, v1.manifest.data);
  t.equal(up.count('getManifest'), 1, 'never fetched again');
});

t.test('a tag never stored with the upstream rate-limiting: its failure leaves as it is, for the HTTP edge', async (t) => {
  const { up, tags } = await setup(t);
  up.failNext('getManifest', rateLimited('fake.io', 30));
  await t.rejects(tags.getManifest(up.target('team/app'), 'latest'), { name: 'UpstreamError', kind: 'rate_limited', retryAfter: 30 });
});

t.test('a stored tag the upstream no longer has is kept by default: served, marked stale with when it went', async (t) => {
  const { up, clock, tags } = await setup(t);
  await tags.getManifest(up.target('team/app'), 'latest');
  await clock.advance(TTL + 1);
  up.failNext('headManifest', notFound('fake.io'));
  const kept = await tags.getManifest(up.target('team/app'), 'latest');
  t.equal(kept.cache, 'stale');
  t.equal(kept.digest, v1.manifest.digest);
  t.same(kept.bytes, v1.manifest.data);
  t.equal(kept.goneSince, clock.now());
  t.equal(kept.staleReason, `deleted upstream since ${new Date(clock.now()).toISOString()}`);
});

t.test('a tag kept as gone is recorded in the store with when it went, and its content pinned', async (t) => {
  const { store, up, clock, tags } = await setup(t);
  await tags.getManifest(up.target('team/app'), 'latest');
  await clock.advance(TTL + 1);
  up.failNext('headManifest', notFound('fake.io'));
  await tags.getManifest(up.target('team/app'), 'latest');
  const record = await store.repos.getGone({ upstream: 'fake.io', name: 'team/app' }, 'latest');
  t.equal(record?.digest, v1.manifest.digest);
  t.equal(record?.since, clock.now());
  t.ok(store.blobs.isPinned(v1.manifest.digest), 'the manifest is pinned');
});

t.test('what a gone tag holds is never evicted by storage.maxSize, while cached content around it is', async (t) => {
  const store = await makeStore(t, { maxSize: 4096 });
  const metadata = await makeMetadata();
  const clock = new FakeClock();
  const up = new FakePullUpstream('fake.io', upstreamConfig('fake.io', { tagTTL: '60s' }));
  up.image('team/app', 'latest', v1);
  const tags = resolver(store, metadata, clock);
  await tags.getManifest(up.target('team/app'), 'latest');
  await clock.advance(TTL + 1);
  up.failNext('headManifest', notFound('fake.io'));
  await tags.getManifest(up.target('team/app'), 'latest');
  // Three times the bound of other content, stored after it: least recently used, it would go first.
  const fillers = [1, 2, 3].map((i) => Buffer.alloc(4000, i));
  for (const f of fillers) await store.blobs.putSmall(f, digestOf(f));
  await store.blobs.evictionsSettled();
  t.ok(await store.blobs.present(parseDigest(v1.manifest.digest)), 'the gone tag\'s manifest is still stored');
  t.notOk(await store.blobs.present(digestOf(fillers[0]!)), 'older cached content was evicted');
});

t.test('a gone tag the upstream has again is followed: record removed, pins released', async (t) => {
  const { store, up, clock, tags } = await setup(t);
  await tags.getManifest(up.target('team/app'), 'latest');
  await clock.advance(TTL + 1);
  up.failNext('headManifest', notFound('fake.io'));
  await tags.getManifest(up.target('team/app'), 'latest');
  up.image('team/app', 'latest', v2);
  await clock.advance(TTL + 1);
  const back = await tags.getManifest(up.target('team/app'), 'latest');
  t.equal(back.cache, 'miss');
  t.equal(back.digest, v2.manifest.digest);
  t.equal(back.goneSince, undefined);
  t.equal(await store.repos.getGone({ upstream: 'fake.io', name: 'team/app' }, 'latest'), null, 'no record');
  t.notOk(store.blobs.isPinned(v1.manifest.digest), 'the old manifest is evictable again');
});

t.test('a gone record that does not parse is not trusted: the tag is recorded again', async (t) => {
  const { store, up, clock, tags } = await setup(t);
  await tags.getManifest(up.target('team/app'), 'latest');
  await store.blobs.records.write('gone/fake.io/team/app/_tags/latest', JSON.stringify({ digest: '../../etc', since: 'yesterday', held: [], pinned: [] }));
  await clock.advance(TTL + 1);
  up.failNext('headManifest', notFound('fake.io'));
  const kept = await tags.getManifest(up.target('team/app'), 'latest');
  t.equal(kept.goneSince, clock.now(), 'recorded now, not at the record\'s word');
  t.equal((await store.repos.getGone({ upstream: 'fake.io', name: 'team/app' }, 'latest'))?.digest, v1.manifest.digest);
});

t.test('with cache.gonePolicies forget, a stored tag the upstream no longer has is not served (its not-found leaves as it is)', async (t) => {
  const store = await makeStore(t);
  const metadata = await makeMetadata();
  const clock = new FakeClock();
  const up = new FakePullUpstream('fake.io', upstreamConfig('fake.io', { tagTTL: '60s' }, { gonePolicies: [{ repository: 'fake.io/team/**', action: 'forget' }] }));
  up.image('team/app', 'latest', v1);
  const tags = resolver(store, metadata, clock);
  await tags.getManifest(up.target('team/app'), 'latest');
  await clock.advance(TTL + 1);
  up.failNext('headManifest', notFound('fake.io'));
  await t.rejects(tags.getManifest(up.target('team/app'), 'latest'), { name: 'UpstreamError', kind: 'not_found' });
  t.equal(await store.repos.getTag({ upstream: 'fake.io', name: 'team/app' }, 'latest'), null, 'the stored tag is dropped');
  t.equal(await store.repos.getGone({ upstream: 'fake.io', name: 'team/app' }, 'latest'), null, 'nothing recorded');
});

t.test('offline: a stored tag is a hit and the upstream is never asked; a tag not stored is OFFLINE', async (t) => {
  const { store, metadata, clock, up, tags } = await setup(t);
  await tags.getManifest(up.target('team/app'), 'latest');
  up.offline = true;
  const offline = resolver(store, metadata, clock);
  await clock.advance(TTL + 1);
  const hit = await offline.getManifest(up.target('team/app'), 'latest');
  t.equal(hit.cache, 'hit');
  await t.rejects(offline.getManifest(up.target('team/app'), 'other'), { name: 'OciError', code: 'OFFLINE' });
  t.equal(up.count('headManifest'), 0);
  t.equal(up.count('getManifest'), 1);
});

t.test('a tag forgotten while it is being resolved is resolved again, and answers what the upstream says after the move', async (t) => {
  const { up, tags } = await setup(t);
  const gate = up.gate('getManifest');
  const pending = tags.getManifest(up.target('team/app'), 'latest');
  while (up.count('getManifest') === 0) await new Promise((r) => setTimeout(r, 1));
  // A push moves the tag meanwhile: the first resolution's answer (v1) predates it.
  up.image('team/app', 'latest', v2);
  tags.forget('fake.io', 'team/app', 'latest');
  const answer = await pending;
  gate.release();
  await new Promise((r) => setTimeout(r, 50)); // the aborted resolution ends (its answer unused)
  t.equal(answer.digest, v2.manifest.digest);
  t.equal(up.count('getManifest'), 2);
});

t.test("an upstream failure whose message is 'deleted' is not mistaken for the cache's abort: one request, its failure thrown", async (t) => {
  const { up, tags } = await setup(t);
  up.failNext('getManifest', new Error('deleted'), 4);
  await t.rejects(tags.getManifest(up.target('team/app'), 'latest'), { message: 'deleted' });
  t.equal(up.count('getManifest'), 1);
});

t.test("a replica that waited for another one's turn finds its answer in the shared state, asking the upstream nothing", async (t) => {
  const { store, metadata, clock, up } = await setup(t);
  const other = resolver(store, metadata, clock);
  const keys: string[] = [];
  const turns = {
    turn: async (key: string): Promise<Turn> => {
      keys.push(key);
      await other.getManifest(up.target('team/app'), 'latest'); // the replica that had the turn
      return 'waited';
    },
  };
  const got = await resolver(store, metadata, clock, turns).getManifest(up.target('team/app'), 'latest');
  t.equal(got.cache, 'hit');
  t.equal(got.digest, v1.manifest.digest);
  t.same(keys, ['tag:fake.io/team/app:latest']);
  t.equal(up.count('getManifest'), 1, "only the other replica's GET");
});
