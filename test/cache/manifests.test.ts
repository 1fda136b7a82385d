// Unit tests of manifests.ts (manifests by digest): fetched once, verified, stored with what they
// reference linked; refused when their bytes or references are wrong. Fake upstream, real store;
// asserted: the answer's bytes and digest, what was stored and linked, the upstream's request count.
import t from 'tap';
import { DescriptorSizes } from '../../lib/cache/descriptor-sizes.js';
import type { Turn } from '../../lib/cache/downloads.js';
import { Manifests } from '../../lib/cache/manifests.js';
import { DEFAULT_PULL_LIMITS } from '../../lib/cache/pull-types.js';
import { RepositoryAccess } from '../../lib/cache/repository-access.js';
import { digestOf, parseDigest } from '../../lib/oci/digest.js';
import type { Store } from '../../lib/storage/store.js';
import { buildOciImage, sha256 } from '../fixtures/images.js';
import type { Teardownable } from '../fixtures/util.js';
import { FakePullUpstream, makeStore } from '../fixtures/pull-parts.js';

const img = buildOciImage('manifests', { layers: 3 });
const digest = parseDigest(img.manifest.digest);
const repo = { upstream: 'fake.io', name: 'team/app' };
const alone = { turn: async (): Promise<Turn> => null };

function manifests(store: Store, opts: { turns?: { turn(key: string): Promise<Turn> }; maxReferences?: number; sizes?: DescriptorSizes } = {}): Manifests {
  return new Manifests({
    store,
    access: new RepositoryAccess(store),
    turns: opts.turns ?? alone,
    sizes: opts.sizes ?? new DescriptorSizes(),
    limits: { manifestMaxReferences: opts.maxReferences ?? DEFAULT_PULL_LIMITS.manifestMaxReferences },
    manifestMaxSize: 4 * 1024 * 1024,
  });
}

async function setup(t: Tap) {
  const store = await makeStore(t);
  const up = new FakePullUpstream('fake.io');
  up.image('team/app', 'v1', img);
  return { store, up };
}
type Tap = Teardownable;

t.test('a manifest not stored is fetched once, stored, and linked with everything it references', async (t) => {
  const { store, up } = await setup(t);
  const m = manifests(store);
  const first = await m.getByDigest(up.target('team/app'), digest);
  t.equal(first.cache, 'miss');
  t.equal(first.digest, img.manifest.digest);
  t.same(first.bytes, img.manifest.data);
  t.equal(first.mediaType, img.manifest.mediaType);
  t.same(await store.blobs.readSmall(digest), img.manifest.data, 'stored');
  for (const b of [img.config, ...img.layers]) t.ok(await store.repos.hasLink(repo, parseDigest(b.digest)), `${b.digest} linked`);
  const second = await m.getByDigest(up.target('team/app'), digest);
  t.equal(second.cache, 'hit');
  t.same(second.bytes, img.manifest.data);
  t.equal(up.count('getManifest'), 1);
  t.equal(up.count('headBlob'), 0);
});

t.test('the sizes its descriptors give are remembered for this repository only', async (t) => {
  const { store, up } = await setup(t);
  const sizes = new DescriptorSizes();
  await manifests(store, { sizes }).getByDigest(up.target('team/app'), digest);
  t.equal(sizes.get(repo, img.layers[1]!.digest), img.layers[1]!.size);
  t.equal(sizes.get({ upstream: 'fake.io', name: 'other/app' }, img.layers[1]!.digest), null);
});

t.test('bytes whose digest is not the one asked for are refused (502 MANIFEST_INVALID) and not stored', async (t) => {
  const { store, up } = await setup(t);
  const other = buildOciImage('manifests-other');
  up.manifest('team/app', img.manifest.digest, other.manifest.data, other.manifest.mediaType, img.manifest.digest);
  await t.rejects(manifests(store).getByDigest(up.target('team/app'), digest), { name: 'OciError', code: 'MANIFEST_INVALID', status: 502 });
  t.notOk(await store.blobs.present(digest));
  t.notOk(await store.blobs.present(parseDigest(other.manifest.digest)));
});

t.test('a manifest naming more blobs and manifests than cache.manifestMaxReferences is refused and not stored', async (t) => {
  const { store, up } = await setup(t);
  await t.rejects(manifests(store, { maxReferences: 3 }).getByDigest(up.target('team/app'), digest), { name: 'OciError', code: 'MANIFEST_INVALID', message: /above the limit of 3/ });
  t.notOk(await store.blobs.present(digest));
});

t.test('bytes that are no manifest are refused (502 MANIFEST_INVALID)', async (t) => {
  const { store, up } = await setup(t);
  const junk = Buffer.from('not a manifest');
  up.manifest('team/app', sha256(junk), junk, 'application/vnd.oci.image.manifest.v1+json', sha256(junk));
  await t.rejects(manifests(store).getByDigest(up.target('team/app'), parseDigest(sha256(junk))), { name: 'OciError', code: 'MANIFEST_INVALID', status: 502 });
});

t.test("an upstream's not-found leaves as its UpstreamError (the HTTP edge answers MANIFEST_UNKNOWN)", async (t) => {
  const { store, up } = await setup(t);
  await t.rejects(manifests(store).getByDigest(up.target('team/other'), digest), { name: 'UpstreamError', kind: 'not_found' });
  t.notOk(await store.blobs.present(digest));
});

t.test('a manifest stored for another repository is served here only once the upstream confirms this one has it', async (t) => {
  const { store, up } = await setup(t);
  const m = manifests(store);
  await m.getByDigest(up.target('team/app'), digest);
  await t.rejects(m.getByDigest(up.target('team/private'), digest), { name: 'UpstreamError', kind: 'not_found' });
  t.equal(up.count('headBlob'), 1);
  up.image('team/mirror', null, img);
  const got = await m.getByDigest(up.target('team/mirror'), digest);
  t.equal(got.cache, 'hit');
  t.equal(up.count('headBlob'), 2);
  t.equal(up.count('getManifest'), 1);
});

t.test('a replica that waited for another one\'s turn reads what that one stored, asking the upstream nothing', async (t) => {
  const { store, up } = await setup(t);
  const other = manifests(store);
  const turns = {
    turn: async (key: string): Promise<Turn> => {
      t.equal(key, `manifest:${img.manifest.digest}`);
      await other.getByDigest(up.target('team/app'), digest); // the replica that had the turn
      return 'waited';
    },
  };
  const got = await manifests(store, { turns }).getByDigest(up.target('team/app'), digest);
  t.equal(got.cache, 'hit');
  t.same(got.bytes, img.manifest.data);
  t.equal(up.count('getManifest'), 1, "only the other replica's GET");
});

t.test('a replica holding the turn looks in the store again before asking the upstream, and releases the turn', async (t) => {
  const { store, up } = await setup(t);
  let released = 0;
  const turns = { turn: async (): Promise<Turn> => ({ release: async () => void released++ }) };
  const got = await manifests(store, { turns }).getByDigest(up.target('team/app'), digest);
  t.equal(got.cache, 'miss');
  t.equal(released, 1);
  t.equal(up.count('getManifest'), 1);
});

// Found looking into the soak (bench/scenarios/s13-soak.ts): a small manifest's bytes from the
// upstream are a view of a larger buffer (Buffer.concat's 8 KiB pool, a network read); kept as they
// are, each memoized manifest held all of it, beyond what the memo's byte budget counts.
t.test('a manifest kept in memory holds its own bytes, not the larger buffer they came in', async (t) => {
  const { store, up } = await setup(t);
  const m = manifests(store);
  const arrived = Buffer.alloc(64 * 1024);
  img.manifest.data.copy(arrived, 1000);
  const view = arrived.subarray(1000, 1000 + img.manifest.data.length);
  await m.save(up.target('team/app'), view, img.manifest.mediaType, digest, null);
  const kept = await m.readStored(digest);
  t.same(kept?.bytes, img.manifest.data, 'the manifest');
  t.equal(kept?.bytes.buffer.byteLength, img.manifest.data.length, 'in a buffer of its own size');
});

t.test('a manifest served by digest from memory keeps its recency in the store: eviction takes content served less recently', async (t) => {
  const store = await makeStore(t, { maxSize: img.manifest.data.length + 3 * 1000 });
  const up = new FakePullUpstream('fake.io');
  up.image('team/app', 'v1', img);
  const m = manifests(store);
  t.equal((await m.getByDigest(up.target('team/app'), digest)).cache, 'miss');
  const others = Array.from({ length: 6 }, (_, i) => Buffer.alloc(1000, i + 1));
  for (const o of others) {
    await store.blobs.putSmall(o, digestOf(o));
    t.equal((await m.getByDigest(up.target('team/app'), digest)).cache, 'hit');
  }
  t.notOk(store.blobs.has(digestOf(others[0]!)), 'content stored after it was evicted meanwhile');
  t.ok(store.blobs.has(digest), 'the manifest served from memory all along is still stored');
  t.equal(up.count('getManifest'), 1);
});
