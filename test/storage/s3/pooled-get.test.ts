// Ranged GETs received into pooled memory (lib/storage/s3/pooled-get.ts), against a small TCP
// server that answers what a real gateway will not on demand: heads split over many reads, lying
// lengths, chunked bodies, extra bytes, stalls, resets. test/storage/s3/ranged-read-rgw.test.ts
// reads a real Ceph RGW's objects through it.
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { DELIVER_MIN, pooledGet, pooledGetSockets, S3GetError, SLAB, SLAB_BUDGET, SlabPool, slabSizeFor, type PooledBody, type PooledChunk } from '../../../lib/storage/s3/pooled-get.js';
import { churnCollections } from '../../../lib/util/buffer-churn.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** A server whose every connection gets `answer(request head, socket)`; its requests are recorded. */
async function server(t: Test, answer: (head: string, s: net.Socket) => void): Promise<{ url: (path?: string) => URL; requests: string[]; connections: () => number }> {
  const requests: string[] = [];
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let text = '';
    const onData = (d: Buffer): void => {
      text += d.toString('latin1');
      const at = text.indexOf('\r\n\r\n');
      if (at < 0) return;
      s.off('data', onData);
      requests.push(text.slice(0, at));
      answer(text.slice(0, at), s);
    };
    s.on('data', onData);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  );
  const port = (srv.address() as AddressInfo).port;
  return { url: (path = '/bucket/key?X-Amz-Signature=abc') => new URL(`http://127.0.0.1:${port}${path}`), requests, connections: () => connections };
}

function head206(start: number, end: number, total: number, extra = ''): string {
  return `HTTP/1.1 206 Partial Content\r\nContent-Length: ${end - start + 1}\r\nContent-Range: bytes ${start}-${end}/${total}\r\nETag: "e1"\r\n${extra}\r\n`;
}

/** Writes `data` in pieces of 1..max bytes, one per turn of the event loop. */
async function dribble(s: net.Socket, data: Buffer, max: number): Promise<void> {
  for (let i = 0; i < data.length && !s.destroyed; ) {
    const n = Math.min(data.length - i, 1 + Math.floor(Math.random() * max));
    s.write(data.subarray(i, i + n));
    i += n;
    await new Promise((r) => setImmediate(r));
  }
}

/** Consumes a body: copies of its bytes (each view released at once, unless `hold`), and how it ended. */
function drain(body: PooledBody, hold?: PooledChunk[]): Promise<{ bytes: Buffer; err: Error | null }> {
  const copies: Buffer[] = [];
  return new Promise((resolve) => {
    body.consume({
      chunk: (c) => {
        copies.push(Buffer.from(c.data));
        if (hold) hold.push(c);
        else c.release();
        return true;
      },
      end: () => resolve({ bytes: Buffer.concat(copies), err: null }),
      error: (err) => resolve({ bytes: Buffer.concat(copies), err }),
    });
  });
}

async function settled(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const signal = (): AbortSignal => new AbortController().signal;

t.test('the body of a 206 arrives byte for byte as views of pooled slabs; released views give their slabs back to the pool', async (t) => {
  const object = randomBytes(3 * MiB);
  const [start, end] = [1000, 2 * MiB + 77];
  const srv = await server(t, (_h, s) => {
    s.write(head206(start, end, object.length));
    void dribble(s, object.subarray(start, end + 1), 48 * KiB);
  });
  const pool = new SlabPool(64 * MiB);
  const got = await pooledGet({ url: srv.url(), start, end, ifMatch: null, pool, signal: signal() });
  t.equal(got.etag, '"e1"');
  const held: PooledChunk[] = [];
  const r = await drain(got.body, held);
  t.equal(r.err, null);
  t.equal(sha(r.bytes), sha(object.subarray(start, end + 1)), 'exactly the bytes asked for');
  t.ok(held.every((c) => c.data.buffer.byteLength >= SLAB), 'every chunk is a view of a slab');
  t.equal(pool.stats().pooled, 0, 'no slab is back while its views are held');
  for (const c of held) c.release();
  const { allocated, pooled } = pool.stats();
  t.equal(pooled, allocated * SLAB, `all ${allocated} slabs back in the pool`);
  t.ok(allocated <= Math.ceil((end - start + 1) / (SLAB - 16 * KiB)) + 1, `${allocated} slabs for ${end - start + 1} bytes: each filled before the next`);

  // A second GET reuses them.
  const again = await pooledGet({ url: srv.url(), start, end, ifMatch: null, pool, signal: signal() });
  t.equal(sha((await drain(again.body)).bytes), sha(object.subarray(start, end + 1)));
  t.equal(pool.stats().allocated, allocated, 'no new slab for the second read');
  await settled('sockets closed', () => pooledGetSockets() === 0);
});

t.test('slabs shrink with the number of GETs running: two per GET fit SLAB_BUDGET, 64 KiB at the least', async (t) => {
  t.equal(slabSizeFor(1), SLAB, 'one GET: the largest');
  t.equal(slabSizeFor(16), SLAB, 'sixteen: still');
  t.equal(slabSizeFor(17), 256 * KiB);
  t.equal(slabSizeFor(64), 128 * KiB);
  t.equal(slabSizeFor(65), 64 * KiB);
  t.equal(slabSizeFor(1000), 64 * KiB, 'never smaller');
  for (const n of [1, 8, 16, 32, 64, 128]) t.ok(2 * n * slabSizeFor(n) <= SLAB_BUDGET, `${n} GETs: two slabs each within the budget`);
});

t.test('64 GETs at once read into slabs of the size 64 allow, the bytes exact, and every slab back in the pool', async (t) => {
  const object = randomBytes(MiB);
  // The answers wait until all 64 connections are open, then stream the object but its last byte,
  // which each gets once all have had the rest: the 64 run together from first slab to last.
  const waiting: net.Socket[] = [];
  const nearly: net.Socket[] = [];
  const srv = await server(t, (_h, s) => {
    waiting.push(s);
    if (waiting.length < 64) return;
    for (const w of waiting.splice(0)) {
      w.write(head206(0, object.length - 1, object.length));
      void dribble(w, object.subarray(0, -1), 64 * KiB).then(() => {
        nearly.push(w);
        if (nearly.length === 64) for (const n of nearly) n.write(object.subarray(-1));
      });
    }
  });
  const pool = new SlabPool(64 * MiB);
  const gets = await Promise.all(Array.from({ length: 64 }, () => pooledGet({ url: srv.url(), start: 0, end: object.length - 1, ifMatch: null, pool, signal: signal() })));
  const read = gets.map(
    (g) =>
      new Promise<{ bytes: Buffer; slabs: ArrayBufferLike[] }>((resolve, reject) => {
        const copies: Buffer[] = [];
        const slabs: ArrayBufferLike[] = [];
        g.body.consume({
          chunk: (c) => {
            if (slabs.at(-1) !== c.data.buffer) slabs.push(c.data.buffer);
            copies.push(Buffer.from(c.data));
            c.release();
            return true;
          },
          end: () => resolve({ bytes: Buffer.concat(copies), slabs }),
          error: reject,
        });
      }),
  );
  const got = await Promise.all(read);
  t.ok(got.every((g) => g.bytes.equals(object)), 'every GET got exactly the object');
  t.same(
    got.map((g) => g.slabs[0]!.byteLength),
    Array.from({ length: 64 }, (_, i) => slabSizeFor(i + 1)),
    'each GET began in a slab of the size for the GETs running as it started',
  );
  // A GET's next slabs (the same one again, when its views were released before it filled up).
  const later = got.flatMap((g) => g.slabs.slice(1).map((b) => b.byteLength));
  t.ok(later.length >= 32, `the 32 GETs that began in larger slabs went on in others (${later.length})`);
  t.same([...new Set(later)], [slabSizeFor(64)], `each of ${slabSizeFor(64) / KiB} KiB`);
  t.equal(pool.stats().pooled, [...new Set(got.flatMap((g) => g.slabs))].reduce((n, b) => n + b.byteLength, 0), 'every slab back in the pool once its views were released');
  await settled('sockets closed', () => pooledGetSockets() === 0);
});

t.test('slabs not pooled again (the pool full) count toward the churn collections; pooled ones do not', async (t) => {
  const object = randomBytes(6 * MiB);
  const srv = await server(t, (_h, s) => {
    s.write(head206(0, object.length - 1, object.length));
    void dribble(s, object, 64 * KiB);
  });
  const read = async (pool: SlabPool): Promise<number> => {
    const before = churnCollections();
    const got = await pooledGet({ url: srv.url(), start: 0, end: object.length - 1, ifMatch: null, pool, signal: signal() });
    t.equal(sha((await drain(got.body)).bytes), sha(object));
    return churnCollections() - before;
  };
  t.ok((await read(new SlabPool(0))) >= 1, 'a pool that keeps nothing: its 6 MiB of dropped slabs collected');
  t.equal(await read(new SlabPool(64 * MiB)), 0, 'a pool that keeps them: none');
  await settled('sockets closed', () => pooledGetSockets() === 0);
});

t.test('the slab pool releases what a past peak needed while the load keeps taking less, and everything once idle', async (t) => {
  const pool = new SlabPool(64 * MiB, 40);
  const peak = Array.from({ length: 10 }, () => pool.take());
  for (const b of peak) pool.give(b);
  t.equal(pool.stats().pooled, 10 * SLAB, 'ten slabs pooled after a peak of ten');
  // Two at a time for ~5 trim periods.
  const until = performance.now() + 200;
  while (performance.now() < until) {
    const two = [pool.take(), pool.take()];
    await new Promise((r) => setTimeout(r, 5));
    for (const b of two) pool.give(b);
  }
  t.equal(pool.stats().pooled, 2 * SLAB, 'the two the load uses stay, the eight it no longer reaches went');
  t.equal(pool.stats().allocated, 10, 'none allocated anew meanwhile');
  await new Promise((r) => setTimeout(r, 120));
  t.equal(pool.stats().pooled, 0, 'released once nothing took any');
});

t.test('a body arriving in small reads is handed on in views of at least DELIVER_MIN bytes (less only where a slab or the body ends)', async (t) => {
  const object = randomBytes(2 * MiB + 5000);
  const srv = await server(t, (_h, s) => {
    s.write(head206(0, object.length - 1, object.length));
    void dribble(s, object, 8 * KiB);
  });
  const pool = new SlabPool(64 * MiB);
  const got = await pooledGet({ url: srv.url(), start: 0, end: object.length - 1, ifMatch: null, pool, signal: signal() });
  const held: PooledChunk[] = [];
  const r = await drain(got.body, held);
  t.equal(sha(r.bytes), sha(object), 'byte for byte');
  const small = held.filter((c, i) => c.data.length < DELIVER_MIN && i < held.length - 1 && c.data.byteOffset + c.data.length < SLAB - 16 * KiB);
  t.same(small.map((c) => c.data.length), [], 'no view but the last of a slab or of the body is smaller than DELIVER_MIN');
  t.ok(held.length <= Math.ceil(object.length / DELIVER_MIN) + Math.ceil(object.length / (SLAB - 16 * KiB)), `${held.length} views for ${object.length} bytes read 1–8 KiB at a time`);
  for (const c of held) c.release();
});

t.test('a body nobody consumes yet is read no further than about 256 KiB; consume() takes it all from there', async (t) => {
  const object = randomBytes(24 * MiB);
  const srv = await server(t, (_h, s) => {
    s.write(head206(0, object.length - 1, object.length));
    s.write(object);
  });
  const pool = new SlabPool(64 * MiB);
  const got = await pooledGet({ url: srv.url(), start: 0, end: object.length - 1, ifMatch: null, pool, signal: signal() });
  await new Promise((r) => setTimeout(r, 300));
  t.ok(pool.stats().allocated <= 3, `${pool.stats().allocated} slabs taken while no consumer was there (the rest waits in the sockets)`);
  const r = await drain(got.body);
  t.equal(r.err, null);
  t.equal(sha(r.bytes), sha(object), 'byte for byte once consumed');
});

t.test('the request asks exactly the range, If-Match, the presigned path, and one answer per connection', async (t) => {
  const srv = await server(t, (_h, s) => s.end(head206(5, 9, 100) + 'abcde'));
  const got = await pooledGet({ url: srv.url('/b/k%2Fx?X-Amz-Signature=s1&x-id=GetObject'), start: 5, end: 9, ifMatch: '"etag-1"', pool: new SlabPool(MiB), signal: signal() });
  t.equal((await drain(got.body)).bytes.toString(), 'abcde');
  const lines = srv.requests[0]!.split('\r\n');
  t.equal(lines[0], 'GET /b/k%2Fx?X-Amz-Signature=s1&x-id=GetObject HTTP/1.1');
  t.ok(lines.includes('Range: bytes=5-9'));
  t.ok(lines.includes('If-Match: "etag-1"'));
  t.ok(lines.includes('Connection: close'));
  t.ok(lines.includes(`Host: ${srv.url().host}`));
});

t.test('a head split over many reads (a byte at a time) is read whole', async (t) => {
  const body = randomBytes(100 * KiB);
  const srv = await server(t, (_h, s) => void dribble(s, Buffer.from(head206(0, body.length - 1, body.length)), 1).then(() => s.end(body)));
  const got = await pooledGet({ url: srv.url(), start: 0, end: body.length - 1, ifMatch: null, pool: new SlabPool(MiB), signal: signal() });
  t.equal(sha((await drain(got.body)).bytes), sha(body));
});

t.test('answers that are not the range asked are refused with S3GetError and their status, before any byte is taken', async (t) => {
  const cases: Array<[string, string, number | null]> = [
    ['412 (If-Match failed)', 'HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\n\r\n', 412],
    ['404', 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n', 404],
    ['503 SlowDown', 'HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\n\r\n', 503],
    ['200 for a range not starting at 0 (the Range ignored)', 'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789', 200],
    ['chunked', 'HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\nContent-Range: bytes 10-19/100\r\n\r\na\r\n0123456789\r\n0\r\n\r\n', 206],
    ['a Content-Length other than the range', head206(10, 20, 100), 206],
    ['no Content-Length', 'HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 10-19/100\r\n\r\n0123456789', 206],
    ['a Content-Range of other bytes', 'HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Range: bytes 0-9/100\r\n\r\n0123456789', 206],
    ['two Content-Length headers', 'HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Length: 10\r\nContent-Range: bytes 10-19/100\r\n\r\n0123456789', null],
    ['a folded header line', 'HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n Content-Range: bytes 10-19/100\r\n\r\n0123456789', null],
    ['not HTTP', 'SSH-2.0-OpenSSH\r\n\r\n', null],
    ['a head of 40 KiB', `HTTP/1.1 206 Partial Content\r\nX-Padding: ${'a'.repeat(40 * KiB)}\r\n\r\n`, null],
    ['nothing at all (closed)', '', null],
  ];
  for (const [what, answer, status] of cases) {
    const srv = await server(t, (_h, s) => s.end(answer));
    const pool = new SlabPool(MiB);
    const err = await pooledGet({ url: srv.url(), start: 10, end: 19, ifMatch: null, pool, signal: signal() }).then(
      () => null,
      (e: unknown) => e,
    );
    t.type(err, S3GetError, what);
    t.equal((err as S3GetError).status, status, `${what}: status ${status}`);
    t.equal((err as S3GetError).$metadata.httpStatusCode, status ?? undefined, `${what}: as the SDK reports a status`);
    t.equal(pool.stats().pooled, pool.stats().allocated * SLAB, `${what}: its slab back in the pool`);
  }
  await settled('sockets closed', () => pooledGetSockets() === 0);
});

t.test('clip (the GET that finds an object of unknown size): an answer ending at the object\'s last byte, before the range asked, is taken whole; without clip, or ending elsewhere, refused', async (t) => {
  const object = randomBytes(1000);
  const accepted: Array<[string, string]> = [
    ['206 of bytes 0-999/1000 for 0-4095', `${head206(0, 999, 1000)}`],
    ['200 with the whole (shorter) object', 'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n'],
  ];
  for (const [what, head] of accepted) {
    const srv = await server(t, (_h, s) => s.end(Buffer.concat([Buffer.from(head, 'latin1'), object])));
    const got = await pooledGet({ url: srv.url(), start: 0, end: 4095, ifMatch: null, clip: true, pool: new SlabPool(MiB), signal: signal() });
    t.equal(got.total, 1000, `${what}: the object's size`);
    const r = await drain(got.body);
    t.equal(r.err, null, what);
    t.equal(sha(r.bytes), sha(object), `${what}: its bytes`);
  }
  const refused: Array<[string, string, boolean]> = [
    ['the same answer without clip', head206(0, 999, 1000), false],
    ['a range ending before the object does', head206(0, 999, 5000), true],
    ['a size not said (*)', 'HTTP/1.1 206 Partial Content\r\nContent-Length: 1000\r\nContent-Range: bytes 0-999/*\r\n\r\n', true],
    ['a Content-Length other than the clipped range', 'HTTP/1.1 206 Partial Content\r\nContent-Length: 4096\r\nContent-Range: bytes 0-999/1000\r\n\r\n', true],
    ['a range ending past the one asked', head206(0, 4999, 5000), true],
  ];
  for (const [what, head, clip] of refused) {
    const srv = await server(t, (_h, s) => s.end(Buffer.concat([Buffer.from(head, 'latin1'), object])));
    const err = await pooledGet({ url: srv.url(), start: 0, end: 4095, ifMatch: null, clip, pool: new SlabPool(MiB), signal: signal() }).then(
      () => null,
      (e: unknown) => e,
    );
    t.type(err, S3GetError, what);
  }
  await settled('sockets closed', () => pooledGetSockets() === 0);
});

t.test('a body with more bytes than announced, or fewer before the connection closes, fails the body', async (t) => {
  for (const [what, extra] of [
    ['more', 'XYZ'],
    ['fewer', null],
  ] as const) {
    const srv = await server(t, (_h, s) => {
      s.write(head206(0, 9, 100));
      setTimeout(() => (extra === null ? s.end('01234') : s.end(`0123456789${extra}`)), 20);
    });
    const got = await pooledGet({ url: srv.url(), start: 0, end: 9, ifMatch: null, pool: new SlabPool(MiB), signal: signal() });
    const r = await drain(got.body);
    if (extra === null) {
      t.type(r.err, S3GetError, `${what}: an error`);
      t.match(r.err?.message, /ended after 5 of 10 bytes/);
    } else {
      // Ten bytes end the body; the three after them arrive in the same read or later: either
      // way no byte beyond the range is taken.
      t.ok(r.bytes.length <= 10, `${what}: no byte beyond the range taken`);
      if (r.err) t.match(r.err.message, /more than the 10 bytes/);
      else t.equal(r.bytes.toString(), '0123456789');
    }
  }
});

t.test('a header value that could end its line is never sent: no connection is made', async (t) => {
  const srv = await server(t, (_h, s) => s.end(head206(0, 0, 1) + 'x'));
  const err = await pooledGet({ url: srv.url(), start: 0, end: 0, ifMatch: '"e"\r\nX-Injected: 1', pool: new SlabPool(MiB), signal: signal() }).then(
    () => null,
    (e: unknown) => e,
  );
  t.type(err, S3GetError);
  t.equal(srv.connections(), 0, 'nothing reached the server');
});

t.test('only plain http: is spoken', async (t) => {
  const err = await pooledGet({ url: new URL('https://127.0.0.1:1/b/k'), start: 0, end: 0, ifMatch: null, pool: new SlabPool(MiB), signal: signal() }).catch((e: unknown) => e);
  t.type(err, S3GetError);
  t.match((err as Error).message, /plain HTTP/);
});

t.test('a gateway that never answers fails within connectTimeoutMs; one that stalls mid-body within idleTimeoutMs', async (t) => {
  const silent = await server(t, () => undefined);
  const t0 = Date.now();
  const err = await pooledGet({ url: silent.url(), start: 0, end: 9, ifMatch: null, pool: new SlabPool(MiB), signal: signal(), connectTimeoutMs: 300 }).catch((e: unknown) => e);
  t.type(err, S3GetError);
  t.match((err as Error).message, /no answer/);
  t.ok(Date.now() - t0 < 3000, 'failed in time');

  const stalls = await server(t, (_h, s) => s.write(head206(0, 99, 100) + '0123456789'));
  const got = await pooledGet({ url: stalls.url(), start: 0, end: 99, ifMatch: null, pool: new SlabPool(MiB), signal: signal(), idleTimeoutMs: 300 });
  const r = await drain(got.body);
  t.match(r.err?.message, /nothing received/);
  t.equal(r.bytes.toString(), '0123456789', 'what came before the stall was delivered');
  await settled('sockets closed', () => pooledGetSockets() === 0);
});

t.test('an abort mid-body closes the connection and fails the body with the signal\'s reason', async (t) => {
  const srv = await server(t, (_h, s) => s.write(head206(0, MiB - 1, MiB) + 'x'.repeat(1000)));
  const ac = new AbortController();
  const got = await pooledGet({ url: srv.url(), start: 0, end: MiB - 1, ifMatch: null, pool: new SlabPool(MiB), signal: ac.signal });
  const done = drain(got.body);
  await new Promise((r) => setTimeout(r, 50));
  const reason = new Error('client gone');
  ac.abort(reason);
  const r = await done;
  t.equal(r.err, reason);
  await settled('sockets closed', () => pooledGetSockets() === 0);
});

t.test('a consumer that answers false pauses the reads until resume(); nothing is lost', async (t) => {
  const body = randomBytes(4 * MiB);
  const srv = await server(t, (_h, s) => s.end(Buffer.concat([Buffer.from(head206(0, body.length - 1, body.length)), body])));
  const pool = new SlabPool(64 * MiB);
  const got = await pooledGet({ url: srv.url(), start: 0, end: body.length - 1, ifMatch: null, pool, signal: signal() });
  const copies: Buffer[] = [];
  let count = 0;
  const ended = new Promise<Error | null>((resolve) =>
    got.body.consume({
      chunk: (c) => {
        copies.push(Buffer.from(c.data));
        c.release();
        return ++count !== 1; // pause after the first chunk
      },
      end: () => resolve(null),
      error: (err) => resolve(err),
    }),
  );
  await new Promise((r) => setTimeout(r, 200));
  t.equal(count, 1, 'no chunk while paused');
  got.body.resume();
  t.equal(await ended, null);
  t.equal(sha(Buffer.concat(copies)), sha(body));
});

t.test('a consumer giving up from within its last chunk: the slab stays out of the pool until that chunk is released, and the end is not told after the failure', async (t) => {
  const srv = await server(t, (_h, s) => s.end(head206(0, 9, 10) + '0123456789'));
  const pool = new SlabPool(MiB);
  const got = await pooledGet({ url: srv.url(), start: 0, end: 9, ifMatch: null, pool, signal: signal() });
  const held: PooledChunk[] = [];
  const heard: string[] = [];
  got.body.consume({
    chunk: (c) => {
      held.push(c);
      got.body.destroy(new Error('not wanted'));
      return false;
    },
    end: () => heard.push('end'),
    error: (err) => heard.push(`error: ${err.message}`),
  });
  await new Promise((r) => setTimeout(r, 50));
  t.same(heard, ['error: not wanted'], 'told of the failure once, never of an end');
  t.equal(pool.stats().pooled, 0, 'the slab is not pooled while its chunk is held');
  for (const c of held) c.release();
  t.equal(pool.stats().pooled, pool.stats().allocated * SLAB, 'pooled once released');
  await settled('sockets closed', () => pooledGetSockets() === 0);
});
