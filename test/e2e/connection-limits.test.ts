// What one client may hold (security review, issue 12, findings 3 and 10): a body trickled a byte
// at a time is cut, an error answered before the body was read closes the connection, one address
// gets at most server.maxConnectionsPerAddress connections, a head that never ends and a client
// that stops reading are cut. Each would otherwise hold a descriptor for as long as the client
// liked (~1,100 such connections exhausted 1,024 descriptors and /v2/ stopped answering).
import net from 'node:net';
import t from 'tap';
import { request } from 'undici';
import { makeBlob } from '../fixtures/images.js';
import { requestHead } from '../fixtures/hangup.js';
import { openUpload, pushBlobWhole } from '../fixtures/oci-push.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { waitFor } from '../fixtures/util.js';
import { randomBytes } from 'node:crypto';
import { connectionLimit } from '../../lib/server/connection-guard.js';

const MiB = 1024 * 1024;

function start(server: Record<string, unknown>): Promise<Stevedore> {
  return startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: { registry: { hosted: ['lab/**'] }, server },
  });
}

/** A raw connection: what arrived, and a promise that settles (with ms since open) when the server closes it. */
function connect(port: number): { sock: net.Socket; received: () => string; closed: Promise<number> } {
  const sock = net.connect(port, '127.0.0.1');
  const opened = Date.now();
  let got = '';
  sock.on('data', (d: Buffer) => (got += d.toString('latin1')));
  sock.on('error', () => undefined);
  const closed = new Promise<number>((resolve) => sock.once('close', () => resolve(Date.now() - opened)));
  return { sock, received: () => got, closed };
}

async function metric(sd: Stevedore, line: RegExp): Promise<number> {
  const text = await (await request(`${sd.url}/metrics`)).body.text();
  return Number(line.exec(text)?.[1] ?? NaN);
}

t.test('a request body trickled a byte at a time is cut after server.requestBodyTimeout', async (t) => {
  const sd = await start({ requestBodyTimeout: '1s', requestBodyMinBytes: 1024 });
  const s = await openUpload(sd.url, 'lab/app');
  const c = connect(sd.port);
  c.sock.write(requestHead('PATCH', s.location, { length: 100_000 }));
  const drip = setInterval(() => c.sock.writable && c.sock.write('x'), 200);
  t.teardown(() => clearInterval(drip));
  const ms = await Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(-1), 10_000))]);
  clearInterval(drip);
  t.ok(ms > 0 && ms < 5_000, `the connection was closed after ${ms} ms`);
  t.equal((await request(`${sd.url}${s.location}`)).headers.range, '0-0', 'the session kept none of the trickled bytes');
  await waitFor('the request to be logged', async () => sd.requestLogs().some((l) => l.method === 'PATCH'), 5_000);
  const line = sd.requestLogs().find((l) => l.method === 'PATCH')!;
  t.equal(line.status, 408, 'logged as 408');
  t.equal((line.error as { code: string }).code, 'REQUEST_TIMEOUT');
  t.equal(await metric(sd, /^stevedore_connections_refused_total\{reason="slow_body"\} (\d+)/m), 1, 'counted');
});

t.test('a body that keeps coming at a modest rate is not cut', async (t) => {
  const sd = await start({ requestBodyTimeout: '1s', requestBodyMinBytes: 1024 });
  const s = await openUpload(sd.url, 'lab/app');
  const data = randomBytes(40 * 1024);
  const c = connect(sd.port);
  c.sock.write(requestHead('PATCH', s.location, { length: data.length, close: true }));
  // 4 KiB every 250 ms: 16 KiB/s, well above 1 KiB per second, for 2.5 s (longer than the window).
  for (let off = 0; off < data.length; off += 4096) {
    c.sock.write(data.subarray(off, off + 4096));
    await new Promise((r) => setTimeout(r, 250));
  }
  await c.closed;
  t.match(c.received(), /^HTTP\/1\.1 202 /, `accepted: ${c.received().split('\r\n')[0]}`);
});

t.test('an error answered before the request body was read closes the connection after the answer', async (t) => {
  const sd = await start({});
  const c = connect(sd.port);
  // An upload session that does not exist: 404 at once; the 1 MiB body is never sent.
  c.sock.write(requestHead('PATCH', '/v2/lab/app/blobs/uploads/00000000-0000-4000-8000-000000000000', { length: MiB }));
  c.sock.write('a few bytes');
  const ms = await Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(-1), 5_000))]);
  t.ok(ms > 0, `closed by the server after ${ms} ms`);
  t.match(c.received(), /^HTTP\/1\.1 404 /, 'after the answer');
});

t.test('one address gets at most server.maxConnectionsPerAddress connections', async (t) => {
  const sd = await start({ maxConnectionsPerAddress: 5 });
  const held = Array.from({ length: 5 }, () => connect(sd.port));
  await new Promise((r) => setTimeout(r, 100));
  const sixth = connect(sd.port);
  const ms = await Promise.race([sixth.closed, new Promise<number>((r) => setTimeout(() => r(-1), 3_000))]);
  t.ok(ms >= 0, 'the sixth connection is closed at once');
  t.equal(sixth.received(), '', 'without an answer');
  held[0]!.sock.destroy();
  await held[0]!.closed;
  await new Promise((r) => setTimeout(r, 100));
  const again = connect(sd.port);
  again.sock.write(requestHead('GET', '/v2/', { close: true }));
  await again.closed;
  t.match(again.received(), /^HTTP\/1\.1 200 /, 'once one closed, a new connection is served');
  for (const h of held) h.sock.destroy();
  t.equal(await metric(sd, /^stevedore_connections_refused_total\{reason="per_address"\} (\d+)/m), 1, 'counted');
});

t.test('a request head that never ends is cut after server.headersTimeout', async (t) => {
  const sd = await start({ headersTimeout: '1s' });
  const c = connect(sd.port);
  c.sock.write('GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ');
  const ms = await Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(-1), 6_000))]);
  t.ok(ms > 0 && ms < 4_000, `closed after ${ms} ms`);
});

t.test('a client that stops reading mid-blob is cut after server.idleTimeout and its transfer ends', async (t) => {
  const sd = await start({ idleTimeout: '1s' });
  const blob = makeBlob(randomBytes(32 * MiB), 'application/octet-stream');
  t.equal((await pushBlobWhole(sd.url, 'lab/app', blob.data, blob.digest)).status, 201);
  const c = connect(sd.port);
  // Reads nothing at all: the kernel's buffers fill (the receive window never grows), then nothing moves.
  c.sock.pause();
  c.sock.write(requestHead('GET', `/v2/lab/app/blobs/${blob.digest}`));
  // The server gives up on it: its transfer ends (only /metrics is then in flight).
  await waitFor('the transfer to end', async () => (await metric(sd, /^stevedore_http_requests_in_flight (\d+)/m)) === 1, 10_000);
  t.pass('no request is left in flight');
  // The client, reading again, finds the connection closed after a part of the blob.
  c.sock.resume();
  const ms = await Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(-1), 10_000))]);
  t.ok(ms > 0, 'the connection was closed by the server');
  t.ok(c.received().length < blob.size, `the client got only part of the blob (${c.received().length} bytes)`);
});

t.test('maxConnections follows the open-file limit, leaving room for files, unless configured', async (t) => {
  t.equal(connectionLimit(null, 1024), 768);
  t.equal(connectionLimit(null, 65_536), 65_280);
  t.equal(connectionLimit(null, 100), 64, 'never below 64');
  t.equal(connectionLimit(500, 1024), 500, 'a configured value wins');
  t.equal(connectionLimit(null, null), 4096, 'no known limit: 4096');
});

t.test('a token form over 64 KiB is answered 413 without reading the rest, and the connection closes', async (t) => {
  const sd = await start({});
  const c = connect(sd.port);
  // Declares 10 MiB but sends it chunked so the size is only known while reading.
  c.sock.write(requestHead('POST', '/token', { chunked: true, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }));
  const piece = Buffer.alloc(16 * 1024, 'a');
  const writes = setInterval(() => c.sock.writable && c.sock.write(Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')])), 20);
  t.teardown(() => clearInterval(writes));
  const ms = await Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(-1), 8_000))]);
  clearInterval(writes);
  t.ok(ms > 0, `the connection was closed (${ms} ms) although the client kept sending`);
  t.match(c.received(), /^HTTP\/1\.1 413 /, 'after a 413');
});

t.test('a token form declaring more than 64 KiB is answered 413 before any of it is read', async (t) => {
  const sd = await start({});
  const r = await rawRequestNoBody(sd.port, requestHead('POST', '/token', { length: 10 * MiB, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }));
  t.match(r, /^HTTP\/1\.1 413 /);
});

/** Sends a head only and returns what came back before the server closed. */
async function rawRequestNoBody(port: number, head: Buffer): Promise<string> {
  const c = connect(port);
  c.sock.write(head);
  await Promise.race([c.closed, new Promise((r) => setTimeout(r, 5_000))]);
  c.sock.destroy();
  return c.received();
}
