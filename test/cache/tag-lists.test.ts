// Unit tests of tag-lists.ts: the upstream's list, else the last stored one (stale) when the
// upstream cannot answer; tags pushed here listed either way. Fake upstream, real store.
import t from 'tap';
import { TagLists } from '../../lib/cache/tag-lists.js';
import { DEFAULT_PULL_LIMITS } from '../../lib/cache/pull-types.js';
import { parseDigest } from '../../lib/oci/digest.js';
import { buildOciImage } from '../fixtures/images.js';
import type { Teardownable } from '../fixtures/util.js';
import { FakePullUpstream, makeStore, rateLimited, unavailable } from '../fixtures/pull-parts.js';

const clock = { now: () => 1_000_000 };
const repo = { upstream: 'fake.io', name: 'team/app' };

async function setup(t: Tap) {
  const store = await makeStore(t);
  const up = new FakePullUpstream('fake.io');
  up.tags('team/app', ['v1', 'v2']);
  return { store, up, lists: new TagLists(store, clock, DEFAULT_PULL_LIMITS) };
}
type Tap = Teardownable;

t.test("the upstream's list is served and stored", async (t) => {
  const { store, up, lists } = await setup(t);
  const got = await lists.list(up.target('team/app'));
  t.same(got, { tags: ['v1', 'v2'], cache: 'miss' });
  t.equal(up.count('listTags'), 1);
  t.same((await store.repos.getTagsList(repo))?.tags, ['v1', 'v2']);
});

t.test('the upstream unavailable: the last stored list is served, stale, with the reason', async (t) => {
  const { up, lists } = await setup(t);
  await lists.list(up.target('team/app'));
  up.tags('team/app', ['v1', 'v2', 'v3']);
  up.failNext('listTags', unavailable('fake.io'));
  const got = await lists.list(up.target('team/app'));
  t.same(got.tags, ['v1', 'v2']);
  t.equal(got.cache, 'stale');
  t.equal(got.staleReason, 'upstream fake.io answered 503');
  t.equal(up.count('listTags'), 2);
});

t.test('the upstream rate-limiting with no list stored: its failure leaves as it is, for the HTTP edge to answer', async (t) => {
  const { up, lists } = await setup(t);
  up.failNext('listTags', rateLimited('fake.io', 30));
  await t.rejects(lists.list(up.target('team/app')), { name: 'UpstreamError', kind: 'rate_limited', retryAfter: 30 });
});

t.test("an upstream's not-found is no reason to serve a stored list", async (t) => {
  const { up, lists } = await setup(t);
  await lists.list(up.target('team/app'));
  up.tags('team/app', []);
  await t.rejects(lists.list(up.target('team/gone')), { name: 'UpstreamError', kind: 'not_found' });
});

t.test('tags pushed here (pinned) are listed beside the stored list when the upstream fails', async (t) => {
  const { store, up, lists } = await setup(t);
  await lists.list(up.target('team/app'));
  const img = buildOciImage('tag-lists-seeded');
  const digest = await store.blobs.putSmall(img.manifest.data, parseDigest(img.manifest.digest), { pinned: true });
  await store.repos.setTag(repo, 'pushed', { digest, mediaType: img.manifest.mediaType, size: img.manifest.size });
  up.failNext('listTags', unavailable('fake.io'));
  const got = await lists.list(up.target('team/app'));
  t.same(got.tags.sort(), ['pushed', 'v1', 'v2']);
  t.equal(got.cache, 'stale');
});
