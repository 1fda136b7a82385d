// Access rules on the real server, request by request: what each action needs (pull, push as
// pull+push, delete), that a mount never reads a repository the pusher may not pull, the catalog
// (listing only what the user may pull), /metrics behind a login when anonymous pull is off, HEAD
// answers carrying the challenge, and the access log naming the user.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { stevedoreCli } from '../fixtures/cli.js';
import { ociErrors, rawRequest, type RawResponse } from '../fixtures/http-client.js';
import { sha256 } from '../fixtures/images.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';

const USERS = { admin: 'adm1n-pw', alice: 'al1ce-pw', bob: 'b0b-pw' };
const basic = (u: keyof typeof USERS): string => `Basic ${Buffer.from(`${u}:${USERS[u]}`).toString('base64')}`;

t.test('access rules on the real server', async (t) => {
  const dir = await tmpDir(t);
  const htpasswd = path.join(dir, 'htpasswd');
  await writeFile(htpasswd, Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4)}`).join('\n'));
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: {
      offline: true,
      registry: { hosted: ['lab/*', 'secret/*'], delete: true },
      auth: {
        htpasswd,
        anonymousPull: false,
        groups: { admins: ['admin'] },
        rules: [
          { repository: 'lab/*', users: ['alice', 'bob'], actions: ['pull'] },
          { repository: 'lab/*', users: ['alice'], actions: ['push'] },
          { repository: '**', groups: ['admins'], actions: ['pull', 'push', 'delete'] },
        ],
      },
    },
  });
  const req = (method: string, p: string, opts: { auth?: keyof typeof USERS; body?: Buffer; headers?: Record<string, string> } = {}): Promise<RawResponse> =>
    rawRequest(`${sd.url}${p}`, {
      method,
      headers: { ...(opts.auth ? { authorization: basic(opts.auth) } : {}), ...(opts.body ? { 'content-type': 'application/octet-stream' } : {}), ...opts.headers },
      ...(opts.body ? { body: opts.body } : {}),
    });
  const blob = Buffer.from('a blob only admins may read');
  const digest = sha256(blob);

  await t.test('admin pushes a blob into secret/db in one request', async (t) => {
    const r = await req('POST', `/v2/secret/db/blobs/uploads/?digest=${digest}`, { auth: 'admin', body: blob });
    t.equal(r.status, 201, r.body.toString());
  });

  await t.test('a HEAD without credentials is 401 with the challenge and no body', async (t) => {
    const r = await req('HEAD', `/v2/secret/db/blobs/${digest}`);
    t.equal(r.status, 401);
    t.equal(r.headers['www-authenticate'], `Bearer realm="${sd.url}/token",service="stevedore",scope="repository:secret/db:pull"`);
    t.equal(r.body.length, 0);
  });

  await t.test("a cross-mount POST without credentials is 401 with a challenge asking for the source's pull scope too", async (t) => {
    const r = await req('POST', `/v2/lab/app/blobs/uploads/?mount=${digest}&from=secret/db`, { headers: { 'content-length': '0' } });
    t.equal(r.status, 401);
    t.equal(r.headers['www-authenticate'], `Bearer realm="${sd.url}/token",service="stevedore",scope="repository:lab/app:pull,push repository:secret/db:pull"`);
  });

  await t.test('alice may not read secret/db: 403', async (t) => {
    const r = await req('GET', `/v2/secret/db/blobs/${digest}`, { auth: 'alice' });
    t.equal(r.status, 403);
    t.equal(ociErrors(r)?.[0]?.code, 'DENIED');
  });

  await t.test('a mount from a repository alice may not read becomes a plain upload: nothing leaks', async (t) => {
    const r = await req('POST', `/v2/lab/app/blobs/uploads/?mount=${digest}&from=secret/db`, { auth: 'alice', headers: { 'content-length': '0' } });
    t.equal(r.status, 202, 'an upload session, not a mount');
    const head = await req('HEAD', `/v2/lab/app/blobs/${digest}`, { auth: 'alice' });
    t.equal(head.status, 404, 'the blob did not appear in lab/app');
  });

  await t.test('the same mount by admin mounts', async (t) => {
    const r = await req('POST', `/v2/lab/other/blobs/uploads/?mount=${digest}&from=secret/db`, { auth: 'admin', headers: { 'content-length': '0' } });
    t.equal(r.status, 201);
  });

  await t.test('bob may pull lab/* but not push: 403 naming the action', async (t) => {
    t.equal((await req('HEAD', `/v2/lab/other/blobs/${digest}`, { auth: 'bob' })).status, 200);
    const r = await req('POST', '/v2/lab/app/blobs/uploads/', { auth: 'bob', headers: { 'content-length': '0' } });
    t.equal(r.status, 403);
    t.equal(ociErrors(r)?.[0]?.message, 'user bob may not push on lab/app');
  });

  await t.test('deleting needs delete: alice 403, admin 202', async (t) => {
    t.equal((await req('DELETE', `/v2/lab/other/blobs/${digest}`, { auth: 'alice' })).status, 403);
    t.equal((await req('DELETE', `/v2/lab/other/blobs/${digest}`)).status, 401);
    t.equal((await req('DELETE', `/v2/lab/other/blobs/${digest}`, { auth: 'admin' })).status, 202);
  });

  await t.test('the catalog needs a login when anonymous pull is off', async (t) => {
    t.equal((await req('GET', '/v2/_catalog')).status, 401);
    t.equal((await req('GET', '/v2/_catalog', { auth: 'bob' })).status, 200);
  });

  await t.test('/metrics needs a user when anonymous pull is off: 401 with the challenge without one', async (t) => {
    const anonymous = await req('GET', '/metrics');
    t.equal(anonymous.status, 401);
    t.equal(ociErrors(anonymous)?.[0]?.code, 'UNAUTHORIZED');
    t.equal(anonymous.headers['www-authenticate'], `Bearer realm="${sd.url}/token",service="stevedore"`);
    t.notMatch(anonymous.body.toString(), /stevedore_http_requests_total/, 'no metric in the answer');
    const wrong = await rawRequest(`${sd.url}/metrics`, { headers: { authorization: `Basic ${Buffer.from('bob:wrong').toString('base64')}` } });
    t.equal(wrong.status, 401, 'a wrong password is refused');
  });

  await t.test('/metrics answers a user, with Basic credentials or a token', async (t) => {
    const byBasic = await req('GET', '/metrics', { auth: 'bob' });
    t.equal(byBasic.status, 200);
    t.match(byBasic.body.toString(), /stevedore_http_requests_total/);
    const tok = await req('GET', '/token?service=stevedore', { auth: 'bob' });
    const token = String((JSON.parse(tok.body.toString()) as { token: string }).token);
    t.equal((await rawRequest(`${sd.url}/metrics`, { headers: { authorization: `Bearer ${token}` } })).status, 200);
    const anonymousToken = String((JSON.parse((await req('GET', '/token?service=stevedore')).body.toString()) as { token: string }).token);
    t.equal((await rawRequest(`${sd.url}/metrics`, { headers: { authorization: `Bearer ${anonymousToken}` } })).status, 401, 'an anonymous token is no user');
  });

  await t.test('proxied names are matched as <upstream>/<name>: admin only, however addressed', async (t) => {
    for (const p of ['/v2/library/alpine/manifests/3', '/v2/alpine/manifests/3', '/v2/docker.io/library/alpine/manifests/3', '/v2/library/alpine/manifests/3?ns=docker.io']) {
      t.equal((await req('GET', p, { auth: 'alice' })).status, 403, `alice: ${p}`);
      t.not((await req('GET', p, { auth: 'admin' })).status, 403, `admin: ${p}`);
    }
  });

  await t.test('the access log names the user, never the credentials', async (t) => {
    const lines = sd.requestLogs();
    t.ok(lines.some((l) => l.user === 'alice' && l.status === 403));
    t.ok(lines.some((l) => l.user === 'admin' && l.status === 201));
    t.notOk(lines.some((l) => l.status === 401 && 'user' in l), 'anonymous requests carry no user');
    const text = JSON.stringify(sd.logs);
    for (const pw of Object.values(USERS)) t.notOk(text.includes(pw));
    t.notOk(text.includes(basic('alice').slice(6)));
  });
});

t.test('the catalog lists only the repositories the user may pull, paginated after filtering', async (t) => {
  const dir = await tmpDir(t);
  const htpasswd = path.join(dir, 'htpasswd');
  await writeFile(htpasswd, Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4)}`).join('\n'));
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: {
      offline: true,
      registry: { hosted: ['lab/*', 'secret/*'] },
      auth: {
        htpasswd,
        anonymousPull: false,
        groups: { admins: ['admin'] },
        rules: [
          { repository: 'lab/*', users: ['bob'], actions: ['pull'] },
          { repository: '**', groups: ['admins'], actions: ['pull', 'push'] },
        ],
      },
    },
  });
  const catalog = async (user: keyof typeof USERS, query = ''): Promise<{ repositories: string[]; link: string | undefined }> => {
    const r = await rawRequest(`${sd.url}/v2/_catalog${query}`, { headers: { authorization: basic(user) } });
    t.equal(r.status, 200, `${user}: ${r.body.toString()}`);
    return { repositories: (JSON.parse(r.body.toString()) as { repositories: string[] }).repositories, link: r.headers.link as string | undefined };
  };
  for (const repo of ['lab/app', 'secret/db', 'secret/keys']) {
    const blob = Buffer.from(`a blob in ${repo}`);
    const r = await rawRequest(`${sd.url}/v2/${repo}/blobs/uploads/?digest=${sha256(blob)}`, {
      method: 'POST',
      headers: { authorization: basic('admin'), 'content-type': 'application/octet-stream' },
      body: blob,
    });
    t.equal(r.status, 201, `admin pushed into ${repo}`);
  }
  t.same((await catalog('admin')).repositories, ['lab/app', 'secret/db', 'secret/keys'], 'admin sees everything');
  t.same(await catalog('bob'), { repositories: ['lab/app'], link: undefined }, 'bob sees only what he may pull');
  t.same(await catalog('bob', '?n=1'), { repositories: ['lab/app'], link: undefined }, 'no next page hinting at what bob may not see');
  t.same(await catalog('alice'), { repositories: [], link: undefined }, 'alice may pull nothing, and sees nothing');
});

t.test('stevedore serve with an unreadable htpasswd or a short key file exits 2, naming the key', async (t) => {
  const dir = await tmpDir(t);
  const short = path.join(dir, 'short.key');
  await writeFile(short, 'too short\n');
  for (const [auth, expected] of [
    [{ htpasswd: path.join(dir, 'missing') }, /auth\.htpasswd: cannot read .*missing: ENOENT/],
    [{ token: { key: short } }, /auth\.token\.key: .*short\.key holds 9 bytes; at least 32/],
  ] as const) {
    const file = path.join(dir, 'stevedore.yaml');
    await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', storage: { path: path.join(dir, 'data') }, upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, auth }));
    const r = await stevedoreCli(['serve', '--config', file]);
    t.equal(r.code, 2, r.stderr);
    t.match(r.stderr, expected);
    t.notMatch(r.stderr, /\n\s+at /, 'a message, not a stack trace');
  }
});
