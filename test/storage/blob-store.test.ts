// The backend-neutral store (lib/storage/blob-store.ts) on the in-memory backend: the LRU bound,
// pins, the snapshot and a restart, content another process stored, push sessions committed, and
// what callers outside lib/storage read from it (isPinned, sizeOf, stats, digests).
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import t, { type Test } from 'tap';
import { parseDigest, type Digest } from '../../lib/oci/digest.js';
import { BlobStore } from '../../lib/storage/blob-store.js';
import { DigestMismatchError, TooManyUploadsError, UploadUnknownError } from '../../lib/storage/errors.js';
import { MemoryBackend } from '../../lib/storage/memory/memory-backend.js';
import { UploadStore } from '../../lib/storage/upload-store.js';

function blobOf(size: number): { data: Buffer; d: Digest } {
  const data = randomBytes(size);
  return { data, d: parseDigest(`sha256:${createHash('sha256').update(data).digest('hex')}`) };
}

async function storeOn(t: Test, backend: MemoryBackend, maxSize: number | null): Promise<BlobStore> {
  const store = new BlobStore(backend, { maxSize });
  await store.init();
  t.teardown(() => store.close());
  return store;
}

t.test('past maxSize the least recently served content is evicted from the index and the backend', async (t) => {
  const backend = new MemoryBackend();
  const store = await storeOn(t, backend, 3000);
  const [a, b, c, d] = [blobOf(1000), blobOf(1000), blobOf(1000), blobOf(1000)];
  for (const x of [a!, b!, c!]) await store.putSmall(x.data, x.d);
  t.ok(store.stat(a!.d), 'a served: now the most recent');
  await store.putSmall(d!.data, d!.d);
  t.notOk(store.has(b!.d), 'b, the least recently served, is evicted');
  t.equal(await backend.stat(b!.d), null, 'and its bytes deleted');
  t.ok(store.has(a!.d) && store.has(c!.d) && store.has(d!.d), 'the rest stays');
  t.equal(store.evictions, 1);
  t.same(store.stats(), { cachedBytes: 3000, cachedCount: 3, pinnedBytes: 0, pinnedCount: 0 });
});

t.test('pinned content is never evicted, and a restart finds it pinned again', async (t) => {
  const backend = new MemoryBackend();
  const store = await storeOn(t, backend, 2000);
  const [p, x, y] = [blobOf(1000), blobOf(1000), blobOf(1000)];
  await store.putSmall(p.data, p.d, { pinned: true });
  t.ok(store.isPinned(p.d.value), 'pinned as it landed');
  await store.putSmall(x.data, x.d);
  await store.putSmall(y.data, y.d);
  t.ok(store.has(p.d), 'pinned content stays whatever comes after it');
  t.equal(store.sizeOf(p.d.value), 1000);
  const again = await storeOn(t, backend, 2000);
  t.ok(again.isPinned(p.d.value), 'pinned after a restart (from its pin record)');
  await again.unpin(p.d);
  t.notOk(again.isPinned(p.d.value), 'unpinned: evictable again');
  t.ok(again.has(p.d), 'but still stored');
});

t.test('a restart rebuilds the index from the listing, in the recency order the snapshot recorded', async (t) => {
  const backend = new MemoryBackend();
  const store = await storeOn(t, backend, null);
  const [a, b, c] = [blobOf(100), blobOf(200), blobOf(300)];
  for (const x of [a!, b!, c!]) await store.putSmall(x.data, x.d);
  t.ok(store.stat(a!.d), 'a served last');
  await store.saveSnapshot();
  await backend.remove(c!.d);
  const again = await storeOn(t, backend, null);
  t.same([...again.digests()], [b!.d.value, a!.d.value], 'b then a (least recently used first); c is gone from the backend');
  t.equal(again.sizeOf(b!.d.value), 200);
});

/** The steps of a store's start-up, with each listing of `backend` recorded as 'list'. */
function listingsOf(backend: MemoryBackend): string[] {
  const steps: string[] = [];
  const listing = backend.list.bind(backend);
  backend.list = (known) => {
    steps.push('list');
    return listing(known);
  };
  return steps;
}

t.test('a snapshot of more blobs than one chunk of lines is written whole and read back in its order; settle is called before the listing', async (t) => {
  const backend = new MemoryBackend();
  const store = await storeOn(t, backend, null);
  const blobs = Array.from({ length: 5000 }, (_, i) => blobOf(10 + (i % 7)));
  for (const x of blobs) await store.putSmall(x.data, x.d);
  t.ok(store.stat(blobs[0]!.d), 'the first served last: now the most recent');
  const order = [...store.digests()];
  await store.saveSnapshot();
  const steps = listingsOf(backend);
  const again = new BlobStore(backend, { maxSize: null });
  await again.init({ settle: () => steps.push('settle') });
  t.teardown(() => again.close());
  t.same([...again.digests()], order, 'every entry, least recently used first');
  t.equal(again.sizeOf(blobs[3]!.d.value), 13);
  t.same(steps, ['settle', 'list'], 'settled once, before the listing: the snapshot knew everything listed');
});

t.test('without a snapshot every listed blob is indexed, and settle is called again before the index is built', async (t) => {
  const backend = new MemoryBackend();
  const store = await storeOn(t, backend, null);
  const blobs = [blobOf(10), blobOf(20), blobOf(30)];
  for (const x of blobs) await store.putSmall(x.data, x.d);
  await backend.writeSnapshot(['not a snapshot\n']);
  const steps = listingsOf(backend);
  const again = new BlobStore(backend, { maxSize: null });
  await again.init({ settle: () => steps.push(`settle with ${again.stats().cachedCount} indexed`) });
  t.teardown(() => again.close());
  t.same(new Set(again.digests()), new Set(blobs.map((x) => x.d.value)));
  t.same(steps, ['settle with 0 indexed', 'list', 'settle with 0 indexed'], 'before the listing, and after it before the index is built');
});

t.test('content another process stored is found on a miss, and served', async (t) => {
  const backend = new MemoryBackend();
  const store = await storeOn(t, backend, null);
  const data = randomBytes(5000);
  const d = backend.putBehindTheIndex(data);
  t.notOk(store.has(d), 'unknown to the index');
  t.ok(await store.present(d), 'present: found by asking the backend');
  const blob = await store.open(d);
  t.equal(blob?.size, 5000);
  const chunks: Buffer[] = [];
  for await (const c of blob!.open() as AsyncIterable<Buffer>) chunks.push(c);
  t.same(Buffer.concat(chunks), data);
  t.same([...store.readingNow()], [], 'the read is over once its stream closed');
});

t.test('content deleted behind the index is forgotten when opened, not served', async (t) => {
  const backend = new MemoryBackend();
  const store = await storeOn(t, backend, null);
  const a = blobOf(100);
  await store.putSmall(a.data, a.d);
  await backend.remove(a.d);
  t.equal(await store.open(a.d), null);
  t.notOk(store.has(a.d));
});

t.test('a push through UploadStore lands pinned under its digest; a wrong digest stores nothing', async (t) => {
  const backend = new MemoryBackend();
  const store = await storeOn(t, backend, null);
  const uploads = new UploadStore(store);
  await uploads.init();
  const repo = { upstream: '_hosted', name: 'team/app' };
  const a = blobOf(200_000);
  const s = await uploads.create(repo, 'alice');
  const size = await uploads.exclusive(s.uuid, () => uploads.append(s.uuid, 0, Readable.from([a.data]), a.data.length));
  t.equal(size, a.data.length);
  await uploads.finish(s.uuid, size, a.d);
  t.ok(store.isPinned(a.d.value), 'pinned');
  t.same(await store.readSmall(a.d), a.data, 'stored byte for byte');
  t.same(await backend.sessions.list(), [], 'the session is gone');

  const wrong = await uploads.create(repo, 'alice');
  await uploads.append(wrong.uuid, 0, Readable.from([randomBytes(10)]), 10);
  const other = blobOf(10);
  await t.rejects(uploads.finish(wrong.uuid, 10, other.d), DigestMismatchError);
  t.notOk(store.has(other.d), 'nothing stored');
  await t.rejects(uploads.get(wrong.uuid, repo), UploadUnknownError, 'the session was deleted');
});

t.test('UploadStore refuses sessions past its limits with TooManyUploadsError', async (t) => {
  const store = await storeOn(t, new MemoryBackend(), null);
  const uploads = new UploadStore(store, { limits: { maxSessions: 1 } });
  await uploads.init();
  await uploads.create({ upstream: '_hosted', name: 'a' });
  const err = await uploads.create({ upstream: '_hosted', name: 'a' }).catch((e: unknown) => e);
  t.ok(err instanceof TooManyUploadsError);
  t.equal((err as TooManyUploadsError).retryAfterSec, 60);
});
