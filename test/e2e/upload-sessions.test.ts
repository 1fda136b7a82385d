// Upload sessions over time: abandoned ones are swept after registry.uploadMaxAge (periodically and
// at start-up), active ones are kept, and a session survives a restart (its digest state is
// rebuilt from the bytes on disk). A kill -9 mid-upload leaves nothing under blobs/.
import path from 'node:path';
import t from 'tap';
import { sha256 } from '../fixtures/images.js';
import { rawRequest } from '../fixtures/http-client.js';
import { ageSession, call, openUpload, storeState, withParam } from '../fixtures/oci-push.js';
import { FakeClock, OPEN_AUTH, startStevedore } from '../fixtures/stevedore.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { tmpDir } from '../fixtures/util.js';

const UPSTREAMS = { 'docker.io': { url: 'http://127.0.0.1:1' } };
const CONFIG = { registry: { hosted: ['lab/**'], uploadMaxAge: '24h' } };
/** The spawned server's access rules: anyone may push (as startStevedore's in-process default). */
const OPEN = { auth: OPEN_AUTH };
const data = Buffer.from('session bytes '.repeat(5000));
const digest = sha256(data);

t.test('a session idle longer than uploadMaxAge is swept; its id is then unknown', async (t) => {
  const clock = new FakeClock();
  const sd = await startStevedore(t, { upstreams: UPSTREAMS, config: CONFIG, clock });
  const s = await openUpload(sd.url, 'lab/app');
  await call(sd.url, 'PATCH', s.location, { body: data.subarray(0, 100), headers: { 'content-range': '0-99' } });
  clock.advance(25 * 3_600_000);
  t.equal(await sd.app.registry.sweep(), 1, 'one session removed');
  t.same((await storeState(sd.storagePath)).uploads, [], 'uploads/ is empty');
  const r = await call(sd.url, 'GET', s.location);
  t.equal(r.status, 404);
  t.match(r.body.toString(), /BLOB_UPLOAD_UNKNOWN/);
});

t.test('a session with recent activity is kept, however old it is', async (t) => {
  const clock = new FakeClock();
  const sd = await startStevedore(t, { upstreams: UPSTREAMS, config: CONFIG, clock });
  const s = await openUpload(sd.url, 'lab/app');
  clock.advance(23 * 3_600_000);
  await call(sd.url, 'PATCH', s.location, { body: data.subarray(0, 100), headers: { 'content-range': '0-99' } });
  clock.advance(2 * 3_600_000);
  t.equal(await sd.app.registry.sweep(), 0, 'nothing removed: the last chunk came 2 h ago');
  t.equal((await call(sd.url, 'GET', s.location)).headers.range, '0-99');
});

t.test('a session survives a restart and completes with the right digest (hash rebuilt from disk)', async (t) => {
  const storagePath = path.join(await tmpDir(t, 'stevedore-sessions-'), 'data');
  const first = await startStevedore(t, { upstreams: UPSTREAMS, config: CONFIG, storagePath });
  const s = await openUpload(first.url, 'lab/app');
  await call(first.url, 'PATCH', s.location, { body: data.subarray(0, 30_000), headers: { 'content-range': '0-29999' } });
  await first.stop();
  const second = await startStevedore(t, { upstreams: UPSTREAMS, config: CONFIG, storagePath });
  t.equal((await call(second.url, 'GET', s.location)).headers.range, '0-29999', 'the session is still there');
  await call(second.url, 'PATCH', s.location, { body: data.subarray(30_000), headers: { 'content-range': `30000-${data.length - 1}` } });
  const put = await call(second.url, 'PUT', withParam(s.location, 'digest', digest), { headers: { 'content-length': '0' } });
  t.equal(put.status, 201, put.body.toString());
  t.ok((await rawRequest(`${second.url}/v2/lab/app/blobs/${digest}`)).body.equals(data), 'the blob is whole');
});

t.test('start-up sweeps sessions abandoned before the restart', async (t) => {
  const storagePath = path.join(await tmpDir(t, 'stevedore-sessions-'), 'data');
  const first = await startStevedore(t, { upstreams: UPSTREAMS, config: CONFIG, storagePath });
  const old = await openUpload(first.url, 'lab/app');
  const fresh = await openUpload(first.url, 'lab/app');
  await first.stop();
  await ageSession(storagePath, old.uuid, 48 * 3_600_000);
  const second = await startStevedore(t, { upstreams: UPSTREAMS, config: CONFIG, storagePath });
  t.same((await storeState(storagePath)).uploads.map((f) => f.split('/')[0]).filter((v, i, a) => a.indexOf(v) === i), [fresh.uuid], 'only the fresh session is left');
  t.equal((await call(second.url, 'GET', old.location)).status, 404);
  t.equal((await call(second.url, 'GET', fresh.location)).status, 204);
});

t.test('kill -9 in the middle of an upload leaves nothing under blobs/; the restarted server serves and accepts pushes', async (t) => {
  const storagePath = path.join(await tmpDir(t, 'stevedore-sessions-'), 'data');
  const proc = await spawnStevedore(t, { upstreams: UPSTREAMS, defaultUpstream: 'docker.io', storage: { path: storagePath }, ...CONFIG, ...OPEN });
  const s = await openUpload(proc.url, 'lab/app');
  await call(proc.url, 'PATCH', s.location, { body: data.subarray(0, 20_000), headers: { 'content-range': '0-19999' } });
  // A PATCH whose body never finishes, then the process dies.
  const hanging = call(proc.url, 'PATCH', s.location, { body: data.subarray(20_000, 21_000), headers: { 'content-range': `20000-${data.length - 1}` }, timeoutMs: 3_000 }).catch(() => null);
  await new Promise((r) => setTimeout(r, 300));
  await proc.kill('SIGKILL');
  await hanging;
  const st = await storeState(storagePath);
  t.same(st.blobs, [], 'nothing under blobs/');
  t.same(st.pins, [], 'no pin');
  const sd = await startStevedore(t, { upstreams: UPSTREAMS, config: CONFIG, storagePath });
  const status = await call(sd.url, 'GET', s.location);
  t.equal(status.status, 204);
  t.equal(status.headers.range, '0-19999', 'the session holds whole chunks only');
  await call(sd.url, 'PATCH', s.location, { body: data.subarray(20_000), headers: { 'content-range': `20000-${data.length - 1}` } });
  const put = await call(sd.url, 'PUT', withParam(s.location, 'digest', digest), { headers: { 'content-length': '0' } });
  t.equal(put.status, 201);
  t.same((await storeState(storagePath)).blobs, [digest], 'exactly the verified blob');
});
