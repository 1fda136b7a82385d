// The sender's buffers: taken per chunk, sized to the read, back in the pool once flushed. A file of
// its own, so the pool starts empty.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import t from 'tap';
import { SEND_CHUNK, sendBufferStats, sendFileRange, setSendBufferIdleTrim } from '../../lib/storage/file-sender.js';

async function fileWith(tt: { teardown(fn: () => unknown): void }, data: Buffer): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'stevedore-send-'));
  tt.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const f = path.join(dir, 'f');
  await fsp.writeFile(f, data);
  return f;
}

function collector(): { dest: PassThrough; done: Promise<Buffer> } {
  const dest = new PassThrough();
  const chunks: Buffer[] = [];
  dest.on('data', (c: Buffer) => chunks.push(Buffer.from(c)));
  const done = new Promise<Buffer>((resolve) => dest.on('end', () => resolve(Buffer.concat(chunks))));
  return { dest, done };
}

t.test('a follower waiting at the edge of a download holds no buffer, and a small read takes a small one', async (t) => {
  const file = await fileWith(t, Buffer.alloc(0));
  const w = await fsp.open(file, 'r+');
  t.teardown(() => w.close());
  const fh = await fsp.open(file, 'r');
  t.teardown(() => fh.close());
  let written = 0;
  let complete = false;
  let wake: (() => void) | null = null;
  let waiting: (() => void) | null = null;
  const { dest, done } = collector();
  // Counts what the destination was handed, so the test knows when a write was flushed.
  const sizes: number[] = [];
  dest.on('data', (c: Buffer) => sizes.push(c.length));
  const nextWait = (): Promise<void> => new Promise<void>((r) => (waiting = r));
  let waited = nextWait();
  const sending = sendFileRange(fh, dest, 0, Infinity, {
    available: () => written,
    complete: () => complete,
    waitForMore: () =>
      new Promise<void>((r) => {
        wake = r;
        waiting?.();
      }),
  });
  const part = randomBytes(10_000);
  await waited;
  t.equal(sendBufferStats().inUse, 0, 'nothing held before the first byte');
  await w.write(part, 0, part.length, 0);
  written = part.length;
  waited = nextWait();
  (wake as (() => void) | null)?.();
  await waited;
  await new Promise((r) => setImmediate(r));
  t.equal(sendBufferStats().inUse, 0, 'nothing held while waiting for more');
  t.same(sendBufferStats(), { inUse: 0, pooled: 64 * 1024 }, 'the 10,000-byte read took one 64 KiB buffer, now back in the pool');
  complete = true;
  (wake as (() => void) | null)?.();
  await sending;
  t.ok((await done).equals(part));
  t.same(sizes, [part.length]);
});

t.test('after transfers finish every buffer is back in the pool', async (t) => {
  const data = randomBytes(3 * SEND_CHUNK + 1);
  const fh = await fsp.open(await fileWith(t, data), 'r');
  t.teardown(() => fh.close());
  await Promise.all(
    Array.from({ length: 20 }, async () => {
      const { dest, done } = collector();
      await sendFileRange(fh, dest, 0, data.length - 1);
      t.ok((await done).equals(data));
    }),
  );
  t.equal(sendBufferStats().inUse, 0, 'no buffer held');
  t.ok(sendBufferStats().pooled > 0, 'the buffers were kept for reuse');
});

t.test('pooled buffers nothing took for a while are released', async (t) => {
  const data = randomBytes(SEND_CHUNK + 1);
  const fh = await fsp.open(await fileWith(t, data), 'r');
  t.teardown(() => fh.close());
  setSendBufferIdleTrim(50);
  const send = async (): Promise<void> => {
    const { dest, done } = collector();
    await sendFileRange(fh, dest, 0, data.length - 1);
    await done;
  };
  await send();
  t.ok(sendBufferStats().pooled > 0, 'kept right after the transfer');
  // Busy: a transfer every 20 ms keeps the pool.
  for (let k = 0; k < 6; k++) {
    await new Promise((r) => setTimeout(r, 20));
    await send();
  }
  t.ok(sendBufferStats().pooled > 0, 'kept while transfers keep coming');
  await new Promise((r) => setTimeout(r, 200));
  t.same(sendBufferStats(), { inUse: 0, pooled: 0 }, 'released after sitting unused');
});
