// The store's size bound: least recently served content goes first, hits refresh recency, a read
// in progress survives its file's eviction, pinned content stays, and a restart rebuilds the index
// from the directory listing alone.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { BlobStore, type BlobStoreOptions } from '../../lib/storage/blob-store.js';
import { FsBackend } from '../../lib/storage/fs/fs-backend.js';
import type { StorePaths } from '../../lib/storage/paths.js';
import { parseDigest, type Digest } from '../../lib/oci/digest.js';

async function tempRoot(tt: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'stevedore-evict-'));
  tt.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A store on the filesystem backend under `root`. */
function fsStore(root: string, opts: BlobStoreOptions): BlobStore {
  return new BlobStore(new FsBackend(root), opts);
}

function pathsOf(store: BlobStore): StorePaths {
  return (store.backend as FsBackend).paths;
}

function blobOf(size: number): { data: Buffer; d: Digest } {
  const data = randomBytes(size);
  return { data, d: parseDigest(`sha256:${createHash('sha256').update(data).digest('hex')}`) };
}

async function put(store: BlobStore, b: { data: Buffer; d: Digest }): Promise<void> {
  await store.putSmall(b.data, b.d);
}

async function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

t.test('content past maxSize evicts the least recently stored first', async (t) => {
  const store = fsStore(await tempRoot(t), { maxSize: 3000 });
  await store.init();
  const [a, b, c, d] = [blobOf(1000), blobOf(1000), blobOf(1000), blobOf(1000)];
  for (const x of [a!, b!, c!]) await put(store, x);
  t.ok(store.has(a!.d) && store.has(b!.d) && store.has(c!.d), 'three fit');
  await put(store, d!);
  t.notOk(store.has(a!.d), 'the oldest is gone from the index');
  t.notOk(existsSync(pathsOf(store).blob(a!.d)), 'and from the disk');
  t.ok(store.has(b!.d) && store.has(c!.d) && store.has(d!.d), 'the others stay');
  t.equal(store.index.stats().cachedBytes, 3000);
});

t.test('a hit refreshes recency, so the least recently served goes instead', async (t) => {
  const store = fsStore(await tempRoot(t), { maxSize: 3000 });
  await store.init();
  const [a, b, c, d] = [blobOf(1000), blobOf(1000), blobOf(1000), blobOf(1000)];
  for (const x of [a!, b!, c!]) await put(store, x);
  t.ok(store.stat(a!.d), 'a is served');
  await put(store, d!);
  t.ok(store.has(a!.d), 'a, just served, stays');
  t.notOk(store.has(b!.d), 'b, least recently served, is evicted');
  t.same(store.index.evictionOrder(), [c!.d.value, a!.d.value, d!.d.value], 'order: c, a, d');
});

t.test('a read in progress survives the eviction of its file', async (t) => {
  const store = fsStore(await tempRoot(t), { maxSize: 2 * 1024 * 1024 });
  await store.init();
  const a = blobOf(1024 * 1024);
  await put(store, a);
  const opened = await store.open(a.d);
  t.ok(opened);
  const stream = opened!.open();
  const first = await new Promise<Buffer>((resolve) => stream.once('data', (c: Buffer) => resolve(c)));
  stream.pause();
  for (let i = 0; i < 3; i++) await put(store, blobOf(1024 * 1024));
  t.notOk(existsSync(pathsOf(store).blob(a.d)), 'the file was evicted (unlinked)');
  stream.resume();
  const rest = await readAll(stream);
  t.ok(Buffer.concat([first, rest]).equals(a.data), 'the reader still got every byte');
});

t.test('pinned content is never evicted, and stays pinned across a restart', async (t) => {
  const root = await tempRoot(t);
  const store = fsStore(root, { maxSize: 2000 });
  await store.init();
  const p = blobOf(1500);
  await put(store, p);
  await store.pin(p.d);
  for (let i = 0; i < 5; i++) await put(store, blobOf(1000));
  t.ok(store.has(p.d) && existsSync(pathsOf(store).blob(p.d)), 'pinned blob kept');
  t.equal(store.index.stats().pinnedBytes, 1500);
  t.ok(store.index.stats().cachedBytes <= 2000, 'the bound applies to cached content');
  const again = fsStore(root, { maxSize: 2000 });
  await again.init();
  t.ok(again.index.isPinned(p.d.value), 'still pinned after restart');
});

t.test('a blob larger than the whole cache is not kept', async (t) => {
  const store = fsStore(await tempRoot(t), { maxSize: 1000 });
  await store.init();
  const big = blobOf(5000);
  await put(store, big);
  t.notOk(store.has(big.d));
  t.notOk(existsSync(pathsOf(store).blob(big.d)));
});

t.test('restart: temp files are swept and the index is rebuilt from disk in mtime order', async (t) => {
  const root = await tempRoot(t);
  const store = fsStore(root, { maxSize: null });
  await store.init();
  const blobs = [blobOf(100), blobOf(200), blobOf(300)];
  for (const b of blobs) await put(store, b);
  // Recency as the files record it: blobs[1] oldest, then blobs[2], then blobs[0].
  const base = Date.now() / 1000 - 1000;
  await fsp.utimes(pathsOf(store).blob(blobs[1]!.d), base, base);
  await fsp.utimes(pathsOf(store).blob(blobs[2]!.d), base + 10, base + 10);
  await fsp.utimes(pathsOf(store).blob(blobs[0]!.d), base + 20, base + 20);
  await fsp.writeFile(path.join(pathsOf(store).tmp, 'abc.part'), 'half a download');
  await fsp.writeFile(path.join(pathsOf(store).blobs, 'sha256', 'zz-not-a-blob'), 'x').catch(() => undefined);

  const again = fsStore(root, { maxSize: null });
  const r = await again.init();
  t.equal(r.sweptTempFiles, 1, 'one temp file swept');
  t.same(await fsp.readdir(pathsOf(again).tmp), [], 'tmp is empty');
  t.equal(r.blobs, 3);
  t.equal(r.bytes, 600);
  t.same(again.index.evictionOrder(), [blobs[1]!.d.value, blobs[2]!.d.value, blobs[0]!.d.value], 'LRU order from mtimes');
  for (const b of blobs) t.equal(again.stat(b.d)?.size, b.data.length);
});

t.test('restart with a smaller maxSize evicts the oldest down to the bound', async (t) => {
  const root = await tempRoot(t);
  const store = fsStore(root, { maxSize: null });
  await store.init();
  const blobs = [blobOf(1000), blobOf(1000), blobOf(1000)];
  for (const [i, b] of blobs.entries()) {
    await put(store, b);
    const when = Date.now() / 1000 - 100 + i;
    await fsp.utimes(pathsOf(store).blob(b.d), when, when);
  }
  const small = fsStore(root, { maxSize: 2000 });
  await small.init();
  t.notOk(small.has(blobs[0]!.d), 'oldest evicted');
  t.notOk(existsSync(pathsOf(small).blob(blobs[0]!.d)));
  t.ok(small.has(blobs[1]!.d) && small.has(blobs[2]!.d));
});

t.test('a file deleted behind the store is forgotten on open, not served', async (t) => {
  const store = fsStore(await tempRoot(t), { maxSize: null });
  await store.init();
  const a = blobOf(100);
  await put(store, a);
  await fsp.rm(pathsOf(store).blob(a.d));
  t.equal(await store.open(a.d), null);
  t.notOk(store.has(a.d));
});

t.test('restart from a snapshot: sizes and recency from it, existence from the directory listing', async (t) => {
  const root = await tempRoot(t);
  const store = fsStore(root, { maxSize: null });
  await store.init();
  const [a, b, c] = [blobOf(100), blobOf(200), blobOf(300)];
  for (const x of [a!, b!, c!]) await put(store, x);
  t.ok(store.stat(a!.d), 'a served last: most recent');
  await store.saveSnapshot();
  // After the snapshot: c deleted behind the store's back, d added by another process.
  await fsp.rm(pathsOf(store).blob(c!.d));
  const d = blobOf(400);
  await fsp.mkdir(path.dirname(pathsOf(store).blob(d.d)), { recursive: true });
  await fsp.writeFile(pathsOf(store).blob(d.d), d.data);

  const again = fsStore(root, { maxSize: null });
  const r = await again.init();
  t.equal(r.blobs, 3, 'a, b from the snapshot, d from a stat; c is gone');
  t.equal(r.bytes, 100 + 200 + 400);
  t.notOk(again.has(c!.d), 'a file gone from disk is not indexed, whatever the snapshot says');
  t.equal(again.stat(d.d)?.size, 400);
  const order = again.index.evictionOrder();
  t.ok(order.indexOf(b!.d.value) < order.indexOf(a!.d.value), 'recency from the snapshot: b before a');
});

t.test('a corrupt snapshot is ignored', async (t) => {
  const root = await tempRoot(t);
  const store = fsStore(root, { maxSize: null });
  await store.init();
  const a = blobOf(100);
  await put(store, a);
  await fsp.writeFile(pathsOf(store).indexSnapshot, 'garbage\nsha256:x y z\n');
  const again = fsStore(root, { maxSize: null });
  const r = await again.init();
  t.equal(r.blobs, 1);
  t.equal(again.stat(a.d)?.size, 100);
});
