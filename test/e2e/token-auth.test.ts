// stevedore as a client of a registry behind Docker Hub style Bearer token auth: a real CNCF
// distribution with `auth.token`, and a token server from the fixtures that signs RS256 JWTs.
import path from 'node:path';
import t from 'tap';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { readDirImage, skopeoCopy } from '../fixtures/skopeo.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { startTokenServer } from '../fixtures/token-server.js';
import { tmpDir } from '../fixtures/util.js';

t.test('anonymous token flow', async (t) => {
  const tokens = await startTokenServer();
  t.teardown(() => tokens.stop());
  const reg = await startRegistry({ token: tokens });
  t.teardown(() => reg.stop());
  const img = buildDockerImage('token-auth/anon', { layers: 2 });
  await pushImage(reg.url, 'library/secure', 'v1', img, { token: tokens });
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } } });

  await t.test('skopeo pulls through stevedore, which fetched a pull token for the repository', async (t) => {
    tokens.resetCounts();
    reg.resetCounts();
    const dir = path.join(await tmpDir(t), 'img');
    const r = await skopeoCopy(`docker://${sd.host}/docker.io/library/secure:v1`, `dir:${dir}`);
    t.equal(r.code, 0, r.stderr);
    const got = readDirImage(dir);
    t.ok(got.manifest.equals(img.manifest.data), 'manifest bytes identical');
    for (const b of [img.config, ...img.layers]) t.ok(got.blobs.get(b.digest)?.equals(b.data), 'blob identical');
    t.ok(tokens.requests.length >= 1, 'asked the token server');
    for (const q of tokens.requests) {
      t.equal(q.scope, 'repository:library/secure:pull', 'scope from the challenge: pull only');
      t.equal(q.service, tokens.service, 'service from the challenge');
      t.equal(q.user, null, 'anonymous');
    }
    t.equal(tokens.requests.length, 1, 'one token served every request of the pull (cached per scope)');
    const authed = reg.requests.filter((q) => q.status === 200);
    t.ok(authed.length > 0);
    t.ok(authed.every((q) => /^Bearer /.test(String(q.headers.authorization))), 'every successful upstream request carried the Bearer token');
  });

  await t.test('a second repository gets a token of its own scope', async (t) => {
    await pushImage(reg.url, 'library/other', 'v1', buildDockerImage('token-auth/other', { layers: 1 }), { token: tokens });
    tokens.resetCounts();
    const res = await fetch(`${sd.url}/v2/docker.io/library/other/manifests/v1`);
    t.equal(res.status, 200);
    await res.arrayBuffer();
    t.same(tokens.requests.map((q) => q.scope), ['repository:library/other:pull']);
  });
});

t.test('configured credentials', async (t) => {
  const tokens = await startTokenServer({ users: { robot: 's3cret' } });
  t.teardown(() => tokens.stop());
  const reg = await startRegistry({ token: tokens });
  t.teardown(() => reg.stop());
  const img = buildDockerImage('token-auth/creds', { layers: 1 });
  await pushImage(reg.url, 'team/private', 'v1', img, { token: tokens, credentials: { username: 'robot', password: 's3cret' } });

  await t.test('the token request authenticates with the configured username and password', async (t) => {
    const sd = await startStevedore(t, {
      upstreams: { 'docker.io': { url: reg.url, username: 'robot', password: 's3cret' } },
    });
    tokens.resetCounts();
    const res = await fetch(`${sd.url}/v2/docker.io/team/private/manifests/v1`);
    t.equal(res.status, 200);
    t.ok(Buffer.from(await res.arrayBuffer()).equals(img.manifest.data));
    t.ok(tokens.requests.length >= 1);
    t.ok(tokens.requests.every((q) => q.user === 'robot'), 'every token request authenticated as robot');
    t.notOk(JSON.stringify(sd.logs).includes('s3cret'), 'the password never appears in the logs');
  });

  await t.test('wrong credentials give a clear OCI error and store nothing', async (t) => {
    const sd = await startStevedore(t, {
      upstreams: { 'docker.io': { url: reg.url, username: 'robot', password: 'wrong' } },
    });
    const res = await fetch(`${sd.url}/v2/docker.io/team/private/manifests/v1`);
    const body = (await res.json()) as { errors: Array<{ code: string; message: string }> };
    t.equal(res.status, 404, 'containerd moves on to its next host on a 404');
    t.equal(body.errors[0]?.code, 'NAME_UNKNOWN');
    t.match(body.errors[0]?.message, /docker\.io.*refused the configured credentials/);
    t.same((await sd.storeFiles()).filter((f) => f.startsWith('blobs/') || f.startsWith('repositories/')), []);
  });
});
