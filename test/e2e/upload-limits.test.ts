// Uploads are bounded (security review, issue 12, finding 10): open sessions in all and per user,
// the size of one upload, the bytes one user's open sessions hold; the counts survive a restart;
// and a PUT that sends less than its Content-Length does not hold the session's lock for ever.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { requestHead } from '../fixtures/hangup.js';
import { ociErrors, rawRequest } from '../fixtures/http-client.js';
import { call, openUpload, streamedPatch } from '../fixtures/oci-push.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';
import net from 'node:net';

const KiB = 1024;

function start(registry: Record<string, unknown>, extra: Record<string, unknown> = {}, storagePath?: string): Promise<Stevedore> {
  return startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    ...(storagePath ? { storagePath } : {}),
    config: { registry: { hosted: ['lab/**'], ...registry }, ...extra },
  });
}

const post = (sd: Stevedore, headers: Record<string, string> = {}): ReturnType<typeof rawRequest> =>
  rawRequest(`${sd.url}/v2/lab/app/blobs/uploads/`, { method: 'POST', headers: { 'content-length': '0', ...headers } });

t.test('open upload sessions are capped in all: the next is 429 until one ends', async (t) => {
  const sd = await start({ maxUploadSessions: 3 });
  const open = [await openUpload(sd.url, 'lab/app'), await openUpload(sd.url, 'lab/app'), await openUpload(sd.url, 'lab/app')];
  const fourth = await post(sd);
  t.equal(fourth.status, 429);
  t.equal(ociErrors(fourth)?.[0]?.code, 'TOOMANYREQUESTS');
  t.match(ociErrors(fourth)?.[0]?.message ?? '', /registry\.maxUploadSessions/);
  t.equal((await call(sd.url, 'DELETE', open[0]!.location)).status, 204);
  t.equal((await post(sd)).status, 202, 'a cancelled session frees its place');
});

t.test('open upload sessions are capped per user', async (t) => {
  const file = path.join(await tmpDir(t), 'htpasswd');
  await writeFile(file, `alice:${bcrypt.hashSync('a-pw', 4)}\nbob:${bcrypt.hashSync('b-pw', 4)}\n`);
  const sd = await start({ maxUploadSessionsPerUser: 2 }, { auth: { htpasswd: file } });
  const alice = { authorization: `Basic ${Buffer.from('alice:a-pw').toString('base64')}` };
  const bob = { authorization: `Basic ${Buffer.from('bob:b-pw').toString('base64')}` };
  t.equal((await post(sd, alice)).status, 202);
  t.equal((await post(sd, alice)).status, 202);
  const third = await post(sd, alice);
  t.equal(third.status, 429, "alice's third session is refused");
  t.match(ociErrors(third)?.[0]?.message ?? '', /alice has too many uploads/);
  t.equal((await post(sd, bob)).status, 202, 'bob still may open one');
});

t.test('an upload larger than registry.uploadMaxSize is refused with 413 and leaves the session as it was', async (t) => {
  const sd = await start({ uploadMaxSize: '64KiB' });
  const s = await openUpload(sd.url, 'lab/app');
  const declared = await call(sd.url, 'PATCH', s.location, { body: randomBytes(100 * KiB), headers: { 'content-range': `0-${100 * KiB - 1}` } });
  t.equal(declared.status, 413, 'a declared length over the limit: 413 before reading');
  t.equal(ociErrors(declared)?.[0]?.code, 'SIZE_INVALID');
  t.equal((await call(sd.url, 'PATCH', s.location, { body: randomBytes(40 * KiB) })).status, 202, 'a chunk within the limit');
  const streamed = await streamedPatch(sd.url, s.location, [randomBytes(16 * KiB), randomBytes(16 * KiB), randomBytes(16 * KiB)]);
  t.equal(streamed !== 'broken' && streamed.status, 413, 'a streamed chunk crossing the limit: 413');
  t.equal((await call(sd.url, 'GET', s.location)).headers.range, `0-${40 * KiB - 1}`, 'the session keeps only what was accepted');
});

t.test("one user's open sessions hold at most registry.uploadQuotaPerUser bytes", async (t) => {
  const sd = await start({ uploadQuotaPerUser: '100KiB' });
  const a = await openUpload(sd.url, 'lab/app');
  const b = await openUpload(sd.url, 'lab/app');
  t.equal((await call(sd.url, 'PATCH', a.location, { body: randomBytes(60 * KiB) })).status, 202);
  const over = await call(sd.url, 'PATCH', b.location, { body: randomBytes(60 * KiB) });
  t.equal(over.status, 413, 'the second session would pass the quota');
  t.match(ociErrors(over)?.[0]?.message ?? '', /uploadQuotaPerUser/);
  t.equal((await call(sd.url, 'DELETE', a.location)).status, 204);
  t.equal((await call(sd.url, 'PATCH', b.location, { body: randomBytes(60 * KiB) })).status, 202, 'once the first is cancelled it fits');
});

t.test('the sessions open before a restart still count after it', async (t) => {
  const storagePath = path.join(await tmpDir(t), 'data');
  const first = await start({ maxUploadSessions: 2 }, {}, storagePath);
  await openUpload(first.url, 'lab/app');
  await openUpload(first.url, 'lab/app');
  await first.stop();
  const second = await start({ maxUploadSessions: 2 }, {}, storagePath);
  t.equal((await post(second)).status, 429, 'still two open: the third is refused');
});

t.test('a PUT that sends less than its Content-Length does not hold the session', async (t) => {
  const sd = await start({}, { server: { requestBodyTimeout: '1s', requestBodyMinBytes: 1024 } });
  const s = await openUpload(sd.url, 'lab/app');
  const sock = net.connect(sd.port, '127.0.0.1');
  sock.on('error', () => undefined);
  sock.write(requestHead('PUT', `${s.location}?digest=sha256:${'0'.repeat(64)}`, { length: 1000 }));
  sock.write('ten bytes!');
  await new Promise((r) => setTimeout(r, 300)); // the PUT holds the session's lock now
  // Within the body timeout (and a little), the PUT is cut and the session's lock released.
  const started = Date.now();
  const next = await call(sd.url, 'PATCH', s.location, { body: randomBytes(1000), timeoutMs: 10_000 });
  const waited = Date.now() - started;
  t.equal(next.status, 202, `the session takes a chunk again, ${waited} ms later`);
  t.ok(waited >= 400, 'after waiting for the stalled PUT to be cut');
  sock.destroy();
});
