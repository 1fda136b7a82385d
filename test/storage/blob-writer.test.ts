// A blob on its way into the store, and the clients following it: bytes exactly as written, the
// last one held back until the digest verifies, and the latest chunks shared from memory.
import { randomBytes } from 'node:crypto';
import fs, { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { collector } from '../fixtures/byte-sink.js';
import { digestOf } from '../../lib/oci/digest.js';
import { BlobWriter } from '../../lib/storage/blob-writer.js';

async function writerFor(tt: { teardown(fn: () => unknown): void }, data: Buffer, keepRecent: number): Promise<BlobWriter> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'stevedore-writer-'));
  tt.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return new BlobWriter({ tmpPath: path.join(dir, 'blob.part'), expected: digestOf(data), resolveFinal: () => path.join(dir, 'blob'), keepRecent });
}

/** BlobWriter with a file system that creates temp files 50 ms late, as on a busy disk. */
async function slowCreatingWriter(t: Test): Promise<typeof BlobWriter> {
  const slowFs = {
    ...fs,
    promises: {
      ...fs.promises,
      open: async (file: string, flags: string, mode?: number) => {
        if (flags === 'wx') await new Promise((r) => setTimeout(r, 50));
        return fs.promises.open(file, flags, mode);
      },
    },
  };
  const mod = await t.mockImport<typeof import('../../lib/storage/blob-writer.js')>('../../lib/storage/blob-writer.js', { 'node:fs': slowFs });
  return mod.BlobWriter;
}

function write(w: BlobWriter, chunk: Buffer): Promise<void> {
  return new Promise<void>((resolve, reject) => w.write(chunk, (err) => (err ? reject(err) : resolve())));
}

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

t.test('a follower gets every byte as written, the last one only once the digest verified', async (t) => {
  const data = randomBytes(300_000);
  const w = await writerFor(t, data, 64 * 1024);
  const { dest, received, done } = collector();
  const sending = w.sendTo(dest);
  for (let off = 0; off < data.length; off += 50_000) await write(w, data.subarray(off, off + 50_000));
  await tick();
  t.ok(received().equals(data.subarray(0, data.length - 1)), 'everything but the last byte before commit');
  await w.commit(data.length);
  await sending;
  t.ok((await done).equals(data), 'the whole blob after commit');
});

t.test('a follower keeping up is sent the latest chunks from memory, not read back from the file', async (t) => {
  const data = randomBytes(100_000);
  const w = await writerFor(t, data, 1024 * 1024);
  await write(w, data.subarray(0, 60_000));
  // Spoil the temp file behind the writer's back: only bytes from memory can still be right.
  await fsp.writeFile(w.tmpPath, Buffer.alloc(60_000));
  const { dest, received } = collector();
  const sending = w.sendTo(dest);
  await tick();
  t.ok(received().equals(data.subarray(0, 60_000 - 1)), 'the bytes came from memory');
  dest.destroy();
  await t.rejects(sending);
});

t.test('without keepRecent a follower reads the file (the test above would see the spoiled bytes)', async (t) => {
  const data = randomBytes(100_000);
  const w = await writerFor(t, data, 0);
  await write(w, data.subarray(0, 60_000));
  await fsp.writeFile(w.tmpPath, Buffer.alloc(60_000));
  const { dest, received } = collector();
  const sending = w.sendTo(dest);
  await tick();
  t.ok(received().equals(Buffer.alloc(60_000 - 1)), 'the bytes came from the file');
  dest.destroy();
  await t.rejects(sending);
});

t.test('a follower behind the chunks kept in memory reads the file, then catches up', async (t) => {
  const data = randomBytes(1024 * 1024 + 3);
  const w = await writerFor(t, data, 64 * 1024);
  for (let off = 0; off < data.length; off += 16 * 1024) await write(w, data.subarray(off, off + 16 * 1024));
  t.same(w.recentRange(0, w.written, 1 << 20), [], 'the start is no longer in memory');
  const { dest, done } = collector();
  const sending = w.sendTo(dest);
  await w.commit(data.length);
  await sending;
  t.ok((await done).equals(data));
});

t.test('recentRange: views that start at pos, cross chunk boundaries and stop at limit and max', async (t) => {
  const data = randomBytes(40);
  const w = await writerFor(t, data, 1024);
  await write(w, data.subarray(0, 10));
  await write(w, data.subarray(10, 25));
  await write(w, data.subarray(25, 40));
  const bytes = (pos: number, limit: number, max: number): Buffer => Buffer.concat(w.recentRange(pos, limit, max));
  t.ok(bytes(5, 40, 100).equals(data.subarray(5, 40)), 'across every chunk');
  t.ok(bytes(5, 30, 100).equals(data.subarray(5, 30)), 'stops at limit');
  t.ok(bytes(12, 40, 8).equals(data.subarray(12, 20)), 'stops after max bytes');
  t.ok(bytes(25, 26, 100).equals(data.subarray(25, 26)), 'one byte at a chunk start');
  t.same(w.recentRange(40, 41, 100), [], 'nothing past what was written');
  t.same(w.recentRange(7, 7, 100), [], 'nothing for an empty range');
});

t.test('the chunks kept in memory stay within keepRecent (plus the latest chunk) and go at commit', async (t) => {
  const data = randomBytes(10 * 1000);
  const w = await writerFor(t, data, 2500);
  for (let off = 0; off < data.length; off += 1000) await write(w, data.subarray(off, off + 1000));
  t.same(w.recentRange(0, 10_000, 1 << 20), [], 'the start is gone');
  t.ok(Buffer.concat(w.recentRange(7000, 10_000, 1 << 20)).equals(data.subarray(7000)), 'the last 3 chunks are kept');
  t.same(w.recentRange(6999, 10_000, 1 << 20), [], 'the fourth from last is not');
  await w.commit(data.length);
  t.same(w.recentRange(7000, 10_000, 1 << 20), [], 'nothing kept once committed');
});

t.test('a blob that fails verification fails its followers and keeps nothing in memory', async (t) => {
  const data = randomBytes(5000);
  const w = await writerFor(t, data, 1024 * 1024);
  const { dest } = collector();
  // Handled from the start: the follower fails while the commit is still removing the temp file.
  const followerFailed = t.rejects(w.sendTo(dest));
  const wrong = Buffer.from(data);
  wrong[0] = wrong[0]! ^ 0xff;
  await write(w, wrong);
  await t.rejects(w.commit(data.length), { name: 'DigestMismatchError' });
  await followerFailed;
  t.same(w.recentRange(0, 5000, 1 << 20), []);
});

t.test('a follower that comes before the temp file exists waits for it and gets every byte', async (t) => {
  const SlowWriter = await slowCreatingWriter(t);
  const data = randomBytes(70_000);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'stevedore-writer-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const w = new SlowWriter({ tmpPath: path.join(dir, 'blob.part'), expected: digestOf(data), resolveFinal: () => path.join(dir, 'blob') });
  const { dest, done } = collector();
  const sending = w.sendTo(dest);
  await write(w, data);
  await w.commit(data.length);
  await sending;
  t.ok((await done).equals(data));
});

t.test('a writer aborted before its temp file exists leaves no temp file behind', async (t) => {
  const SlowWriter = await slowCreatingWriter(t);
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'stevedore-writer-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const w = new SlowWriter({ tmpPath: path.join(dir, 'blob.part'), expected: digestOf(Buffer.from('x')), resolveFinal: () => path.join(dir, 'blob') });
  // At once, as when the upstream answers an error before the file was created.
  await w.abort(new Error('upstream answered 500'));
  await new Promise((r) => setTimeout(r, 100));
  t.same(await fsp.readdir(dir), [], 'nothing in the directory');
});

// Cluster takeover: a replica resumes the shared temp file another one left.
async function resumingWriter(t: Test, data: Buffer, prefix: Buffer): Promise<{ w: BlobWriter; final: string }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'stevedore-resume-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const tmpPath = path.join(dir, 'shared', 'blob.part');
  await fsp.mkdir(path.dirname(tmpPath), { recursive: true });
  await fsp.writeFile(tmpPath, prefix);
  const final = path.join(dir, 'blob');
  return { w: new BlobWriter({ tmpPath, expected: digestOf(data), resolveFinal: () => final, resume: true }), final };
}

t.test('resuming a temp file re-hashes its bytes and continues after them', async (t) => {
  const data = randomBytes(3 * 1024 * 1024 + 5);
  const cut = 1024 * 1024 + 7;
  const { w, final } = await resumingWriter(t, data, data.subarray(0, cut));
  t.equal(await w.resumedFrom, cut, 'it starts where the file ends');
  w.end(data.subarray(cut));
  const res = await w.commit(data.length);
  t.equal(res.digest, digestOf(data).value);
  t.ok((await fsp.readFile(final)).equals(data), 'the stored file is the whole blob');
});

t.test('a resumed temp file whose bytes are wrong never verifies: nothing is stored', async (t) => {
  const data = randomBytes(2 * 1024 * 1024);
  const cut = 512 * 1024;
  const bad = Buffer.from(data.subarray(0, cut));
  bad[100] = bad[100]! ^ 0xff;
  const { w, final } = await resumingWriter(t, data, bad);
  t.equal(await w.resumedFrom, cut);
  w.end(data.subarray(cut));
  await t.rejects(w.commit(data.length), { name: 'DigestMismatchError' });
  t.equal(fs.existsSync(final), false, 'not stored');
  t.equal(fs.existsSync(w.tmpPath), false, 'and the bad temp file is gone');
});

t.test('a writer that lost its lease leaves the shared temp file for its successor', async (t) => {
  const data = randomBytes(1024 * 1024);
  const { w } = await resumingWriter(t, data, data.subarray(0, 1000));
  await w.resumedFrom;
  w.keepFileOnAbort = true;
  await w.abort(new Error('lease lost'));
  t.equal((await fsp.stat(w.tmpPath)).size, 1000, 'the bytes are still there for the replica that took over');
});
