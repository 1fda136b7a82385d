// Cross-site request forgery through a browser's Basic credentials (security review 2, issue 25,
// item 6). A browser that logged in to the dashboard keeps alice's Basic credentials for the origin
// and sends them with a form another site makes it submit: `POST /v2/lab/pub/blobs/uploads/
// ?mount=<private digest>&from=priv/secret`, Origin https://evil.example, a form content type, was
// answered 201 and bob then read alice's private blob from lab/pub. Registry clients never send an
// Origin, Sec-Fetch-Site or a form content type on a write: such writes are refused 403 DENIED.
// The browser itself is driven in dashboard.test.ts.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { makeBlob } from '../fixtures/images.js';
import { ociErrors, rawRequest, type RawResponse } from '../fixtures/http-client.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';

const ALICE = `Basic ${Buffer.from('alice:Al1ce-pw').toString('base64')}`;
const BOB = `Basic ${Buffer.from('bob:B0b-pw').toString('base64')}`;
const secret = makeBlob(randomBytes(16 * 1024), 'application/octet-stream');

/** priv/** is alice's alone; lab/** is alice's to push and bob's to read. */
async function setup(): Promise<Stevedore> {
  const file = path.join(await tmpDir(t), 'htpasswd');
  await writeFile(file, `alice:${bcrypt.hashSync('Al1ce-pw', 4)}\nbob:${bcrypt.hashSync('B0b-pw', 4)}\n`);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: {
      registry: { hosted: ['lab/**', 'priv/**'], delete: true },
      auth: {
        htpasswd: file,
        anonymousPull: false,
        rules: [
          { repository: '**', users: ['alice'], actions: ['pull', 'push', 'delete'] },
          { repository: 'lab/**', users: ['bob'], actions: ['pull'] },
        ],
      },
    },
  });
  const post = await rawRequest(`${sd.url}/v2/priv/secret/blobs/uploads/?digest=${secret.digest}`, {
    method: 'POST',
    headers: { authorization: ALICE, 'content-type': 'application/octet-stream' },
    body: secret.data,
  });
  if (post.status !== 201) throw new Error(`pushing the secret: ${post.status} ${post.body.toString()}`);
  return sd;
}

const mountUrl = (sd: Stevedore): string => `${sd.url}/v2/lab/pub/blobs/uploads/?mount=${secret.digest}&from=priv/secret`;

async function bobReadsSecret(sd: Stevedore): Promise<RawResponse> {
  return rawRequest(`${sd.url}/v2/lab/pub/blobs/${secret.digest}`, { headers: { authorization: BOB } });
}

t.test("a cross-site form POST carrying alice's Basic credentials is refused 403 DENIED, logged, and mounts nothing", async (t) => {
  const sd = await setup();
  const r = await rawRequest(mountUrl(sd), {
    method: 'POST',
    headers: { authorization: ALICE, origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded', 'sec-fetch-site': 'cross-site' },
    body: 'x=1',
  });
  t.equal(r.status, 403, `refused (${r.body.toString().slice(0, 200)})`);
  t.equal(ociErrors(r)?.[0]?.code, 'DENIED');
  t.match(r.headers['content-type'], /^application\/json/);
  const read = await bobReadsSecret(sd);
  t.equal(read.status, 404, 'bob cannot read the private blob from lab/pub');
  t.notOk(read.body.includes(secret.data.subarray(0, 256)), 'no secret byte reached bob');
  t.match(
    sd.logs.find((l) => l.msg === 'cross-site write refused'),
    { method: 'POST', origin: 'https://evil.example', secFetchSite: 'cross-site', contentType: 'application/x-www-form-urlencoded' },
    'the refusal is logged with what gave it away',
  );
  t.ok(sd.logs.some((l) => l.msg === 'request' && l.status === 403 && (l.error as { code?: string } | undefined)?.code === 'DENIED'), 'and in the access log');
});

t.test('each sign of a browser write is refused on its own: a foreign Origin, Sec-Fetch-Site cross-site or same-site, a form content type', async (t) => {
  const sd = await setup();
  const cases: Array<[string, Record<string, string>]> = [
    ['Origin https://evil.example (octet-stream)', { origin: 'https://evil.example', 'content-type': 'application/octet-stream' }],
    ['Origin null', { origin: 'null' }],
    ['Origin of another port on this host', { origin: `http://127.0.0.1:${sd.port + 1}` }],
    ['Sec-Fetch-Site: cross-site', { 'sec-fetch-site': 'cross-site' }],
    ['Sec-Fetch-Site: same-site', { 'sec-fetch-site': 'same-site' }],
    ['application/x-www-form-urlencoded', { 'content-type': 'application/x-www-form-urlencoded' }],
    ['multipart/form-data', { 'content-type': 'multipart/form-data; boundary=x' }],
    ['text/plain', { 'content-type': 'Text/Plain;charset=UTF-8' }],
  ];
  for (const [what, headers] of cases) {
    const r = await rawRequest(mountUrl(sd), { method: 'POST', headers: { authorization: ALICE, ...headers } });
    t.equal(r.status, 403, `${what}: 403`);
    t.equal(ociErrors(r)?.[0]?.code, 'DENIED', `${what}: DENIED`);
  }
  const put = await rawRequest(`${sd.url}/v2/lab/pub/manifests/v1`, {
    method: 'PUT',
    headers: { authorization: ALICE, origin: 'https://evil.example', 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
    body: '{}',
  });
  t.equal(put.status, 403, 'a manifest PUT with a foreign Origin too');
  const del = await rawRequest(`${sd.url}/v2/priv/secret/blobs/${secret.digest}`, { method: 'DELETE', headers: { authorization: ALICE, 'sec-fetch-site': 'cross-site' } });
  t.equal(del.status, 403, 'a DELETE with Sec-Fetch-Site: cross-site too');
  t.equal((await rawRequest(`${sd.url}/v2/priv/secret/blobs/${secret.digest}`, { headers: { authorization: ALICE } })).status, 200, 'the blob is still there');
  const token = await rawRequest(`${sd.url}/token`, {
    method: 'POST',
    headers: { origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=password&username=alice&password=guess&service=stevedore&scope=repository:lab/pub:pull',
  });
  t.equal(token.status, 403, 'a cross-site POST /token (guessing through a victim browser) too');
  t.notOk(sd.logs.some((l) => l.msg === 'failed login'), 'no password was checked for it');
  t.equal((await bobReadsSecret(sd)).status, 404, 'nothing was mounted');
});

t.test('registry clients are not refused: no Origin, octet-stream or no content type, a manifest media type, this server as Origin', async (t) => {
  const sd = await setup();
  const mount = await rawRequest(mountUrl(sd), { method: 'POST', headers: { authorization: ALICE } });
  t.equal(mount.status, 201, 'a mount with no content type (what Go clients send on an empty POST)');
  const own = await rawRequest(mountUrl(sd).replace('lab/pub', 'lab/other'), {
    method: 'POST',
    headers: { authorization: ALICE, origin: sd.url, 'sec-fetch-site': 'same-origin' },
  });
  t.equal(own.status, 201, "this server's own origin, same-origin");
  const blob = makeBlob(randomBytes(1024), 'application/octet-stream');
  const open = await rawRequest(`${sd.url}/v2/lab/app/blobs/uploads/`, { method: 'POST', headers: { authorization: ALICE } });
  t.equal(open.status, 202);
  const location = String(open.headers.location);
  const patch = await rawRequest(`${sd.url}${location}`, { method: 'PATCH', headers: { authorization: ALICE, 'content-type': 'application/octet-stream' }, body: blob.data });
  t.equal(patch.status, 202, 'PATCH with application/octet-stream');
  const next = String(patch.headers.location);
  const close = await rawRequest(`${sd.url}${next}${next.includes('?') ? '&' : '?'}digest=${blob.digest}`, { method: 'PUT', headers: { authorization: ALICE } });
  t.equal(close.status, 201, 'a closing PUT with no body and no content type');
  const config = makeBlob(Buffer.from('{}'), 'application/vnd.oci.image.config.v1+json');
  t.equal(
    (await rawRequest(`${sd.url}/v2/lab/app/blobs/uploads/?digest=${config.digest}`, { method: 'POST', headers: { authorization: ALICE, 'content-type': 'application/octet-stream' }, body: config.data }))
      .status,
    201,
  );
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: blob.digest, size: blob.size }],
  });
  const put = await rawRequest(`${sd.url}/v2/lab/app/manifests/v1`, {
    method: 'PUT',
    headers: { authorization: ALICE, 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
    body: manifest,
  });
  t.equal(put.status, 201, 'a manifest PUT with its media type');
  const token = await rawRequest(`${sd.url}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=password&username=alice&password=Al1ce-pw&service=stevedore&scope=repository:lab/app:pull',
  });
  t.equal(token.status, 200, "containerd's POST /token form (no Origin) still works");
  t.notOk(sd.logs.some((l) => l.msg === 'cross-site write refused'), 'nothing was refused');
});
