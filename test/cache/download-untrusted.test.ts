// A download whose bytes come partly from a source trusted by digest only (a peer, node mode):
// followers see nothing before the blob verified; bytes that do not verify are fetched again from
// the trusted source; a failed peer hands over to the next source at the byte it reached; a size a
// peer announced gives way to a trusted source's.
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import { digestOf } from '../../lib/oci/digest.js';
import { BlobWriter } from '../../lib/storage/blob-writer.js';
import { Download } from '../../lib/cache/download.js';
import type { DownloadSource, OpenedBody } from '../../lib/upstream/blob-source.js';
import { collector } from '../fixtures/byte-sink.js';

const log = pino({ level: 'silent' });
const DATA = Buffer.alloc(300_000);
for (let i = 0; i < DATA.length; i++) DATA[i] = (i * 7919) % 251;
const DIGEST = digestOf(DATA);

async function writer(t: { teardown(fn: () => unknown): void }): Promise<BlobWriter> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'stevedore-dl-'));
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  return new BlobWriter({ tmpPath: path.join(dir, 'blob.part'), expected: DIGEST, resolveFinal: () => path.join(dir, 'blob') });
}

/** A body of `data` from `start`, cut after `cutAfter` bytes (an error) when given. */
function body(data: Buffer, start: number, cutAfter?: number): Readable {
  const part = data.subarray(start, cutAfter === undefined ? undefined : start + cutAfter);
  const chunks: Buffer[] = [];
  for (let i = 0; i < part.length; i += 16_384) chunks.push(part.subarray(i, i + 16_384));
  let i = 0;
  return new Readable({
    read() {
      if (i < chunks.length) this.push(chunks[i++]);
      else if (cutAfter !== undefined) this.destroy(Object.assign(new Error('peer went away'), { code: 'ECONNRESET' }));
      else this.push(null);
    },
  });
}

interface Step {
  peer: boolean;
  open(start: number): OpenedBody;
}

/** A scripted walk: each open() takes the next step; records what was asked. */
function scripted(steps: Step[]): DownloadSource & { opened: Array<{ peer: boolean; start: number }>; failures: number; distrusted: number } {
  let k = 0;
  let current: Step | null = null;
  const src = {
    opened: [] as Array<{ peer: boolean; start: number }>,
    failures: 0,
    distrusted: 0,
    async open(start: number): Promise<OpenedBody> {
      const step = steps[Math.min(k++, steps.length - 1)]!;
      current = step;
      src.opened.push({ peer: step.peer, start });
      return { ...step.open(start), ...(step.peer ? { untrusted: true } : {}) };
    },
    failed(): boolean {
      if (!current?.peer) return false;
      src.failures++;
      return true;
    },
    distrust(): void {
      src.distrusted++;
    },
  };
  return src;
}

const trusted: Step = { peer: false, open: (start) => ({ size: DATA.length, start, body: body(DATA, start) }) };

t.test('bytes from a peer that do not verify: followers get none of them, the blob is fetched again from the trusted source', async (t) => {
  const wrong = Buffer.from(DATA);
  wrong[1234] = wrong[1234]! ^ 0xff;
  const src = scripted([{ peer: true, open: (start) => ({ size: DATA.length, start, body: body(wrong, start) }) }, trusted]);
  const w = await writer(t);
  const dl = new Download(DIGEST.value, 'docker.io/x', w, src, log);
  const sink = collector();
  const following = dl.sendTo(sink.dest);
  const done = await dl.done;
  await following;
  t.equal(done.digest, DIGEST.value);
  t.same(sink.received(), DATA, 'the follower received exactly the right bytes');
  t.equal(src.distrusted, 1, 'the peers were distrusted once');
  t.same(src.opened, [{ peer: true, start: 0 }, { peer: false, start: 0 }], 'the trusted source was asked from byte 0');
});

t.test('while bytes from a peer are unverified, a follower has received nothing', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const src = scripted([
    {
      peer: true,
      open: (start) => {
        const b = body(DATA, start);
        const held = new Readable({ read() {} });
        // Everything but the end, then wait: the download is mid-transfer from the peer.
        (async () => {
          for await (const c of b as AsyncIterable<Buffer>) held.push(c);
          await gate;
          held.push(null);
        })().catch(() => undefined);
        return { size: DATA.length, start, body: held };
      },
    },
  ]);
  const w = await writer(t);
  const dl = new Download(DIGEST.value, 'docker.io/x', w, src, log);
  const sink = collector();
  const following = dl.sendTo(sink.dest);
  await new Promise((r) => setTimeout(r, 100));
  t.ok(w.written > 0, 'bytes are in the file');
  t.equal(sink.received().length, 0, 'the follower has none of them');
  release();
  await dl.done;
  await following;
  t.same(sink.received(), DATA);
});

t.test('a peer that breaks mid-body: the next source continues at the byte reached (Range), not from 0', async (t) => {
  const src = scripted([{ peer: true, open: (start) => ({ size: DATA.length, start, body: body(DATA, start, 100_000) }) }, trusted]);
  const w = await writer(t);
  const dl = new Download(DIGEST.value, 'docker.io/x', w, src, log);
  const sink = collector();
  const following = dl.sendTo(sink.dest);
  await dl.done;
  await following;
  t.same(sink.received(), DATA);
  t.equal(src.failures, 1, 'the failed peer was reported once');
  t.equal(src.opened[1]!.peer, false);
  t.ok(src.opened[1]!.start >= 98_304 && src.opened[1]!.start <= 100_000, `resumed at ${src.opened[1]!.start}`);
});

t.test('a size a peer announced gives way to the trusted source\'s', async (t) => {
  const src = scripted([
    { peer: true, open: (start) => ({ size: DATA.length + 500, start, body: body(DATA, start, 50_000) }) },
    trusted,
  ]);
  const w = await writer(t);
  const dl = new Download(DIGEST.value, 'docker.io/x', w, src, log);
  const done = await dl.done;
  t.equal(done.size, DATA.length);
  t.equal(dl.size, DATA.length);
});
