// Unit tests of blob-pulls.ts with the downloads of one process (local-downloads.ts): a miss is one
// upstream download for every client, verified before it is stored; a hit is read only by a
// repository that may read it. Fake upstream, real store; asserted: the bytes each client got,
// what the store holds, and the upstream's request counts.
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import { BlobPulls } from '../../lib/cache/blob-pulls.js';
import { DescriptorSizes } from '../../lib/cache/descriptor-sizes.js';
import type { Downloads, Turn } from '../../lib/cache/downloads.js';
import { LocalDownloads } from '../../lib/cache/local-downloads.js';
import { DEFAULT_PULL_LIMITS, type BlobAnswer, type Target } from '../../lib/cache/pull-types.js';
import { RepositoryAccess } from '../../lib/cache/repository-access.js';
import { parseDigest, type Digest } from '../../lib/oci/digest.js';
import type { Store } from '../../lib/storage/store.js';
import { buildOciImage, pseudoRandom, sha256 } from '../fixtures/images.js';
import type { Teardownable } from '../fixtures/util.js';
import { FakePullUpstream, makeStore } from '../fixtures/pull-parts.js';

const log = pino({ level: 'silent' });
const img = buildOciImage('blob-pulls', { layers: 1, layerSize: 200_000 });
const layer = img.layers[0]!;
const digest = parseDigest(layer.digest);
const repo = { upstream: 'fake.io', name: 'team/app' };

function parts(store: Store, downloads?: (local: LocalDownloads) => Downloads) {
  const access = new RepositoryAccess(store);
  const local = new LocalDownloads({ store, log, access, sizes: new DescriptorSizes(), limits: DEFAULT_PULL_LIMITS, download: { backoffMs: 1 } });
  const pulls = new BlobPulls({ store, access, local, downloads: downloads ? downloads(local) : local });
  return { local, pulls };
}

async function read(answer: BlobAnswer): Promise<Buffer> {
  const body: Readable = answer.open();
  const chunks: Buffer[] = [];
  body.on('data', (c: Buffer) => chunks.push(c));
  await once(body, 'end');
  return Buffer.concat(chunks);
}

async function setup(t: Tap) {
  const store = await makeStore(t);
  const up = new FakePullUpstream('fake.io');
  up.image('team/app', 'v1', img);
  return { store, up, ...parts(store) };
}
type Tap = Teardownable;

t.test('a blob not stored is downloaded once, verified and stored; the next request is a hit', async (t) => {
  const { store, up, local, pulls } = await setup(t);
  const first = await pulls.get(up.target('team/app'), digest);
  t.equal(first.cache, 'miss');
  t.equal(first.size, layer.size);
  t.equal(sha256(await read(first)), layer.digest);
  await local.drain();
  t.ok(await store.blobs.present(digest), 'stored');
  // Linked once stored (a moment after the download settles).
  for (let i = 0; i < 100 && !(await store.repos.hasLink(repo, digest)); i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(await store.repos.hasLink(repo, digest), 'linked to the repository it was fetched for');
  const second = await pulls.get(up.target('team/app'), digest);
  t.equal(second.cache, 'hit');
  t.equal(sha256(await read(second)), layer.digest);
  t.equal(up.count('getBlob'), 1);
  t.equal(local.fetchedBytes.get('fake.io'), layer.size);
});

t.test('concurrent requests for one digest are one upstream download, and every client gets every byte', async (t) => {
  const { up, local, pulls } = await setup(t);
  const gate = up.gate('getBlob');
  const answers = Array.from({ length: 5 }, () => pulls.get(up.target('team/app'), digest));
  while (up.count('getBlob') === 0) await new Promise((r) => setTimeout(r, 1));
  gate.release();
  const bodies = await Promise.all(answers.map(async (a) => read(await a)));
  for (const b of bodies) t.equal(sha256(b), layer.digest);
  t.equal(up.count('getBlob'), 1);
  await local.drain();
});

t.test('bytes that do not match the digest are never stored, and the client is cut', async (t) => {
  const { store, up, local, pulls } = await setup(t);
  up.wrongBytes.set(layer.digest, pseudoRandom('not the layer', layer.size));
  const answer = await pulls.get(up.target('team/app'), digest).catch((err: unknown) => err);
  if (!(answer instanceof Error)) await t.rejects(read(answer as BlobAnswer));
  await local.drain();
  t.notOk(await store.blobs.present(digest));
});

t.test("an upstream's 404 for a blob leaves as its UpstreamError (the HTTP edge answers BLOB_UNKNOWN) and nothing is stored", async (t) => {
  const { store, up, pulls } = await setup(t);
  const missing = parseDigest(sha256('never pushed'));
  await t.rejects(pulls.get(up.target('team/app'), missing), { name: 'UpstreamError', kind: 'not_found' });
  t.notOk(await store.blobs.present(missing));
  t.equal(up.count('getBlob'), 1);
});

t.test('a stored blob is served to a repository that does not link it only once the upstream confirms it has it', async (t) => {
  const { up, local, pulls } = await setup(t);
  await read(await pulls.get(up.target('team/app'), digest));
  await local.drain();
  await t.rejects(pulls.get(up.target('team/private'), digest), { name: 'UpstreamError', kind: 'not_found' });
  await t.rejects(pulls.stat(up.target('team/private'), digest), { name: 'UpstreamError', kind: 'not_found' });
  t.equal(up.count('headBlob'), 2);
  t.equal(up.count('getBlob'), 1);
});

t.test('HEAD of a blob not stored asks the upstream for its size and downloads nothing', async (t) => {
  const { store, up, pulls } = await setup(t);
  t.same(await pulls.stat(up.target('team/app'), digest), { size: layer.size, cache: 'miss' });
  t.equal(up.count('headBlob'), 1);
  t.equal(up.count('getBlob'), 0);
  t.notOk(await store.blobs.present(digest));
});

t.test('a peer is never fetched for: a blob neither stored nor downloading here is null', async (t) => {
  const { up, local, pulls } = await setup(t);
  t.equal(await pulls.forPeer(digest), null);
  t.equal(up.count('getBlob'), 0);
  await read(await pulls.get(up.target('team/app'), digest));
  await local.drain();
  const stored = await pulls.forPeer(digest);
  t.equal(stored?.cache, 'hit');
  t.equal(sha256(await read(stored!)), layer.digest);
});

t.test('a Downloads that reports the blob stored meanwhile (by another replica) has it served from the store', async (t) => {
  const store = await makeStore(t);
  const up = new FakePullUpstream('fake.io');
  up.image('team/app', 'v1', img);
  let asked = 0;
  const elsewhere = (): Downloads => ({
    fetch: async (_t: Target, d: Digest) => {
      asked++;
      await store.blobs.putSmall(layer.data, d); // what the other replica stored
      await store.repos.link(repo, d);
      return 'stored';
    },
    turn: async (): Promise<Turn> => null,
    tagMoved: async () => undefined,
    handOver: async () => 0,
  });
  const { pulls } = parts(store, elsewhere);
  const answer = await pulls.get(up.target('team/app'), digest);
  t.equal(answer.cache, 'hit');
  t.equal(sha256(await read(answer)), layer.digest);
  t.equal(asked, 1);
  t.equal(up.count('getBlob'), 0);
});
