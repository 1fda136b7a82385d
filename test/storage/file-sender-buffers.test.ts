// The sender's buffers: taken per chunk, sized to the read, back in the pool once flushed. A file of
// its own, so the pool starts empty.
import { createHash, randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { promises as fsp } from 'node:fs';
import t from 'tap';
import { collector, fileWith, growingFile } from '../fixtures/byte-sink.js';
import { sendFileRange } from '../../lib/storage/file-sender.js';
import { SEND_BUDGET, SEND_CHUNK, SEND_CHUNK_SMALL, sendBufferStats, setSendBufferIdleTrim } from '../../lib/storage/send-buffers.js';

t.test('a follower waiting at the edge of a download holds no buffer, and a small read takes a small one', async (t) => {
  const g = await growingFile(t);
  const { dest, done } = collector();
  // What the destination was handed, chunk by chunk.
  const sizes: number[] = [];
  dest.on('data', (c: Buffer) => sizes.push(c.length));
  let waited = g.nextWait();
  const sending = sendFileRange(g.fh, dest, 0, Infinity, g.follow);
  await waited;
  t.equal(sendBufferStats().inUse, 0, 'nothing held before the first byte');
  const part = randomBytes(10_000);
  waited = g.nextWait();
  await g.append(part);
  await waited;
  await new Promise((r) => setImmediate(r));
  t.equal(sendBufferStats().inUse, 0, 'nothing held while waiting for more');
  t.same(sendBufferStats(), { inUse: 0, pooled: 64 * 1024 }, 'the 10,000-byte read took one 64 KiB buffer, now back in the pool');
  g.finish();
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

t.test('buffers only a past peak needed are released while fewer transfers keep coming', async (t) => {
  const data = randomBytes(3 * SEND_CHUNK + 1);
  const fh = await fsp.open(await fileWith(t, data), 'r');
  t.teardown(() => fh.close());
  setSendBufferIdleTrim(60);
  t.teardown(() => setSendBufferIdleTrim(10_000));
  const send = async (): Promise<void> => {
    const { dest, done } = collector();
    await sendFileRange(fh, dest, 0, data.length - 1);
    t.ok((await done).equals(data));
  };
  await Promise.all(Array.from({ length: 12 }, send));
  const afterPeak = sendBufferStats().pooled;
  t.ok(afterPeak >= 8 * SEND_CHUNK, `12 transfers at once left their buffers pooled (${afterPeak} bytes)`);
  // One transfer at a time for ~6 trim periods: the load never again needs more than one's buffers.
  const until = performance.now() + 360;
  while (performance.now() < until) {
    await send();
    await new Promise((r) => setTimeout(r, 5));
  }
  const pooled = sendBufferStats().pooled;
  t.ok(pooled <= 2 * SEND_CHUNK, `what one transfer uses is kept, the rest released (${pooled} bytes pooled)`);
  t.ok(pooled > 0, 'the buffers the load still uses stay pooled');
});

t.test('100 transfers at once hold no more than the send budget in buffers, in use and pooled, plus two small ones per transfer past it', async (t) => {
  const data = randomBytes(4 * SEND_CHUNK);
  const want = createHash('sha256').update(data).digest('hex');
  const fh = await fsp.open(await fileWith(t, data), 'r');
  t.teardown(() => fh.close());
  let peak = 0;
  const sample = (): void => {
    const s = sendBufferStats();
    peak = Math.max(peak, s.inUse + s.pooled);
  };
  const hashes = await Promise.all(
    Array.from({ length: 100 }, async () => {
      const hash = createHash('sha256');
      // A slow client: each chunk is flushed a moment later, so the transfers overlap.
      const dest = new Writable({
        write(chunk: Buffer, _enc, cb) {
          hash.update(chunk);
          sample();
          setTimeout(cb, 2);
        },
      });
      await sendFileRange(fh, dest, 0, data.length - 1);
      return hash.digest('hex');
    }),
  );
  t.ok(hashes.every((h) => h === want), 'every client got the bytes');
  t.ok(peak > 0, 'buffers were used');
  // Buffers of 128 KiB and more stay within the budget; past it a transfer takes 64 KiB ones while
  // the larger ones of those that began early drain (here: the first chunks of the transfers that
  // started first are still being written when every transfer reads its second). So the bound is
  // the budget plus two small buffers per transfer — not the 58 MiB that sizing each transfer once
  // at its start reached here with a budget of 32.
  const bound = SEND_BUDGET + 100 * 2 * SEND_CHUNK_SMALL;
  t.ok(peak <= bound, `at most ${(bound / 2 ** 20).toFixed(1)} MiB of send buffers (peak ${(peak / 2 ** 20).toFixed(1)} MiB)`);
});
