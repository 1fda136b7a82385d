// stevedore as a client of a registry behind Docker Hub style Bearer token auth: a real CNCF
// distribution with `auth.token`, and a token server from the fixtures that signs RS256 JWTs.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import t, { type Test } from 'tap';
import { buildDockerImage, pushImage, pushImageWithBasic } from '../fixtures/images.js';
import { BASIC_USER, startRegistry } from '../fixtures/registry.js';
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

/**
 * The registry and its token server behind one origin (`/token` goes to the token server, the
 * challenge's realm is rewritten to it), as a registry serving its own token endpoint over plain
 * http is: the configured credentials go to a token realm only over https or on the upstream's
 * own origin (test/e2e/upstream-trust.test.ts has the refusal).
 */
async function startSameOriginFront(t: Test, registryUrl: string, tokenUrl: string): Promise<string> {
  let self = '';
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const target = new URL(req.url?.startsWith('/token') ? tokenUrl : registryUrl);
    const forward = http.request(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: { ...req.headers, host: target.host } },
      (up) => {
        const headers = { ...up.headers };
        const challenge = headers['www-authenticate'];
        if (typeof challenge === 'string') headers['www-authenticate'] = challenge.replace(/realm="[^"]*"/, `realm="${self}/token"`);
        res.writeHead(up.statusCode ?? 502, headers);
        up.pipe(res);
      },
    );
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  self = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  t.teardown(() => new Promise<void>((resolve) => {
    server.close(() => resolve());
    for (const s of sockets) s.destroy();
  }));
  return self;
}

t.test('configured credentials', async (t) => {
  const tokens = await startTokenServer({ users: { robot: 's3cret' } });
  t.teardown(() => tokens.stop());
  const reg = await startRegistry({ token: tokens });
  t.teardown(() => reg.stop());
  const img = buildDockerImage('token-auth/creds', { layers: 1 });
  await pushImage(reg.url, 'team/private', 'v1', img, { token: tokens, credentials: { username: 'robot', password: 's3cret' } });
  const front = await startSameOriginFront(t, reg.url, tokens.url);

  await t.test('the token request authenticates with the configured username and password', async (t) => {
    const sd = await startStevedore(t, {
      upstreams: { 'docker.io': { url: front, username: 'robot', password: 's3cret' } },
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
      upstreams: { 'docker.io': { url: front, username: 'robot', password: 'wrong' } },
    });
    const res = await fetch(`${sd.url}/v2/docker.io/team/private/manifests/v1`);
    const body = (await res.json()) as { errors: Array<{ code: string; message: string }> };
    t.equal(res.status, 404, 'containerd moves on to its next host on a 404');
    t.equal(body.errors[0]?.code, 'NAME_UNKNOWN');
    t.match(body.errors[0]?.message, /docker\.io.*refused the configured credentials/);
    t.same((await sd.storeFiles()).filter((f) => f.startsWith('blobs/') || f.startsWith('repositories/')), []);
  });
});

t.test('Basic auth upstream (distribution with htpasswd)', async (t) => {
  const reg = await startRegistry({ basicAuth: true });
  t.teardown(() => reg.stop());
  const auth = `Basic ${Buffer.from(`${BASIC_USER.username}:${BASIC_USER.password}`).toString('base64')}`;
  const ping = await fetch(`${reg.directUrl}/v2/`);
  await ping.arrayBuffer();
  t.equal(ping.status, 401, 'the registry challenges');
  t.match(ping.headers.get('www-authenticate') ?? '', /^Basic /);
  const img = buildDockerImage('token-auth/basic', { layers: 1 });
  await pushImageWithBasic(reg.directUrl, 'library/basic', 'v1', auth, img);

  await t.test('configured credentials are sent as Basic after the challenge', async (t) => {
    const sd = await startStevedore(t, {
      upstreams: { 'docker.io': { url: reg.url, username: BASIC_USER.username, password: BASIC_USER.password } },
    });
    reg.resetCounts();
    const dir = path.join(await tmpDir(t), 'img');
    const r = await skopeoCopy(`docker://${sd.host}/docker.io/library/basic:v1`, `dir:${dir}`);
    t.equal(r.code, 0, r.stderr);
    t.ok(readDirImage(dir).manifest.equals(img.manifest.data), 'manifest bytes identical');
    const ok = reg.requests.filter((q) => q.status === 200);
    t.ok(ok.length >= 3);
    t.ok(ok.every((q) => q.headers.authorization === auth), 'every successful upstream request carried the Basic credentials');
    t.ok(reg.requests.filter((q) => q.status === 401).length <= 1, 'challenged at most once, then Basic went up front');
  });

  await t.test('without credentials the pull fails with a clear error', async (t) => {
    const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } } });
    const res = await fetch(`${sd.url}/v2/docker.io/library/basic/manifests/v1`);
    const body = (await res.json()) as { errors: Array<{ code: string; message: string }> };
    t.equal(res.status, 404);
    t.match(body.errors[0]?.message, /requires authentication.*no credentials configured/);
  });
});
