// Unit tests of repository-access.ts (docs/ARCHITECTURE.md rule 9: a repository serves only what
// it links): with an in-process fake upstream and a store; what is asserted is whether the read
// passes, what got linked, and how many HEADs reached the upstream.
import t from 'tap';
import { parseDigest } from '../../lib/oci/digest.js';
import { RepositoryAccess } from '../../lib/cache/repository-access.js';
import { buildOciImage } from '../fixtures/images.js';
import type { Teardownable } from '../fixtures/util.js';
import { FakePullUpstream, makeStore, unavailable } from '../fixtures/pull-parts.js';

const img = buildOciImage('repository-access');
const layer = parseDigest(img.layers[0]!.digest);

async function setup(t: Tap) {
  const store = await makeStore(t);
  const up = new FakePullUpstream('fake.io');
  up.image('team/app', 'v1', img);
  return { store, up, access: new RepositoryAccess(store) };
}
type Tap = Teardownable;

t.test('a repository reads what it links without asking the upstream', async (t) => {
  const { store, up, access } = await setup(t);
  await store.repos.link({ upstream: 'fake.io', name: 'team/app' }, layer);
  await access.authorizeStored(up.target('team/app'), layer);
  t.equal(up.count('headBlob'), 0);
});

t.test('content this repository does not link is read once the upstream confirms it has it, and linked then', async (t) => {
  const { store, up, access } = await setup(t);
  await access.authorizeStored(up.target('team/app'), layer);
  t.equal(up.count('headBlob'), 1);
  t.ok(await store.repos.hasLink({ upstream: 'fake.io', name: 'team/app' }, layer));
  await access.authorizeStored(up.target('team/app'), layer);
  t.equal(up.count('headBlob'), 1, 'linked: not asked again');
});

t.test('content the upstream does not have for this repository is refused with its not-found, and nothing is linked', async (t) => {
  const { store, up, access } = await setup(t);
  await t.rejects(access.authorizeStored(up.target('other/app'), layer), { name: 'UpstreamError', kind: 'not_found' });
  t.notOk(await store.repos.hasLink({ upstream: 'fake.io', name: 'other/app' }, layer));
});

t.test('an upstream that cannot answer never widens what a name reads', async (t) => {
  const { store, up, access } = await setup(t);
  up.failNext('headBlob', unavailable('fake.io'));
  await t.rejects(access.authorizeStored(up.target('team/app'), layer), { name: 'UpstreamError', kind: 'unavailable' });
  t.notOk(await store.repos.hasLink({ upstream: 'fake.io', name: 'team/app' }, layer));
});

t.test('a repository joins the download it started without asking the upstream', async (t) => {
  const { up, access } = await setup(t);
  await access.authorizeJoin(up.target('team/app'), layer, 'fake.io/team/app');
  t.equal(up.count('headBlob'), 0);
});

t.test('a download started for another repository is joined only once the upstream confirms this one has it', async (t) => {
  const { up, access } = await setup(t);
  await access.authorizeJoin(up.target('team/app'), layer, 'fake.io/someone/else');
  t.equal(up.count('headBlob'), 1);
  await t.rejects(access.authorizeJoin(up.target('other/app'), layer, 'fake.io/team/app'), { name: 'UpstreamError', kind: 'not_found' });
  t.equal(up.count('headBlob'), 2);
});
