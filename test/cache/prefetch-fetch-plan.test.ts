// fetchPlan (cache/prefetch.ts), what `stevedore prefetch` and a node's pre-heat run: every blob of
// the plan is fetched through the answer's sendTo — the send pool's buffers, reused as soon as
// they are written — never through open(), whose reader allocates a buffer per chunk that only a
// garbage collection gives back (util/counting-sink.ts).
import { Writable } from 'node:stream';
import t from 'tap';
import { fetchPlan } from '../../lib/cache/prefetch.js';
import type { BlobAnswer, Target } from '../../lib/cache/pull-types.js';
import type { PullThrough } from '../../lib/cache/pull-through.js';
import type { Digest } from '../../lib/oci/digest.js';

const digest = (i: number): string => `sha256:${i.toString(16).padStart(64, '0')}`;

interface Fake {
  pull: PullThrough;
  opened: string[];
  released: string[];
}

/** A PullThrough whose blobs are `sizes` (hits where `hit` says so); sendTo writes 64 KiB chunks. */
function fakePull(sizes: number[], opts: { hit?: (i: number) => boolean; fail?: number } = {}): Fake {
  const opened: string[] = [];
  const released: string[] = [];
  const pull = {
    getBlob: async (_t: Target, d: Digest): Promise<BlobAnswer> => {
      const key = d.value;
      const i = sizes.findIndex((_, k) => digest(k) === key);
      const size = sizes[i]!;
      return {
        size,
        cache: opts.hit?.(i) ? 'hit' : 'miss',
        open: () => {
          opened.push(key);
          throw new Error('open() is not the prefetch path');
        },
        sendTo: async (dest: Writable) => {
          for (let sent = 0; sent < size; sent += 65536) {
            if (i === opts.fail && sent >= size / 2) throw new Error('digest mismatch');
            const n = Math.min(65536, size - sent);
            if (!dest.write(Buffer.alloc(n))) await new Promise((r) => dest.once('drain', r));
          }
          await new Promise<void>((resolve, reject) => dest.end((err?: Error | null) => (err ? reject(err) : resolve())));
        },
        release: async () => {
          released.push(key);
        },
      };
    },
  } as unknown as PullThrough;
  return { pull, opened, released };
}

const target = { client: { name: 'up' }, name: 'lib/app' } as unknown as Target;
const plan = (sizes: number[]) => ({ blobs: sizes.map((size, i) => ({ digest: digest(i), size, mediaType: 'application/octet-stream' })) });

t.test('every byte of every blob is fetched and counted through sendTo, none through open()', async (t) => {
  const sizes = [1, 65536, 300_000, 5 * 1024 * 1024 + 7, 0, 4096];
  const f = fakePull(sizes);
  const counted: number[] = [];
  const done: string[] = [];
  const r = await fetchPlan(f.pull, target, plan(sizes) as never, { onBytes: (n) => counted.push(n), onBlob: (d, fetched) => fetched && done.push(d) });
  const total = sizes.reduce((a, b) => a + b, 0);
  t.equal(r.fetchedBytes, total, 'fetchedBytes is every byte of the plan');
  t.equal(
    counted.reduce((a, b) => a + b, 0),
    total,
    'onBytes saw every byte',
  );
  t.same(done.sort(), sizes.map((_, i) => digest(i)).sort(), 'every blob reported fetched');
  t.same(f.opened, [], 'open() never called');
});

t.test('a blob already stored is released, counted by its size, not read', async (t) => {
  const sizes = [1000, 2000];
  const f = fakePull(sizes, { hit: (i) => i === 0 });
  let counted = 0;
  const r = await fetchPlan(f.pull, target, plan(sizes) as never, { onBytes: (n) => (counted += n) });
  t.equal(r.fetchedBytes, 2000, 'only the missing blob came from the upstream');
  t.equal(counted, 3000, 'progress counts the stored one too');
  t.same(f.released, [digest(0)]);
});

t.test('a blob that fails mid-way fails the plan', async (t) => {
  const sizes = [1 << 20, 1 << 20];
  const f = fakePull(sizes, { fail: 1 });
  await t.rejects(fetchPlan(f.pull, target, plan(sizes) as never), /digest mismatch/);
});
