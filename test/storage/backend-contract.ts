// What every storage backend promises (lib/storage/backend.ts), as one suite each backend runs:
// test/storage/backend-filesystem.test.ts, backend-memory.test.ts, backend-s3.test.ts (a real Ceph
// RGW). A new backend passes this before anything above it is tested on it.
//
//   backendContract(t, { name: 'filesystem', make: async (t) => new FsBackend(await tmpDir(t)) });
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Test } from 'tap';
import { parseDigest, type Digest } from '../../lib/oci/digest.js';
import type { BlobBackend } from '../../lib/storage/backend.js';
import type { BlobWriter } from '../../lib/storage/blob-writer.js';
import { DigestMismatchError, SizeInvalidError } from '../../lib/storage/errors.js';
import { collector } from '../fixtures/byte-sink.js';

export interface BackendUnderTest {
  /** The name it is registered under (info().kind). */
  name: string;
  /** A new, empty backend, not opened yet; closed by the suite. */
  make(t: Test): Promise<BlobBackend>;
}

const MiB = 1024 * 1024;

function blobOf(data: Buffer): { data: Buffer; d: Digest } {
  return { data, d: parseDigest(`sha256:${createHash('sha256').update(data).digest('hex')}`) };
}

async function opened(t: Test, u: BackendUnderTest): Promise<BlobBackend> {
  const b = await u.make(t);
  await b.open({});
  t.teardown(() => b.close());
  return b;
}

/** Writes `data` through a writer of the backend; resolves with what `committed` was told. */
async function write(b: BlobBackend, data: Buffer, expected: Digest | null, opts: { size?: number; maxSize?: number } = {}): Promise<{ digest: string; size: number }> {
  let told: { digest: string; size: number } | null = null;
  const w = b.createWriter(expected, opts.maxSize === undefined ? {} : { maxSize: opts.maxSize }, (d, size) => {
    told = { digest: d.value, size };
  });
  await feed(w, data);
  const r = await w.commit(opts.size ?? data.length);
  if (!told) throw new Error('committed was not called');
  const t2 = told as { digest: string; size: number };
  if (t2.digest !== r.digest || t2.size !== r.size) throw new Error('committed was told something else than commit returned');
  return t2;
}

async function feed(w: BlobWriter, data: Buffer): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    w.once('error', reject);
    w.end(data, resolve);
  });
}

async function readAll(s: Readable): Promise<{ bytes: Buffer; chunks: number; largest: number }> {
  const parts: Buffer[] = [];
  let largest = 0;
  for await (const c of s as AsyncIterable<Buffer>) {
    parts.push(c);
    largest = Math.max(largest, c.length);
  }
  return { bytes: Buffer.concat(parts), chunks: parts.length, largest };
}

async function listed(b: BlobBackend): Promise<Map<string, number | null>> {
  const out = new Map<string, number | null>();
  for await (const f of b.list()) out.set(f.digest, f.size);
  return out;
}

/** Temp files of writes left in the backend's working directory, once any deletion in flight had 2 s to land. */
async function tmpLeftovers(b: BlobBackend): Promise<string[]> {
  const look = async (): Promise<string[]> => (await fsp.readdir(b.tmpDir).catch(() => [] as string[])).filter((n) => n.endsWith('.part'));
  for (let i = 0; i < 40 && (await look()).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
  return look();
}

export function backendContract(t: Test, u: BackendUnderTest): void {
  t.test(`${u.name}: it says what it is, and a new one holds nothing`, async (t) => {
    const b = await opened(t, u);
    t.equal(b.info().kind, u.name, 'info().kind is the name it is registered under');
    t.ok(b.info().location.length > 0, 'and where it keeps things');
    const a = blobOf(randomBytes(100));
    t.same([...(await listed(b))], [], 'the listing is empty');
    t.equal(await b.stat(a.d), null, 'stat of absent content: null');
    t.equal(await b.probe(a.d), null, 'probe of absent content: null');
    t.equal(await b.readSmall(a.d), null, 'readSmall of absent content: null');
    t.equal(await b.read(a.d, 100, () => undefined), null, 'read of absent content: null');
    t.equal(await b.readSnapshot(), null, 'no snapshot yet');
  });

  t.test(`${u.name}: a blob written under its digest is stored, listed, and read back byte for byte`, async (t) => {
    const b = await opened(t, u);
    const a = blobOf(randomBytes(3000));
    t.same(await write(b, a.data, a.d), { digest: a.d.value, size: 3000 }, 'committed is told the digest and size');
    t.equal((await b.stat(a.d))?.size, 3000, 'stat gives its size');
    t.equal((await b.probe(a.d))?.size, 3000, 'probe too');
    t.same(await b.readSmall(a.d), a.data, 'readSmall gives its bytes');
    t.same([...(await listed(b))], [[a.d.value, 3000]], 'the listing has it, with its size');
    t.same(await tmpLeftovers(b), [], 'no temp file left once committed');
  });

  t.test(`${u.name}: content by tag (digest unknown beforehand) is stored under the digest of its bytes`, async (t) => {
    const b = await opened(t, u);
    const a = blobOf(Buffer.from('{"schemaVersion":2}'));
    t.same(await write(b, a.data, null), { digest: a.d.value, size: a.data.length });
    t.same(await b.readSmall(a.d), a.data);
  });

  t.test(`${u.name}: reads stream whole blobs and inclusive ranges, in chunks smaller than the blob`, async (t) => {
    const b = await opened(t, u);
    const a = blobOf(randomBytes(6 * MiB + 123));
    await write(b, a.data, a.d);
    let done = 0;
    const body = await b.read(a.d, a.data.length, () => done++);
    t.ok(body, 'opened');
    t.equal(body!.size, a.data.length);
    const whole = await readAll(body!.open());
    t.same(whole.bytes, a.data, 'the whole blob');
    t.ok(whole.chunks > 1 && whole.largest < a.data.length, `streamed in ${whole.chunks} chunks of at most ${whole.largest} bytes, never the whole blob at once`);
    await new Promise((r) => setImmediate(r));
    t.equal(done, 1, 'the read is reported done once the stream closed');

    const ranged = await b.read(a.d, a.data.length, () => undefined);
    t.same((await readAll(ranged!.open({ start: 1000, end: 2 * MiB }))).bytes, a.data.subarray(1000, 2 * MiB + 1), 'bytes [start, end], both inclusive');
    const last = await b.read(a.d, a.data.length, () => undefined);
    t.same((await readAll(last!.open({ start: a.data.length - 1, end: a.data.length - 1 }))).bytes, a.data.subarray(a.data.length - 1), 'the last byte alone');
  });

  t.test(`${u.name}: sendTo writes the blob or a range to a destination and ends it`, async (t) => {
    const b = await opened(t, u);
    const a = blobOf(randomBytes(MiB + 7));
    await write(b, a.data, a.d);
    let done = 0;
    const whole = collector();
    const body = await b.read(a.d, a.data.length, () => done++);
    await body!.sendTo(whole.dest);
    t.same(await whole.done, a.data, 'the whole blob');
    t.equal(done, 1, 'reported done once');
    const part = collector();
    const ranged = await b.read(a.d, a.data.length, () => undefined);
    await ranged!.sendTo(part.dest, { start: 10, end: 20 });
    t.same(await part.done, a.data.subarray(10, 21), 'bytes 10 to 20');
  });

  t.test(`${u.name}: a read opened and closed unused is reported done`, async (t) => {
    const b = await opened(t, u);
    const a = blobOf(randomBytes(500));
    await write(b, a.data, a.d);
    let done = 0;
    const body = await b.read(a.d, 500, () => done++);
    await body!.release();
    t.equal(done, 1);
  });

  t.test(`${u.name}: bytes that do not hash to the expected digest are refused (DigestMismatchError), and nothing is stored`, async (t) => {
    const b = await opened(t, u);
    const a = blobOf(randomBytes(2 * MiB));
    const wrong = Buffer.from(a.data);
    wrong[12345] = wrong[12345]! ^ 0xff;
    const w = b.createWriter(a.d, {}, () => t.fail('committed must not be called'));
    await feed(w, wrong);
    await t.rejects(w.commit(a.data.length), DigestMismatchError);
    t.equal(await b.stat(a.d), null, 'not stored');
    t.same([...(await listed(b))], [], 'not listed');
    t.same(await tmpLeftovers(b), [], 'its temp file is gone');
  });

  t.test(`${u.name}: a size other than the one declared, or past the writer's limit, is refused (SizeInvalidError)`, async (t) => {
    const b = await opened(t, u);
    const a = blobOf(randomBytes(1000));
    await t.rejects(write(b, a.data, a.d, { size: 999 }), SizeInvalidError, 'declared 999, got 1000');
    t.equal(await b.stat(a.d), null, 'not stored');
    const w = b.createWriter(a.d, { maxSize: 500 }, () => t.fail('committed must not be called'));
    const failed = new Promise<unknown>((resolve) => w.once('error', resolve));
    w.end(a.data);
    t.ok((await failed) instanceof SizeInvalidError, 'writing past maxSize fails the writer');
    await w.abort(new Error('given up')).catch(() => undefined);
    t.equal(await b.stat(a.d), null, 'not stored');
  });

  t.test(`${u.name}: two writers of the same digest committing at once both succeed, and it is stored once`, async (t) => {
    const b = await opened(t, u);
    const a = blobOf(randomBytes(3 * MiB));
    const results = await Promise.all([write(b, a.data, a.d), write(b, a.data, a.d)]);
    t.same(results, [{ digest: a.d.value, size: a.data.length }, { digest: a.d.value, size: a.data.length }]);
    t.same([...(await listed(b))], [[a.d.value, a.data.length]], 'one entry');
    const body = await b.read(a.d, a.data.length, () => undefined);
    t.same((await readAll(body!.open())).bytes, a.data, 'its bytes');
  });

  t.test(`${u.name}: remove and evict delete the bytes; removing absent content is no error`, async (t) => {
    const b = await opened(t, u);
    const [x, y] = [blobOf(randomBytes(100)), blobOf(randomBytes(200))];
    await write(b, x.data, x.d);
    await write(b, y.data, y.d);
    await b.remove(x.d);
    t.equal(await b.stat(x.d), null, 'removed');
    await b.remove(x.d);
    t.pass('removed again: no error');
    b.evict(y.d);
    await b.evictionsSettled();
    t.equal(await b.stat(y.d), null, 'evicted');
    t.same([...(await listed(b))], [], 'neither is listed');
    await write(b, y.data, y.d);
    t.equal((await b.stat(y.d))?.size, 200, 'written again after its eviction: stored');
  });

  t.test(`${u.name}: a listing given what the caller knows skips looking at those`, async (t) => {
    const b = await opened(t, u);
    const [x, y] = [blobOf(randomBytes(100)), blobOf(randomBytes(200))];
    await write(b, x.data, x.d);
    await write(b, y.data, y.d);
    const out = new Map<string, number | null>();
    for await (const f of b.list((d) => d === x.d.value)) out.set(f.digest, f.size);
    t.equal(out.size, 2, 'both listed');
    t.equal(out.get(y.d.value), 200, 'the unknown one with its size');
    t.ok(out.get(x.d.value) === null || out.get(x.d.value) === 100, 'the known one with its size or none');
  });

  t.test(`${u.name}: a verified local file is imported as content, and the file is gone`, async (t) => {
    const b = await opened(t, u);
    const a = blobOf(randomBytes(MiB));
    const file = path.join(b.tmpDir, 'import-test');
    await fsp.writeFile(file, a.data);
    await b.importFile(file, a.d, a.data.length);
    t.same(await b.readSmall(a.d), a.data);
    t.equal(await fsp.stat(file).catch(() => null), null, 'the file was moved or deleted');
  });

  t.test(`${u.name}: records are written whole, read, listed one level at a time, and removed`, async (t) => {
    const b = await opened(t, u);
    const r = b.records;
    t.equal(await r.read('repositories/docker.io/library/alpine/_tags/latest'), null, 'absent: null');
    t.equal(await r.exists('repositories/docker.io/library/alpine/_tags/latest'), false);
    t.equal(await r.remove('repositories/docker.io/library/alpine/_tags/latest'), false, 'removing an absent record says so');
    t.same(await r.list('repositories/nowhere'), [], 'listing an absent "directory": empty');
    await r.write('repositories/docker.io/library/alpine/_tags/latest', '{"digest":"a"}');
    await r.write('repositories/docker.io/library/alpine/_tags/latest', Buffer.from('{"digest":"b"}'));
    await r.write('repositories/docker.io/library/alpine/_tags/3.20', '{"digest":"c"}');
    await r.write('repositories/docker.io/library/busybox/_tags/1', '{"digest":"d"}');
    await r.write('pins/sha256/abc', '');
    t.same(await r.read('repositories/docker.io/library/alpine/_tags/latest'), Buffer.from('{"digest":"b"}'), 'the last write, whole');
    t.equal(await r.exists('pins/sha256/abc'), true, 'an empty record exists');
    t.same(await r.read('pins/sha256/abc'), Buffer.alloc(0));
    t.same((await r.list('repositories/docker.io/library/alpine/_tags')).sort(), ['3.20', 'latest']);
    t.same((await r.list('repositories/docker.io/library')).sort(), ['alpine', 'busybox'], 'directories are listed by name');
    t.equal(await r.remove('repositories/docker.io/library/alpine/_tags/latest'), true, 'removing says it existed');
    t.equal(await r.read('repositories/docker.io/library/alpine/_tags/latest'), null);
    t.same(await r.list('repositories/docker.io/library/alpine/_tags'), ['3.20']);
  });

  t.test(`${u.name}: a push session is created, appended to chunk by chunk, read back, published and removed`, async (t) => {
    const b = await opened(t, u);
    const s = b.sessions;
    await s.init();
    const uuid = '0a1b2c3d-0000-4000-8000-000000000001';
    t.equal(await s.read(uuid), null, 'unknown session: null');
    const doc = { namespace: 'docker.io', name: 'library/app', startedAt: 1000, owner: 'alice' };
    await s.create(uuid, doc, 1000);
    t.same(await s.read(uuid), { doc, size: 0 }, 'created empty, with its info');
    const a = blobOf(randomBytes(3 * MiB + 11));
    await s.append(uuid, 0, Readable.from([a.data.subarray(0, MiB)]));
    await s.append(uuid, MiB, Readable.from([a.data.subarray(MiB, 2 * MiB), a.data.subarray(2 * MiB)]));
    t.equal((await s.read(uuid))?.size, a.data.length, 'its size is what was appended');
    await s.touch(uuid, 5000);
    const entry = (await s.list()).find((e) => e.uuid === uuid);
    t.same(entry && { doc: entry.doc, bytes: entry.bytes }, { doc, bytes: a.data.length }, 'listed with its info and bytes');
    t.ok(entry && entry.lastActive >= 5000, 'and its last activity');
    const again: Buffer[] = [];
    for await (const c of s.bytes(uuid, a.data.length)) again.push(c);
    t.same(Buffer.concat(again), a.data, 'bytes() gives them back in order');
    const prefix: Buffer[] = [];
    for await (const c of s.bytes(uuid, 100)) prefix.push(c);
    t.same(Buffer.concat(prefix), a.data.subarray(0, 100), 'or the first n of them');
    await s.publish(uuid, a.data.length, a.d);
    t.equal((await b.stat(a.d))?.size, a.data.length, 'published: stored under its digest');
    const body = await b.read(a.d, a.data.length, () => undefined);
    t.same((await readAll(body!.open())).bytes, a.data, 'byte for byte');
    await s.remove(uuid);
    t.equal(await s.read(uuid), null, 'removed');
    t.notOk((await s.list()).some((e) => e.uuid === uuid), 'and no longer listed');
  });

  t.test(`${u.name}: a chunk that breaks off leaves the session as it was`, async (t) => {
    const b = await opened(t, u);
    const s = b.sessions;
    await s.init();
    const uuid = '0a1b2c3d-0000-4000-8000-000000000002';
    await s.create(uuid, { namespace: 'docker.io', name: 'library/app', startedAt: 1, owner: 'anonymous' }, 1);
    await s.append(uuid, 0, Readable.from([Buffer.alloc(1000, 1)]));
    const breaking = new Readable({ read() {} });
    breaking.push(Buffer.alloc(5000, 2));
    setImmediate(() => breaking.destroy(new Error('the client went away')));
    await t.rejects(s.append(uuid, 1000, breaking), /went away/);
    t.equal((await s.read(uuid))?.size, 1000, 'still 1000 bytes');
    await s.append(uuid, 1000, Readable.from([Buffer.alloc(10, 3)]));
    const all: Buffer[] = [];
    for await (const c of s.bytes(uuid, 1010)) all.push(c);
    t.same(Buffer.concat(all), Buffer.concat([Buffer.alloc(1000, 1), Buffer.alloc(10, 3)]), 'the next chunk continues at 1000');
  });

  t.test(`${u.name}: the index snapshot is kept as written`, async (t) => {
    const b = await opened(t, u);
    await b.writeSnapshot(['stevedore-index 1\nsha256:ab 10 20\n', 'sha256:cd 30 40\n']);
    t.equal((await b.readSnapshot())?.toString('latin1'), 'stevedore-index 1\nsha256:ab 10 20\nsha256:cd 30 40\n', 'its chunks, in order');
    await b.writeSnapshot(['stevedore-index 1\n']);
    t.equal((await b.readSnapshot())?.toString('latin1'), 'stevedore-index 1\n', 'replaced whole');
  });

  t.test(`${u.name}: its store id is stable`, async (t) => {
    const b = await opened(t, u);
    const id = await b.storeId();
    t.match(id, /^[0-9a-f]{32}$/);
    t.equal(await b.storeId(), id);
  });
}
