// The pooled-buffer sender: exact ranges, following a growing file, stopping when the
// destination closes.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { PassThrough, Writable } from 'node:stream';
import t from 'tap';
import { collector, fileWith, growingFile } from '../fixtures/byte-sink.js';
import { SEND_CHUNK, sendFileRange } from '../../lib/storage/file-sender.js';

t.test('sends exactly the bytes of a range, across many chunks', async (t) => {
  const data = randomBytes(3 * SEND_CHUNK + 12345);
  const fh = await fsp.open(await fileWith(t, data), 'r');
  t.teardown(() => fh.close());
  for (const [start, end] of [
    [0, data.length - 1],
    [1, SEND_CHUNK],
    [SEND_CHUNK - 1, 2 * SEND_CHUNK + 5],
    [data.length - 1, data.length - 1],
  ] as const) {
    const { dest, done } = collector();
    await sendFileRange(fh, dest, start, end);
    t.ok((await done).equals(data.subarray(start, end + 1)), `bytes ${start}-${end}`);
  }
});

t.test('follows a file as it grows and stops when it is complete', async (t) => {
  const data = randomBytes(2 * SEND_CHUNK + 7);
  const g = await growingFile(t);
  const { dest, done } = collector();
  const sending = sendFileRange(g.fh, dest, 0, Infinity, g.follow);
  for (let off = 0; off < data.length; off += 100_000) {
    await g.append(data.subarray(off, off + 100_000));
    await new Promise((r) => setImmediate(r));
  }
  g.finish();
  await sending;
  t.ok((await done).equals(data));
});

t.test('a destination that closes midway stops the sender with an error', async (t) => {
  const data = randomBytes(4 * SEND_CHUNK);
  const fh = await fsp.open(await fileWith(t, data), 'r');
  t.teardown(() => fh.close());
  let got = 0;
  const dest = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _e, cb) {
      got += chunk.length;
      if (got > SEND_CHUNK) this.destroy();
      else setImmediate(cb);
    },
  });
  await t.rejects(sendFileRange(fh, dest, 0, data.length - 1));
  t.ok(got < data.length, 'not everything was sent');
});

t.test('a destination that closes while the sender waits for more of a growing file stops the sender at once', async (t) => {
  const fh = await fsp.open(await fileWith(t, randomBytes(1000)), 'r');
  t.teardown(() => fh.close());
  const dest = new PassThrough();
  dest.resume();
  const sending = sendFileRange(fh, dest, 0, Infinity, {
    available: () => 1000,
    complete: () => false,
    // More never comes.
    waitForMore: () => new Promise<void>(() => undefined),
  });
  await new Promise((r) => setTimeout(r, 20));
  dest.destroy();
  await t.rejects(sending, { code: 'ERR_STREAM_PREMATURE_CLOSE' });
});
