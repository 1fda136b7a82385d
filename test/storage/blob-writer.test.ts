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
import { RECENT_SLAB } from '../../lib/storage/recent-bytes.js';
import { sendBufferStats } from '../../lib/storage/send-buffers.js';

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
  t.equal(w.recentRange(0, w.written, 1 << 20), null, 'the start is no longer in memory');
  const { dest, done } = collector();
  const sending = w.sendTo(dest);
  await w.commit(data.length);
  await sending;
  t.ok((await done).equals(data));
});

t.test('recentRange: views that start at pos, cross write and slab boundaries and stop at limit and max', async (t) => {
  const data = randomBytes(RECENT_SLAB + 40);
  const w = await writerFor(t, data, 4 * RECENT_SLAB);
  await write(w, data.subarray(0, 10));
  await write(w, data.subarray(10, RECENT_SLAB + 5));
  await write(w, data.subarray(RECENT_SLAB + 5));
  const bytes = (pos: number, limit: number, max: number): Buffer => {
    const lease = w.recentRange(pos, limit, max)!;
    lease.release();
    return Buffer.concat(lease.views);
  };
  const end = data.length;
  t.ok(bytes(5, end, end).equals(data.subarray(5)), 'across every write and both slabs');
  const both = w.recentRange(5, end, end)!;
  t.equal(both.views.length, 2, 'one view per slab');
  both.release();
  t.ok(bytes(5, 30, 100).equals(data.subarray(5, 30)), 'stops at limit');
  t.ok(bytes(12, end, 8).equals(data.subarray(12, 20)), 'stops after max bytes');
  t.ok(bytes(RECENT_SLAB, RECENT_SLAB + 1, 100).equals(data.subarray(RECENT_SLAB, RECENT_SLAB + 1)), 'one byte at a slab start');
  t.equal(w.recentRange(end, end + 1, 100), null, 'nothing past what was written');
  t.equal(w.recentRange(7, 7, 100), null, 'nothing for an empty range');
});

t.test('the bytes kept in memory are at least keepRecent, less than a slab more, and go at commit', async (t) => {
  const keep = RECENT_SLAB + 1000;
  const data = randomBytes(5 * RECENT_SLAB + 3000);
  const w = await writerFor(t, data, keep);
  for (let off = 0; off < data.length; off += 50_000) await write(w, data.subarray(off, off + 50_000));
  const end = data.length;
  const kept = w.recentRange(end - keep, end, end);
  t.ok(kept && Buffer.concat(kept.views).equals(data.subarray(end - keep)), 'the last keepRecent bytes are kept');
  kept?.release();
  t.equal(w.recentRange(end - keep - RECENT_SLAB, end, end), null, 'a slab more before them is not');
  await w.commit(data.length);
  t.equal(w.recentRange(end - 1, end, end), null, 'nothing kept once committed');
});

t.test('followers keeping up with a whole download get every byte and leave no slab held', async (t) => {
  const data = randomBytes(3 * 1024 * 1024 + 5);
  // The pool is the process's: earlier tests' writers, never committed, still hold their windows.
  const before = sendBufferStats().inUse;
  const w = await writerFor(t, data, 1024 * 1024);
  const followers = [collector(), collector(), collector()];
  const sending = followers.map((f) => w.sendTo(f.dest));
  for (let off = 0; off < data.length; off += 64 * 1024) {
    await write(w, data.subarray(off, off + 64 * 1024));
    await tick();
  }
  await w.commit(data.length);
  await Promise.all(sending);
  for (const f of followers) t.ok((await f.done).equals(data), 'every byte, in order');
  t.equal(sendBufferStats().inUse, before, 'every lease released, every slab back');
  t.ok(sendBufferStats().pooled > 0, 'the slabs are pooled for reuse');
});

t.test('a follower cut mid-download leaves no slab counted in use once the download ends', async (t) => {
  const data = randomBytes(2 * 1024 * 1024);
  const before = sendBufferStats().inUse;
  const w = await writerFor(t, data, 1024 * 1024);
  const { dest } = collector();
  const failed = t.rejects(w.sendTo(dest));
  for (let off = 0; off < data.length; off += 64 * 1024) {
    await write(w, data.subarray(off, off + 64 * 1024));
    if (off === 512 * 1024) dest.destroy();
    await tick();
  }
  await failed;
  await w.commit(data.length);
  t.equal(sendBufferStats().inUse, before, 'the window and the cut follower hold nothing');
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
  t.equal(w.recentRange(0, 5000, 1 << 20), null);
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
