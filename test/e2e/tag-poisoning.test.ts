// Tag poisoning under the default rules (security review, issue 12, finding 5): with no `auth.rules`
// a user may push into the hosted repositories, never into an upstream's namespace, so nobody can
// plant `docker.io/...:latest` that everyone would be served while the upstream is rate-limited.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { rawRequest, ociErrors } from '../fixtures/http-client.js';
import { makeBlob } from '../fixtures/images.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { stevedoreCli } from '../fixtures/cli.js';
import { tmpDir } from '../fixtures/util.js';

const MALLORY = `Basic ${Buffer.from('mallory:M4llory-pw').toString('base64')}`;

t.test('under the default rules a user pushes into hosted repositories but not into an upstream namespace', async (t) => {
  const file = path.join(await tmpDir(t), 'htpasswd');
  await writeFile(file, `mallory:${bcrypt.hashSync('M4llory-pw', 4)}\n`);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    // auth without rules: the product's defaults (the fixture's open rules are replaced).
    config: { registry: { hosted: ['lab/**'] }, auth: { htpasswd: file } },
  });
  const blob = makeBlob(Buffer.from('{"planted":true}'), 'application/octet-stream');
  const hosted = await rawRequest(`${sd.url}/v2/lab/app/blobs/uploads/?digest=${blob.digest}`, {
    method: 'POST',
    headers: { authorization: MALLORY, 'content-type': 'application/octet-stream' },
    body: blob.data,
  });
  t.equal(hosted.status, 201, 'a push into a hosted repository is allowed');
  for (const name of ['docker.io/library/alpine', 'library/alpine?ns=docker.io']) {
    const [p, q] = name.split('?');
    const r = await rawRequest(`${sd.url}/v2/${p}/manifests/latest${q ? `?${q}` : ''}`, {
      method: 'PUT',
      headers: { authorization: MALLORY, 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
      body: '{}',
    });
    t.equal(r.status, 403, `PUT ${name}:latest is denied`);
    t.equal(ociErrors(r)?.[0]?.code, 'DENIED');
  }
  t.notOk((await sd.storeFiles()).some((f) => f.startsWith('repositories/docker.io')), 'nothing was written under the docker.io namespace');
});

// Security review 2 (issue 25, item 4): `registry.hosted: ["**"]` made every name hosted, so a push to
// /v2/docker.io/pub/app was served to path-prefix (podman, CRI-O) pulls, and the default grant of push
// on `**` let a user seed `?ns=docker.io` while the upstream was down (served stale to containerd).
t.test('stevedore serve refuses a hosted pattern that can match an upstream namespace, naming the key (exit 2)', async (t) => {
  const dir = await tmpDir(t);
  for (const [hosted, key] of [
    [['**'], 'registry.hosted.0'],
    [['lab/**', 'docker.io/**'], 'registry.hosted.1'],
  ] as const) {
    const file = path.join(dir, 'stevedore.yaml');
    await writeFile(
      file,
      JSON.stringify({ listen: '127.0.0.1:0', storage: { path: path.join(dir, 'data') }, upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, registry: { hosted } }),
    );
    const r = await stevedoreCli(['serve', '--config', file], { timeoutMs: 30_000 });
    t.equal(r.code, 2, `hosted ${JSON.stringify(hosted)}: exit 2 (${r.stderr.slice(0, 300)})`);
    t.match(r.stderr, new RegExp(`${key.replace(/\./g, '\\.')}: .*docker\\.io`), 'the message names the key and the upstream');
  }
});
