// The pooled-buffer sender: exact ranges, following a growing file, stopping when the
// destination closes.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { PassThrough, Writable } from 'node:stream';
import t from 'tap';
import { collector, fileWith, growingFile } from '../fixtures/byte-sink.js';
import { sendFileRange } from '../../lib/storage/file-sender.js';
import { SEND_CHUNK } from '../../lib/storage/send-buffers.js';

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

// The root cause of a crash under clients hanging up (issue 11): a promise the sender stopped
// waiting for when the client left later rejected with nobody listening. Node ends the process on
// an unhandled rejection; tap fails the test file the same way.

/** A destination that takes writes and fails them all (ECONNRESET) a moment after it closes. */
function resettingDestination(): Writable {
  const pending: Array<(err: Error) => void> = [];
  const dest = new Writable({
    highWaterMark: 1,
    write(_chunk: Buffer, _e, cb) {
      pending.push(cb);
    },
  });
  dest.once('close', () => {
    setTimeout(() => {
      for (const cb of pending.splice(0)) cb(Object.assign(new Error('write ECONNRESET'), { code: 'ECONNRESET' }));
    }, 5);
  });
  return dest;
}

t.test('writes that fail after the client closed reject nothing unobserved', async (t) => {
  const data = randomBytes(4 * SEND_CHUNK);
  const fh = await fsp.open(await fileWith(t, data), 'r');
  t.teardown(() => fh.close());
  const dest = resettingDestination();
  const sending = sendFileRange(fh, dest, 0, data.length - 1);
  await new Promise((r) => setTimeout(r, 20));
  dest.destroy();
  await t.rejects(sending, { code: 'ERR_STREAM_PREMATURE_CLOSE' });
  // The pending writes fail now, after the sender gave up on them.
  await new Promise((r) => setTimeout(r, 50));
  t.pass('the process is still here');
});

t.test('a wait for more that fails after the client closed rejects nothing unobserved', async (t) => {
  const fh = await fsp.open(await fileWith(t, randomBytes(1000)), 'r');
  t.teardown(() => fh.close());
  const dest = new PassThrough();
  dest.resume();
  let failDownload!: (err: Error) => void;
  const sending = sendFileRange(fh, dest, 0, Infinity, {
    available: () => 1000,
    complete: () => false,
    waitForMore: () => new Promise<void>((_resolve, reject) => (failDownload = reject)),
  });
  await new Promise((r) => setTimeout(r, 20));
  dest.destroy();
  await t.rejects(sending, { code: 'ERR_STREAM_PREMATURE_CLOSE' });
  // The download fails later (its digest did not match): the sender no longer listens.
  failDownload(new Error('content does not match'));
  await new Promise((r) => setTimeout(r, 20));
  t.pass('the process is still here');
});

t.test('a client that leaves while the last chunk is read rejects nothing unobserved', async (t) => {
  const data = randomBytes(SEND_CHUNK + 10);
  const real = await fsp.open(await fileWith(t, data), 'r');
  t.teardown(() => real.close());
  const dest = resettingDestination();
  let reads = 0;
  // The client hangs up while the sender reads its last chunk; the write already handed over fails later.
  const fh = {
    async read(buf: Buffer, off: number, len: number, pos: number) {
      if (++reads === 2) {
        dest.destroy();
        await new Promise((r) => setTimeout(r, 1));
      }
      return real.read(buf, off, len, pos);
    },
  } as unknown as fsp.FileHandle;
  await t.rejects(sendFileRange(fh, dest, 0, data.length - 1));
  await new Promise((r) => setTimeout(r, 50));
  t.pass('the process is still here');
});
