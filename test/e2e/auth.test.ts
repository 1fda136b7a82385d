// Client authentication with real clients: stevedore with an htpasswd file (bcrypt) in front of a
// real upstream. skopeo pushes into a hosted repository (Docker token flow: /v2/ challenge, GET
// /token with Basic credentials, Bearer requests) and is refused without, or with wrong,
// credentials — and then nothing is stored; with anonymous pull off, skopeo, containerd
// (`ctr images pull --user`, POST /token) and podman (`podman login`, through a path-prefix
// mirror) pull only with credentials. No secret reaches the logs.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t, { type Test } from 'tap';
import { startContainerd } from '../fixtures/containerd.js';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { preparePodman } from '../fixtures/podman.js';
import { startRegistry } from '../fixtures/registry.js';
import { readDirImage, skopeoCopy } from '../fixtures/skopeo.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';

const USERS = { alice: 'Al1ce-pushes', bob: 'B0b-only-reads' };
const WRONG = 'not-the-Passw0rd';

async function writeHtpasswd(dir: string): Promise<string> {
  const file = path.join(dir, 'htpasswd');
  // $2y$ as Apache's `htpasswd -B` writes it (same algorithm as $2b$); cost 5 keeps the test quick.
  const lines = Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 5).replace(/^\$2b\$/, '$2y$')}`);
  await writeFile(file, `# test users\n${lines.join('\n')}\n`);
  return file;
}

/** No password, and no token handed out, appears in any log line. */
function assertNoSecretsLogged(t: Test, sd: Stevedore, tokens: string[] = []): void {
  const text = JSON.stringify(sd.logs);
  for (const secret of [...Object.values(USERS), WRONG, ...tokens]) t.notOk(text.includes(secret), 'a secret is absent from the logs');
  t.notOk(/Basic [A-Za-z0-9+/=]{8,}|Bearer [A-Za-z0-9._-]{20,}/.test(text), 'no Authorization value in the logs');
}

t.test('pushing into a hosted repository with skopeo needs a user allowed to push', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('auth-e2e/push', { layers: 2 });
  await pushImage(reg.url, 'library/web', '1.0', img);
  const htpasswd = await writeHtpasswd(await tmpDir(t));
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    config: {
      registry: { hosted: ['lab/*'] },
      auth: {
        htpasswd,
        rules: [
          { repository: '**', users: ['*'], actions: ['pull'] },
          { repository: 'lab/*', users: ['alice'], actions: ['pull', 'push'] },
        ],
      },
    },
  });
  const src = path.join(await tmpDir(t), 'src');
  const pulled = await skopeoCopy(`docker://${sd.host}/library/web:1.0`, `dir:${src}`);
  t.equal(pulled.code, 0, `an anonymous pull of proxied content works: ${pulled.stderr}`);

  const before = await sd.storeFiles();
  const refused = async (t: Test, creds: string | undefined, status: RegExp): Promise<void> => {
    const r = await skopeoCopy(`dir:${src}`, `docker://${sd.host}/lab/app:v1`, creds === undefined ? {} : { creds });
    t.not(r.code, 0, 'skopeo failed');
    t.match(r.stderr, status);
    t.same(await sd.storeFiles(), before, 'nothing was stored');
    const m = await fetch(`${sd.url}/v2/lab/app/manifests/v1`);
    t.equal(m.status, 404, 'no manifest under lab/app');
    await m.arrayBuffer();
  };

  await t.test('without credentials: 401, nothing stored', async (t) => {
    const mark = sd.requestLogs().length;
    await refused(t, undefined, /unauthorized|authentication required/i);
    t.ok(sd.requestLogs().slice(mark).some((l) => l.status === 401 && /blobs\/uploads/.test(String(l.path))), 'the upload was answered 401');
  });

  await t.test('with a wrong password: 401 from the token endpoint, nothing stored, failure logged', async (t) => {
    await refused(t, `alice:${WRONG}`, /unauthorized|invalid username or password/i);
    t.ok(sd.logs.some((l) => l.msg === 'failed login' && l.user === 'alice' && l.reason === 'bad-password'), 'failed login logged with the user');
  });

  await t.test('with an unknown user: 401, nothing stored', async (t) => {
    await refused(t, `mallory:${WRONG}`, /unauthorized|invalid username or password/i);
  });

  await t.test('as a user the rules do not let push: 403 denied, nothing stored', async (t) => {
    const mark = sd.requestLogs().length;
    await refused(t, `bob:${USERS.bob}`, /denied|may not push/i);
    t.ok(sd.requestLogs().slice(mark).some((l) => l.status === 403 && l.user === 'bob'), 'the push was answered 403 for bob');
  });

  await t.test('as alice: the push succeeds and pulls back out byte for byte, anonymously', async (t) => {
    const r = await skopeoCopy(`dir:${src}`, `docker://${sd.host}/lab/app:v1`, { creds: `alice:${USERS.alice}` });
    t.equal(r.code, 0, r.stderr);
    const out = path.join(await tmpDir(t), 'out');
    const back = await skopeoCopy(`docker://${sd.host}/lab/app:v1`, `dir:${out}`);
    t.equal(back.code, 0, back.stderr);
    const got = readDirImage(out);
    t.ok(got.manifest.equals(img.manifest.data), 'same manifest bytes');
    for (const b of [img.config, ...img.layers]) t.ok(got.blobs.get(b.digest)?.equals(b.data), `same ${b.digest.slice(0, 19)}`);
    const tokenCalls = sd.requestLogs().filter((l) => String(l.path).startsWith('/token') && l.user === 'alice');
    t.ok(tokenCalls.length > 0, 'skopeo fetched a token as alice');
    t.ok(sd.requestLogs().some((l) => l.method === 'PUT' && /manifests\/v1/.test(String(l.path)) && l.user === 'alice' && l.status === 201), 'the manifest PUT was alice\'s');
  });

  assertNoSecretsLogged(t, sd);
});

t.test('with no htpasswd file, a push is refused with 403 saying there are no users', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('auth-e2e/nousers', { layers: 1 });
  await pushImage(reg.url, 'library/web', '1.0', img);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { registry: { hosted: ['lab/*'] }, auth: {} } });
  const v2 = await fetch(`${sd.url}/v2/`);
  t.equal(v2.status, 200, '/v2/ needs no login: there is nobody to log in as');
  await v2.arrayBuffer();
  const src = path.join(await tmpDir(t), 'src');
  t.equal((await skopeoCopy(`docker://${sd.host}/library/web:1.0`, `dir:${src}`)).code, 0);
  const before = await sd.storeFiles();
  const r = await skopeoCopy(`dir:${src}`, `docker://${sd.host}/lab/app:v1`);
  t.not(r.code, 0);
  t.match(r.stderr, /auth\.htpasswd is not set/);
  t.same(await sd.storeFiles(), before, 'nothing was stored');
});

t.test('with anonymous pull off, skopeo and containerd pull only with credentials', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('auth-e2e/private', { layers: 2 });
  await pushImage(reg.url, 'library/web', '1.0', img);
  const htpasswd = await writeHtpasswd(await tmpDir(t));
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url }, 'ghcr.io': { url: reg.url } },
    defaultUpstream: 'docker.io',
    config: {
      auth: {
        htpasswd,
        anonymousPull: false,
        rules: [
          { repository: 'docker.io/**', users: ['*'], actions: ['pull'] },
          { repository: 'ghcr.io/**', users: ['alice'], actions: ['pull'] },
        ],
      },
    },
  });

  await t.test('/v2/ challenges anonymous clients with stevedore\'s own token endpoint', async (t) => {
    const res = await fetch(`${sd.url}/v2/`);
    t.equal(res.status, 401);
    t.equal(res.headers.get('www-authenticate'), `Bearer realm="${sd.url}/token",service="stevedore"`);
    await res.arrayBuffer();
  });

  await t.test('skopeo without credentials: 401, and the upstream is never asked', async (t) => {
    reg.resetCounts();
    const r = await skopeoCopy(`docker://${sd.host}/library/web:1.0`, `dir:${path.join(await tmpDir(t), 'x')}`);
    t.not(r.code, 0);
    t.match(r.stderr, /unauthorized|authentication required/i);
    t.equal(reg.count('*', /.*/), 0, 'no upstream request');
  });

  await t.test('skopeo with a wrong password: 401', async (t) => {
    const r = await skopeoCopy(`docker://${sd.host}/library/web:1.0`, `dir:${path.join(await tmpDir(t), 'x')}`, { creds: `bob:${WRONG}` });
    t.not(r.code, 0);
    t.match(r.stderr, /unauthorized|invalid username or password/i);
  });

  await t.test('skopeo with credentials pulls byte for byte', async (t) => {
    const dir = path.join(await tmpDir(t), 'img');
    const r = await skopeoCopy(`docker://${sd.host}/library/web:1.0`, `dir:${dir}`, { creds: `bob:${USERS.bob}` });
    t.equal(r.code, 0, r.stderr);
    t.ok(readDirImage(dir).manifest.equals(img.manifest.data));
  });

  const ctrd = await ctrdP;
  const hostsDir = ctrd.writeHostsToml('docker.io', sd.url);

  await t.test('ctr without --user fails', async (t) => {
    const r = await ctrd.pull('docker.io/library/web:1.0', { hostsDir });
    t.not(r.code, 0);
    t.equal(await ctrd.imageDigest('docker.io/library/web:1.0'), null);
  });

  await t.test('ctr --user runs the token flow against stevedore and pulls', async (t) => {
    const mark = sd.requestLogs().length;
    const r = await ctrd.pull('docker.io/library/web:1.0', { hostsDir, user: `alice:${USERS.alice}` });
    t.equal(r.code, 0, r.stderr);
    t.equal(await ctrd.imageDigest('docker.io/library/web:1.0'), img.manifest.digest);
    const seen = sd.requestLogs().slice(mark);
    t.ok(seen.some((l) => l.status === 401 && /manifests\/1\.0\?ns=docker\.io/.test(String(l.path))), 'first asked anonymously: 401');
    t.ok(seen.some((l) => l.method === 'POST' && l.path === '/token' && l.status === 200 && l.user === 'alice'), 'then a token for alice, by the OAuth2 POST form');
    t.ok(seen.some((l) => /blobs\/sha256:/.test(String(l.path)) && l.status === 200 && l.user === 'alice'), 'blobs fetched as alice');
  });

  await t.test('ctr --user pulls from another upstream by ns: the token covers ghcr.io/<name>, not docker.io/<name>', async (t) => {
    const ghcrHosts = ctrd.writeHostsToml('ghcr.io', sd.url);
    const denied = await ctrd.pull('ghcr.io/library/web:1.0', { hostsDir: ghcrHosts, user: `bob:${USERS.bob}` });
    t.not(denied.code, 0, 'bob may pull docker.io/** only');
    const r = await ctrd.pull('ghcr.io/library/web:1.0', { hostsDir: ghcrHosts, user: `alice:${USERS.alice}` });
    t.equal(r.code, 0, r.stderr);
    t.equal(await ctrd.imageDigest('ghcr.io/library/web:1.0'), img.manifest.digest);
  });

  await t.test('ctr --user with a wrong password fails', async (t) => {
    await ctrd.removeImage('docker.io/library/web:1.0');
    const r = await ctrd.pull('docker.io/library/web:1.0', { hostsDir, user: `alice:${WRONG}` });
    t.not(r.code, 0);
  });

  assertNoSecretsLogged(t, sd);
});

t.test('podman logs in to a path-prefix mirror and pulls through it', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('auth-e2e/podman', { layers: 1 });
  await pushImage(reg.url, 'library/app', '1.0', img);
  const htpasswd = await writeHtpasswd(await tmpDir(t));
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { auth: { htpasswd, anonymousPull: false } } });
  // The primary location is a closed loopback port: a failed mirror must not send podman (or a
  // DNS query) off this machine.
  const pm = await preparePodman(t, {
    registriesConf: `[[registry]]\nprefix = "docker.io"\nlocation = "127.0.0.1:1"\ninsecure = true\n[[registry.mirror]]\nlocation = "${sd.host}/docker.io"\ninsecure = true\n`,
  });
  const anonymous = await pm.pull('docker.io/library/app:1.0');
  t.not(anonymous.code, 0, 'without a login the mirror refuses');
  t.match(anonymous.stderr, /authentication required to pull on docker\.io\/library\/app/);
  const badLogin = await pm.login(sd.host, 'bob', WRONG);
  t.not(badLogin.code, 0, 'podman login with a wrong password fails');
  const login = await pm.login(sd.host, 'bob', USERS.bob);
  t.equal(login.code, 0, login.stderr);
  const r = await pm.pull('docker.io/library/app:1.0');
  t.equal(r.code, 0, r.stderr);
  t.equal(await pm.imageDigest('docker.io/library/app:1.0'), img.manifest.digest);
  t.ok(sd.requestLogs().some((l) => l.path === '/v2/docker.io/library/app/manifests/1.0' && l.status === 200 && l.user === 'bob'), 'bob pulled the manifest');
  assertNoSecretsLogged(t, sd);
});
