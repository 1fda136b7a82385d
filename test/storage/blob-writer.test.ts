// A blob on its way into the store, and the clients following it.
import { randomBytes } from 'node:crypto';
import fs, { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import t from 'tap';
import { digestOf } from '../../lib/oci/digest.js';
import { BlobWriter } from '../../lib/storage/blob-writer.js';

function write(w: BlobWriter, chunk: Buffer): Promise<void> {
  return new Promise<void>((resolve, reject) => w.write(chunk, (err) => (err ? reject(err) : resolve())));
}

/** A destination that records what it was sent, and how much at any moment. */
function collector(): { dest: PassThrough; received: () => Buffer; done: Promise<Buffer> } {
  const dest = new PassThrough();
  const chunks: Buffer[] = [];
  dest.on('data', (c: Buffer) => chunks.push(Buffer.from(c)));
  const done = new Promise<Buffer>((resolve) => dest.on('end', () => resolve(Buffer.concat(chunks))));
  return { dest, received: () => Buffer.concat(chunks), done };
}

t.test('a follower that comes before the temp file exists waits for it and gets every byte', async (t) => {
  // The temp file is created 50 ms late, as on a busy disk.
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
  const { BlobWriter: SlowWriter } = await t.mockImport<typeof import('../../lib/storage/blob-writer.js')>('../../lib/storage/blob-writer.js', { 'node:fs': slowFs });
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
