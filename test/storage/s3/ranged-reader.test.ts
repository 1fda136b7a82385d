// The parallel ranged reader of large S3 objects (lib/storage/s3/ranged-reader.ts) on a small
// programmable source: what a real gateway will not do on demand (a part that breaks off, an
// object replaced between parts) and what must be counted exactly (parts in flight, budget held).
// test/storage/s3/ranged-read-rgw.test.ts reads real objects of a Ceph RGW through it.
import { createHash, randomBytes } from 'node:crypto';
import { PassThrough, Readable, Writable } from 'node:stream';
import t from 'tap';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { pooledGet, SLAB, SlabPool, type PooledBody } from '../../../lib/storage/s3/pooled-get.js';
import { ObjectChangedError, ReadBudget, writeRanged, type PartSource, type RangedReadOptions } from '../../../lib/storage/s3/ranged-reader.js';
import { DestinationClosedError } from '../../../lib/util/destination-closed.js';

const KiB = 1024;

interface Asked {
  start: number;
  end: number;
  ifMatch: string | null;
}

/**
 * An object in memory served by ranges in 16 KiB chunks, one chunk per turn of the event loop.
 * `fail(start, attempt)`: after how many bytes the answer to a part starting at `start` breaks
 * off (null: it does not). `etag` may change (the object replaced): If-Match then fails (412).
 */
class FakeSource implements PartSource {
  asked: Asked[] = [];
  inFlight = 0;
  maxInFlight = 0;
  aborted = 0;
  etag = '"v1"';
  fail: (start: number, attempt: number) => number | null = () => null;
  private attempts = new Map<number, number>();

  constructor(readonly data: Buffer) {}

  get(start: number, end: number, ifMatch: string | null, signal: AbortSignal): Promise<{ body: Readable }> {
    this.asked.push({ start, end, ifMatch });
    if (ifMatch !== null && ifMatch !== this.etag) return Promise.reject(Object.assign(new Error('PreconditionFailed'), { status: 412 }));
    const attempt = (this.attempts.get(start) ?? 0) + 1;
    this.attempts.set(start, attempt);
    const breakAfter = this.fail(start, attempt);
    return Promise.resolve({ body: this.body(start, end, breakAfter, signal) });
  }

  changed(err: unknown): boolean {
    return (err as { status?: number }).status === 412;
  }

  /** Bytes [start, end] as a stream, failing after `breakAfter` bytes if set. */
  body(start: number, end: number, breakAfter: number | null, signal?: AbortSignal): Readable {
    let pos = start;
    let sent = 0;
    let busy = false;
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    let open = true;
    const close = (): void => {
      if (open) this.inFlight--;
      open = false;
    };
    const r = new Readable({
      highWaterMark: 64 * KiB,
      read: () => {
        if (busy) return;
        busy = true;
        setImmediate(() => {
          busy = false;
          if (r.destroyed) return;
          if (breakAfter !== null && sent >= breakAfter) return void r.destroy(new Error('connection reset by the fake'));
          const n = Math.min(16 * KiB, end + 1 - pos, breakAfter === null ? Infinity : breakAfter - sent);
          if (n <= 0) {
            close();
            r.push(null);
            return;
          }
          const more = r.push(this.data.subarray(pos, pos + n));
          pos += n;
          sent += n;
          if (more) r.read(0);
        });
      },
      destroy: (err, cb) => {
        close();
        cb(err);
      },
    });
    signal?.addEventListener(
      'abort',
      () => {
        if (open) this.aborted++;
        r.destroy();
      },
      { once: true },
    );
    return r;
  }
}

/** A destination that keeps what it is given, taking each chunk after `delayMs`; `closeAfter`: bytes after which it is destroyed. */
function sink(opts: { delayMs?: number; closeAfter?: number; copy?: boolean } = {}): { dest: Writable; bytes: () => Buffer; read: (p: Promise<void>) => Promise<void> } {
  const got: Buffer[] = [];
  let n = 0;
  const dest = new Writable({
    highWaterMark: 64 * KiB,
    write(chunk: Buffer, _enc, cb) {
      // A socket is done with a chunk when it calls back; a sink keeping pooled views must copy them.
      got.push(opts.copy ? Buffer.from(chunk) : chunk);
      n += chunk.length;
      if (opts.closeAfter !== undefined && n >= opts.closeAfter) {
        cb();
        setImmediate(() => dest.destroy());
        return;
      }
      if (opts.delayMs) setTimeout(cb, opts.delayMs);
      else setImmediate(cb);
    },
  });
  // The read, then the destination ended and finished: every byte handed to it was taken.
  const read = async (p: Promise<void>): Promise<void> => {
    await p;
    await new Promise<void>((resolve) => dest.end(resolve));
  };
  return { dest, bytes: () => Buffer.concat(got), read };
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function options(src: FakeSource, budget: ReadBudget, over: Partial<RangedReadOptions> = {}): RangedReadOptions {
  return { source: src, budget, start: 0, end: src.data.length - 1, partSize: 100 * KiB, concurrency: 4, retries: 2, etag: src.etag, retryDelayMs: () => 1, ...over };
}

const data = randomBytes(1000 * KiB + 17);

t.test('the whole object and ranges (first byte, middle, last byte, across parts) come byte for byte, in order', async (t) => {
  const budget = new ReadBudget(10 * 1024 * KiB);
  for (const [start, end] of [[0, data.length - 1], [0, 0], [123_456, 345_678], [data.length - 1, data.length - 1], [data.length - 300 * KiB, data.length - 1], [99 * KiB, 101 * KiB]] as const) {
    const src = new FakeSource(data);
    const out = sink();
    await out.read(writeRanged(out.dest, options(src, budget, { start, end })));
    t.equal(sha(out.bytes()), sha(data.subarray(start, end + 1)), `bytes ${start}-${end}`);
    const parts = Math.ceil((end - start + 1) / (100 * KiB));
    t.equal(src.asked.length, parts, `${parts} ranged GET(s), one per part`);
    t.ok(src.asked.every((a) => a.ifMatch === '"v1"'), 'each asked only if the object is still the one first seen');
  }
  t.same(budget.stats().inUse, 0, 'every byte of budget given back');
});

t.test('parts are fetched concurrently, never more than readConcurrency at once, and a stream holds at most that many parts of budget', async (t) => {
  const budget = new ReadBudget(1024 * 1024 * KiB);
  const src = new FakeSource(data);
  const out = sink({ delayMs: 1 }); // a client slower than the source: parts pile up ahead
  await out.read(writeRanged(out.dest, options(src, budget, { concurrency: 3 })));
  t.equal(sha(out.bytes()), sha(data));
  t.equal(src.maxInFlight, 3, 'three parts in flight at once');
  t.ok(budget.stats().peak <= 3 * 100 * KiB, `peak budget ${budget.stats().peak} ≤ 3 parts`);
  t.ok(budget.stats().peak >= 2 * 100 * KiB, 'parts were held ahead');
});

t.test('the first answer (the GET that found the object) is used as the first part, not asked again', async (t) => {
  const budget = new ReadBudget(4 * 100 * KiB);
  const src = new FakeSource(data);
  const out = sink();
  await out.read(writeRanged(out.dest, options(src, budget, { first: { body: src.body(0, 100 * KiB - 1, null), end: 100 * KiB - 1 } })));
  t.equal(sha(out.bytes()), sha(data));
  t.notOk(src.asked.some((a) => a.start === 0), 'bytes 0- not asked again');
  t.equal(src.asked.length, 10, 'the other ten parts');
});

t.test('a part that breaks off is asked again from the byte it reached, and the bytes are whole', async (t) => {
  const budget = new ReadBudget(4 * 100 * KiB);
  const src = new FakeSource(data);
  src.fail = (start, attempt) => (start === 300 * KiB && attempt === 1 ? 40 * KiB : null);
  const out = sink();
  const retries: number[] = [];
  await out.read(writeRanged(out.dest, options(src, budget, { onRetry: (_e, p) => retries.push(p.start) })));
  t.equal(sha(out.bytes()), sha(data), 'byte for byte');
  t.same(retries, [340 * KiB], 'one retry, from the byte reached');
  t.ok(src.asked.some((a) => a.start === 340 * KiB && a.end === 400 * KiB - 1), 'asked for the rest of the part only');
  t.equal(budget.stats().inUse, 0);
});

t.test('a part that keeps failing fails the read after the retries, and everything is given back', async (t) => {
  const budget = new ReadBudget(4 * 100 * KiB);
  const src = new FakeSource(data);
  src.fail = (start) => (start >= 500 * KiB && start < 600 * KiB ? 1 * KiB : null);
  const out = sink();
  await t.rejects(writeRanged(out.dest, options(src, budget, { retries: 2 })), /connection reset by the fake/);
  t.equal(src.asked.filter((a) => a.start >= 500 * KiB && a.start < 600 * KiB).length, 3, 'asked once, then twice more');
  t.ok(out.bytes().length < data.length, 'the destination did not get the whole object');
  const got = out.bytes();
  t.ok(got.length <= 503 * KiB, `nothing past the failed part's bytes received (${got.length})`);
  t.ok(got.equals(data.subarray(0, got.length)), 'what was written is the object, in order (the 1 KiB of each attempt too)');
  t.equal(budget.stats().inUse, 0, 'budget back to full');
  t.equal(src.inFlight, 0, 'no part left in flight');
});

t.test('an object replaced between parts (If-Match fails) fails the read at once, never splicing two versions', async (t) => {
  const budget = new ReadBudget(2 * 100 * KiB);
  const src = new FakeSource(data);
  const out = sink({ delayMs: 1 });
  let replaced = false;
  src.fail = (start) => {
    if (start === 200 * KiB && !replaced) {
      replaced = true;
      src.etag = '"v2"'; // the parts asked after this one find another version
    }
    return null;
  };
  const err = await writeRanged(out.dest, options(src, budget)).catch((e: unknown) => e);
  t.type(err, ObjectChangedError);
  t.ok(src.asked.some((a) => a.ifMatch === '"v1"' && a.start > 200 * KiB), 'a later part was asked with If-Match on the first ETag');
  t.equal(src.asked.filter((a) => a.start === 300 * KiB).length, 1, 'the refused part is not asked again');
  t.ok(out.bytes().length < data.length, 'the destination did not get a whole body');
  t.equal(budget.stats().inUse, 0);
  t.equal(src.inFlight, 0);
});

t.test('several streams together never hold more than the budget; one that finds it taken waits, then finishes', async (t) => {
  const budget = new ReadBudget(3 * 100 * KiB);
  const streams = Array.from({ length: 4 }, () => ({ src: new FakeSource(data), out: sink({ delayMs: 1 }) }));
  await Promise.all(streams.map((s) => s.out.read(writeRanged(s.out.dest, options(s.src, budget)))));
  for (const [i, s] of streams.entries()) t.equal(sha(s.out.bytes()), sha(data), `stream ${i} byte for byte`);
  const st = budget.stats();
  t.ok(st.peak <= st.limit, `peak ${st.peak} ≤ limit ${st.limit}`);
  t.ok(st.waited > 0, `${st.waited} requests for budget had to wait`);
  t.equal(st.inUse, 0, 'all given back');
  t.equal(st.waiting, 0);
});

t.test('a budget smaller than one part still lets a read finish (it streams part by part)', async (t) => {
  const budget = new ReadBudget(10 * KiB);
  const src = new FakeSource(data);
  const out = sink();
  await out.read(writeRanged(out.dest, options(src, budget)));
  t.equal(sha(out.bytes()), sha(data));
  t.equal(budget.stats().inUse, 0);
});

t.test('a destination that closes aborts every part in flight and gives all budget back, at every stage', async (t) => {
  for (const closeAfter of [1, 50 * KiB, 150 * KiB, 420 * KiB, 700 * KiB]) {
    const budget = new ReadBudget(3 * 100 * KiB);
    // Another stream holds budget, so this one also waits for some at times.
    const other = { src: new FakeSource(data), out: sink({ delayMs: 2 }) };
    const otherDone = other.out.read(writeRanged(other.out.dest, options(other.src, budget)));
    const src = new FakeSource(data);
    const out = sink({ closeAfter, delayMs: 1 });
    const err = await writeRanged(out.dest, options(src, budget)).catch((e: unknown) => e);
    t.type(err, DestinationClosedError, `closed after ${closeAfter} bytes: the read says the client went away`);
    t.equal(src.inFlight, 0, `closed after ${closeAfter} bytes: no part in flight`);
    await otherDone;
    t.equal(sha(other.out.bytes()), sha(data), 'the other stream is unaffected');
    t.equal(budget.stats().inUse, 0, `closed after ${closeAfter} bytes: budget back to full`);
    t.equal(budget.stats().waiting, 0);
  }
});

t.test('a destination already closed: nothing is asked, nothing held', async (t) => {
  const budget = new ReadBudget(3 * 100 * KiB);
  const src = new FakeSource(data);
  const out = sink();
  out.dest.destroy();
  t.type(await writeRanged(out.dest, options(src, budget)).catch((e: unknown) => e), DestinationClosedError);
  t.equal(src.asked.length, 0);
  t.equal(budget.stats().inUse, 0);
});

t.test('the budget grants first come, first served, and a request whose reader gave up leaves the queue', async (t) => {
  const b = new ReadBudget(100);
  const ac = new AbortController();
  await b.take(80, ac.signal);
  const order: string[] = [];
  const a = b.take(50, ac.signal).then(() => order.push('a'));
  const gone = new AbortController();
  const c = b.take(10, gone.signal).catch(() => order.push('c gave up'));
  const d = b.take(10, new AbortController().signal).then(() => order.push('d'));
  await new Promise((r) => setImmediate(r));
  t.same(order, [], 'd waits behind a although it would fit');
  gone.abort(new Error('gone'));
  await c;
  b.give(80);
  await Promise.all([a, d]);
  t.same(order, ['c gave up', 'a', 'd']);
  t.same(b.stats().inUse, 60);
});

t.test('parts received into pooled memory (pooled-get.ts): a part that breaks off is asked again from the byte it reached, and every slab is pooled again once written', async (t) => {
  const object = randomBytes(3 * 1024 * KiB + 5);
  const asked: string[] = [];
  const broken = new Set<string>();
  const srv = net.createServer((s) => {
    s.on('error', () => undefined);
    s.once('data', (d: Buffer) => {
      const m = /Range: bytes=(\d+)-(\d+)/.exec(d.toString('latin1'))!;
      const [start, end] = [Number(m[1]), Number(m[2])];
      asked.push(`${start}-${end}`);
      s.write(`HTTP/1.1 206 Partial Content\r\nContent-Length: ${end - start + 1}\r\nContent-Range: bytes ${start}-${end}/${object.length}\r\n\r\n`);
      // The part starting at 1 MiB breaks off after 100 KiB, once.
      if (start === 1024 * KiB && !broken.has('once')) {
        broken.add('once');
        s.write(object.subarray(start, start + 100 * KiB), () => s.destroy());
        return;
      }
      s.end(object.subarray(start, end + 1));
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const url = new URL(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/b/k`);
  const pool = new SlabPool(64 * 1024 * KiB);
  const source: PartSource = {
    get: async (start, end, ifMatch, signal) => ({ pooled: (await pooledGet({ url, start, end, ifMatch, pool, signal })).body }),
    changed: () => false,
  };
  const budget = new ReadBudget(4 * 1024 * KiB);
  const out = sink({ copy: true, delayMs: 1 });
  await out.read(writeRanged(out.dest, { source, budget, start: 0, end: object.length - 1, partSize: 512 * KiB, concurrency: 3, retries: 2, etag: null, retryDelayMs: () => 1 }));
  t.equal(sha(out.bytes()), sha(object), 'byte for byte');
  t.ok(asked.includes(`${1024 * KiB + 100 * KiB}-${1536 * KiB - 1}`), 'the broken part asked again from the byte it reached');
  t.equal(budget.stats().inUse, 0, 'no budget held');
  t.equal(pool.stats().pooled, pool.stats().allocated * SLAB, `all ${pool.stats().allocated} slabs back in the pool`);
});

t.test('copyPooled: a destination that keeps its chunks after calling back (a PassThrough read later) gets copies; the pooled first answer and parts come byte for byte and every slab goes back', async (t) => {
  const object = randomBytes(2 * 1024 * KiB + 77);
  const srv = net.createServer((s) => {
    s.on('error', () => undefined);
    s.once('data', (d: Buffer) => {
      const m = /Range: bytes=(\d+)-(\d+)/.exec(d.toString('latin1'))!;
      const [start, end] = [Number(m[1]), Number(m[2])];
      s.write(`HTTP/1.1 206 Partial Content\r\nContent-Length: ${end - start + 1}\r\nContent-Range: bytes ${start}-${end}/${object.length}\r\n\r\n`);
      s.end(object.subarray(start, end + 1));
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const url = new URL(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/b/k`);
  const pool = new SlabPool(64 * 1024 * KiB);
  const get = async (start: number, end: number, ifMatch: string | null, signal: AbortSignal): Promise<PooledBody> => (await pooledGet({ url, start, end, ifMatch, pool, signal })).body;
  const source: PartSource = { get: async (start, end, ifMatch, signal) => ({ pooled: await get(start, end, ifMatch, signal) }), changed: () => false };
  const first = await get(0, 512 * KiB - 1, null, new AbortController().signal);
  const out = new PassThrough({ highWaterMark: 8 * 1024 * KiB });
  await writeRanged(out, { source, budget: new ReadBudget(4 * 1024 * KiB), start: 0, end: object.length - 1, partSize: 512 * KiB, concurrency: 3, retries: 0, etag: null, first: { pooled: first, end: 512 * KiB - 1 }, copyPooled: true });
  out.end();
  // Everything was written before anything is read: views of reused slabs would show later bytes.
  const got: Buffer[] = [];
  for await (const c of out) got.push(c as Buffer);
  t.equal(sha(Buffer.concat(got)), sha(object), 'byte for byte');
  t.equal(pool.stats().pooled, pool.stats().allocated * SLAB, `all ${pool.stats().allocated} slabs back in the pool`);
});
