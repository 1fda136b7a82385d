// A repository serves only what it links (docs/ARCHITECTURE.md rule 9; security review, issue 12, finding 1).
// Alice pushes a blob to the hosted, private `lab/secret`. Anyone asking for that digest under a
// proxied name gets it only if the upstream confirms that repository has it: never because the
// upstream is rate-limited, its breaker is open, it is unreachable, or the proxy is offline. A
// user who may seed an upstream namespace cannot link the secret into it by naming it in a
// manifest while the upstream fails. A download started for one repository is not joined by
// another the upstream does not confirm.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t, { type Test } from 'tap';
import { makeBlob, pushBlob } from '../fixtures/images.js';
import { rawRequest, ociErrors, type RawResponse } from '../fixtures/http-client.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';

const ALICE = `Basic ${Buffer.from('alice:Al1ce-pw').toString('base64')}`;
const BOB = `Basic ${Buffer.from('bob:B0b-pw').toString('base64')}`;
const MiB = 1024 * 1024;

async function htpasswd(): Promise<string> {
  const file = path.join(await tmpDir(t), 'htpasswd');
  await writeFile(file, `alice:${bcrypt.hashSync('Al1ce-pw', 4)}\nbob:${bcrypt.hashSync('B0b-pw', 4)}\n`);
  return file;
}

const secret = makeBlob(randomBytes(64 * 1024), 'application/octet-stream');

/** stevedore with hosted lab/** (alice), bob seeding docker.io/**, anonymous pull of proxied names. */
async function setup(upstreams: Record<string, Record<string, unknown>>, extra: Record<string, unknown> = {}): Promise<Stevedore> {
  const sd = await startStevedore(t, {
    upstreams,
    config: {
      registry: { hosted: ['lab/**'] },
      auth: {
        htpasswd: await htpasswd(),
        rules: [
          { repository: 'lab/**', users: ['alice'], actions: ['pull', 'push', 'delete'] },
          { repository: 'docker.io/**', users: ['anonymous', '*'], actions: ['pull'] },
          { repository: 'docker.io/**', users: ['bob'], actions: ['pull', 'push'] },
        ],
      },
      ...extra,
    },
  });
  const post = await rawRequest(`${sd.url}/v2/lab/secret/blobs/uploads/?digest=${secret.digest}`, {
    method: 'POST',
    headers: { authorization: ALICE, 'content-type': 'application/octet-stream' },
    body: secret.data,
  });
  if (post.status !== 201) throw new Error(`pushing the secret: ${post.status} ${post.body.toString()}`);
  return sd;
}

function refusedWithout(t: Test, r: RawResponse, what: string): void {
  t.not(r.status, 200, `${what}: not 200 (got ${r.status} ${ociErrors(r)?.[0]?.code ?? ''})`);
  t.notOk(r.body.includes(secret.data.subarray(0, 1024)), `${what}: no secret byte in the answer`);
}

t.test('with a healthy upstream, the secret is unknown under a proxied name', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const sd = await setup({ 'docker.io': { url: reg.url } });
  const r = await rawRequest(`${sd.url}/v2/library/whatever/blobs/${secret.digest}`);
  t.equal(r.status, 404);
  t.equal(ociErrors(r)?.[0]?.code, 'BLOB_UNKNOWN');
});

t.test('with the upstream rate-limiting, the secret is not served under a proxied name', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const sd = await setup({ 'docker.io': { url: reg.url } });
  reg.setFault({ kind: 'status', status: 429, headers: { 'retry-after': '60' }, body: '{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}' });
  for (const p of ['library/whatever', 'library/other']) {
    const get = await rawRequest(`${sd.url}/v2/${p}/blobs/${secret.digest}`);
    refusedWithout(t, get, `GET ${p}`);
    t.equal(get.status, 429, 'the upstream failure is the answer, as for content never stored');
    const head = await rawRequest(`${sd.url}/v2/${p}/blobs/${secret.digest}`, { method: 'HEAD' });
    t.not(head.status, 200, `HEAD ${p} is not 200`);
    t.equal(head.headers['content-length'] === String(secret.size) && head.status === 200, false, 'no size given away');
  }
  const byManifest = await rawRequest(`${sd.url}/v2/library/whatever/manifests/${secret.digest}`);
  refusedWithout(t, byManifest, 'GET as a manifest');
});

t.test('with the breaker open, the secret is not served under a proxied name', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const sd = await setup({ 'docker.io': { url: reg.url } }, { upstreamPolicy: { breakerFailures: 1, breakerOpenFor: '1m' } });
  reg.setFault({ kind: 'status', status: 503, body: '' });
  // One failure opens the breaker; the next requests are not even sent upstream.
  await rawRequest(`${sd.url}/v2/library/other/manifests/latest`);
  reg.setFault(null);
  reg.resetCounts();
  refusedWithout(t, await rawRequest(`${sd.url}/v2/library/whatever/blobs/${secret.digest}`), 'GET with the breaker open');
  t.equal(reg.count('*', /./), 0, 'the upstream was not asked (breaker open)');
});

t.test('with the upstream unreachable, the secret is not served under a proxied name', async (t) => {
  const sd = await setup({ 'docker.io': { url: 'http://127.0.0.1:1' } });
  const r = await rawRequest(`${sd.url}/v2/library/whatever/blobs/${secret.digest}`);
  refusedWithout(t, r, 'GET');
  t.equal(r.status, 502, 'UPSTREAM_UNAVAILABLE');
});

t.test('offline, the secret is not served under a proxied name', async (t) => {
  const sd = await setup({ 'docker.io': { url: 'http://127.0.0.1:1' } }, { offline: true });
  const r = await rawRequest(`${sd.url}/v2/library/whatever/blobs/${secret.digest}`);
  refusedWithout(t, r, 'GET');
  t.equal(ociErrors(r)?.[0]?.code, 'OFFLINE');
});

t.test('while the upstream fails, a manifest naming the secret cannot link it into a seeded namespace', async (t) => {
  const sd = await setup({ 'docker.io': { url: 'http://127.0.0.1:1' } });
  const config = makeBlob(Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'), 'application/vnd.oci.image.config.v1+json');
  const push = await rawRequest(`${sd.url}/v2/docker.io/library/seeded/blobs/uploads/?digest=${config.digest}`, {
    method: 'POST',
    headers: { authorization: BOB, 'content-type': 'application/octet-stream' },
    body: config.data,
  });
  t.equal(push.status, 201, 'bob may seed docker.io/library/seeded');
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: secret.digest, size: secret.size }],
    }),
  );
  const put = await rawRequest(`${sd.url}/v2/docker.io/library/seeded/manifests/v1`, {
    method: 'PUT',
    headers: { authorization: BOB, 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
    body: manifest,
  });
  t.not(put.status, 201, `the manifest is refused (${put.body.toString()})`);
  t.equal(ociErrors(put)?.[0]?.code, 'MANIFEST_BLOB_UNKNOWN');
  refusedWithout(t, await rawRequest(`${sd.url}/v2/docker.io/library/seeded/blobs/${secret.digest}`, { headers: { authorization: BOB } }), 'GET through the seeded name');
});

t.test('a download started for one repository is not joined by another the upstream does not confirm', async (t) => {
  const reg = await startRegistry({ bytesPerSecond: 2 * MiB });
  t.teardown(() => reg.stop());
  const priv = makeBlob(randomBytes(2 * MiB), 'application/octet-stream');
  await pushBlob(reg.directUrl, 'acme/private', priv);
  const sd = await setup({ 'docker.io': { url: reg.url } });
  const owner = rawRequest(`${sd.url}/v2/acme/private/blobs/${priv.digest}`);
  await new Promise((r) => setTimeout(r, 200)); // the download is under way
  const other = await rawRequest(`${sd.url}/v2/library/whatever/blobs/${priv.digest}`);
  t.equal(other.status, 404, 'another name gets BLOB_UNKNOWN while the download runs');
  t.notOk(other.body.includes(priv.data.subarray(0, 1024)), 'and none of its bytes');
  const mine = await owner;
  t.ok(mine.status === 200 && mine.body.equals(priv.data), 'the repository that asked gets every byte');
  const after = await rawRequest(`${sd.url}/v2/library/whatever/blobs/${priv.digest}`);
  t.equal(after.status, 404, 'and once stored, still unknown under the other name');
});

t.test('through a pullable proxied name, a stored digest it does not link and a digest stored nowhere get the same answer', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const sd = await setup({ 'docker.io': { url: reg.url } });
  const unknown = makeBlob(randomBytes(64 * 1024), 'application/octet-stream').digest;
  /** What a client can compare: status line, headers (but the date and request id), body; the digest asked for made neutral. */
  const seen = (r: RawResponse, digest: string): unknown => {
    const { date: _date, 'x-request-id': _id, ...headers } = r.headers;
    const neutral = (s: string): string => s.split(digest).join('<digest>');
    return { status: `${r.status} ${neutral(r.statusMessage)}`, headers: JSON.parse(neutral(JSON.stringify(headers))) as unknown, body: neutral(r.body.toString()) };
  };
  for (const method of ['GET', 'HEAD']) {
    for (const kind of ['blobs', 'manifests']) {
      const ask = (d: string): Promise<RawResponse> => rawRequest(`${sd.url}/v2/library/whatever/${kind}/${d}`, { method, headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
      const stored = await ask(secret.digest);
      const nowhere = await ask(unknown);
      t.equal(stored.status, 404, `${method} ${kind}: the stored digest is unknown here`);
      t.same(seen(stored, secret.digest), seen(nowhere, unknown), `${method} ${kind}: the same status, headers and body as a digest stored nowhere`);
    }
  }
});
