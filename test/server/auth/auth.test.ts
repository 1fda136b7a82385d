// The Auth edge against real HTTP requests: a tiny server routes /token, /v2/ and
// /v2/<name>/<action> (wanting that action on that repository) through Auth, the way the
// registry's server does. Clients are fetch calls written like docker/containerd requests.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import bcrypt from 'bcryptjs';
import pino from 'pino';
import t, { type Test } from 'tap';
import { parseConfig } from '../../../lib/config/config.js';
import type { Action } from '../../../lib/config/auth-schema.js';
import { OciError } from '../../../lib/oci/errors.js';
import { Auth, type Identity } from '../../../lib/server/auth/auth.js';
import { sendError, sendJson } from '../../../lib/server/respond.js';

const PASSWORDS: Record<string, string> = { alice: 'wonderland', bob: 'builder', carol: 'c4rol' };
const HTPASSWD = Object.entries(PASSWORDS)
  .map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4).replace(/^\$2b\$/, '$2y$')}`)
  .join('\n');

const basic = (user: string, pw = PASSWORDS[user] ?? 'x'): string => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`;
const bearer = (token: string): string => `Bearer ${token}`;

/** Proxied names are `docker.io/<name>` (library/ added), hosted ones start with lab/. */
function canonicalName(name: string): string | null {
  if (name.startsWith('lab/')) return name;
  if (name.startsWith('docker.io/')) return name;
  if (name.startsWith('nowhere/')) return null;
  return `docker.io/${name.includes('/') ? name : `library/${name}`}`;
}

interface Harness {
  url: string;
  host: string;
  auth: Auth;
  logs: Array<Record<string, unknown>>;
  now: { t: number };
  htpasswdFile: string | null;
  /** Who each request was, in order. */
  identities: Identity[];
}

async function harness(t: Test, authConfig: Record<string, unknown> = {}, opts: { users?: boolean } = {}): Promise<Harness> {
  const dir = t.testdir({ htpasswd: `${HTPASSWD}\n` });
  const htpasswdFile = opts.users === false ? null : path.join(dir, 'htpasswd');
  const config = parseConfig({ registry: { hosted: ['lab/**'] }, auth: { htpasswd: htpasswdFile, ...authConfig } }).auth;
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const l of chunk.toString().split('\n')) if (l) logs.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const log = pino({ level: 'debug' }, sink);
  const now = { t: Date.UTC(2026, 0, 1) };
  const auth = await Auth.create({ config, log, clock: { now: () => now.t }, canonicalName, upstreams: ['docker.io'], htpasswdCheckIntervalMs: 0 });
  t.teardown(() => auth.close());
  const identities: Identity[] = [];
  const server = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://x');
      try {
        let who: Identity;
        if (url.pathname === '/token') who = await auth.handleToken(req, res, url.searchParams);
        else if (url.pathname === '/v2/') {
          who = await auth.checkBase(req);
          sendJson(res, 200, {});
        } else if (url.pathname === '/v2/_catalog') {
          who = await auth.authorizeCatalog(req);
          sendJson(res, 200, { repositories: [] });
        } else {
          const m = /^\/v2\/(.+)\/(pull|push|delete)$/.exec(url.pathname);
          if (!m) throw new OciError('NOT_FOUND');
          const name = m[1]!;
          who = await auth.authorize(req, { repository: canonicalName(name)!, name, actions: [m[2] as Action] });
          sendJson(res, 200, { ok: true });
        }
        identities.push(who);
      } catch (err) {
        sendError(res, err instanceof OciError ? err : new OciError('UNKNOWN', String(err)));
      }
    })();
  });
  server.keepAliveTimeout = 100;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}`, auth, logs, now, htpasswdFile, identities };
}

interface Answer {
  status: number;
  challenge: string | null;
  body: Record<string, unknown>;
}

async function call(url: string, init: { authorization?: string; method?: string; body?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.authorization) headers.authorization = init.authorization;
  if (init.body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
  const res = await fetch(url, { method: init.method ?? 'GET', headers, ...(init.body !== undefined ? { body: init.body } : {}) });
  const text = await res.text();
  return { status: res.status, challenge: res.headers.get('www-authenticate'), body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

const code = (a: Answer): unknown => (a.body.errors as Array<{ code: string }> | undefined)?.[0]?.code;
const message = (a: Answer): string => String((a.body.errors as Array<{ message: string }> | undefined)?.[0]?.message);

async function token(h: Harness, scope: string | string[], authorization?: string): Promise<string> {
  const q = new URLSearchParams({ service: 'stevedore' });
  for (const s of Array.isArray(scope) ? scope : [scope]) q.append('scope', s);
  const a = await call(`${h.url}/token?${q.toString()}`, authorization ? { authorization } : {});
  if (a.status !== 200) throw new Error(`token: ${a.status} ${JSON.stringify(a.body)}`);
  return String(a.body.token);
}

function claims(tok: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(tok.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
}

// ---------------------------------------------------------------- anonymous

t.test('anonymous clients pull by default, with or without users configured', async (t) => {
  for (const users of [true, false]) {
    const h = await harness(t, {}, { users });
    t.equal((await call(`${h.url}/v2/library/alpine/pull`)).status, 200);
    t.equal((await call(`${h.url}/v2/lab/app/pull`)).status, 200);
    t.same(h.identities, [{ user: null, via: 'anonymous' }, { user: null, via: 'anonymous' }]);
  }
});

t.test('an anonymous push, with users configured, is 401 with a challenge naming the scope', async (t) => {
  const h = await harness(t);
  const a = await call(`${h.url}/v2/lab/app/push`, { method: 'POST' });
  t.equal(a.status, 401);
  t.equal(code(a), 'UNAUTHORIZED');
  t.equal(a.challenge, `Bearer realm="http://${h.host}/token",service="stevedore",scope="repository:lab/app:push"`);
  t.same((a.body.errors as Array<{ detail: unknown }>)[0]!.detail, [{ Type: 'repository', Name: 'lab/app', Action: 'push' }]);
});

t.test('with no htpasswd, a push is 403 DENIED saying no users are configured', async (t) => {
  const h = await harness(t, {}, { users: false });
  const a = await call(`${h.url}/v2/lab/app/push`, { method: 'POST' });
  t.equal(a.status, 403);
  t.equal(code(a), 'DENIED');
  t.match(message(a), /push on lab\/app requires a user, and this registry has none \(auth\.htpasswd is not set\)/);
  t.equal(a.challenge, null, 'no challenge: logging in cannot help');
});

t.test('anonymousPull false: an anonymous pull is 401 with the challenge', async (t) => {
  const h = await harness(t, { anonymousPull: false });
  const a = await call(`${h.url}/v2/library/alpine/pull`);
  t.equal(a.status, 401);
  t.match(a.challenge, /scope="repository:library\/alpine:pull"$/);
});

t.test('anonymousPull false with a rule for anonymous on docker.io/**: only that is pullable', async (t) => {
  const h = await harness(t, { anonymousPull: false, rules: [{ repository: 'docker.io/**', users: ['anonymous'], actions: ['pull'] }, { repository: '**', users: ['*'], actions: ['pull', 'push'] }] });
  t.equal((await call(`${h.url}/v2/library/alpine/pull`)).status, 200);
  t.equal((await call(`${h.url}/v2/lab/app/pull`)).status, 401);
});

// ---------------------------------------------------------------- Basic credentials

t.test('Basic credentials on a registry request: good ones pass, the user is known', async (t) => {
  const h = await harness(t);
  t.equal((await call(`${h.url}/v2/lab/app/push`, { method: 'POST', authorization: basic('alice') })).status, 200);
  t.same(h.identities, [{ user: 'alice', via: 'basic' }]);
});

t.test('a wrong password or an unknown user is 401; the failure is logged without the password', async (t) => {
  const h = await harness(t);
  for (const authz of [basic('alice', 'not-the-password'), basic('mallory', 'not-the-password')]) {
    const a = await call(`${h.url}/v2/library/alpine/pull`, { authorization: authz });
    t.equal(a.status, 401);
    t.equal(message(a), 'invalid username or password');
    t.match(a.challenge, /^Bearer realm=.*scope="repository:library\/alpine:pull"$/);
  }
  const failed = h.logs.filter((l) => l.msg === 'failed login');
  t.match(failed, [{ user: 'alice', reason: 'bad-password', via: 'basic' }, { user: 'mallory', reason: 'unknown-user', via: 'basic' }]);
  t.notOk(JSON.stringify(h.logs).includes('not-the-password'), 'no password in any log line');
});

t.test('ten failed logins from one address within a minute: 429 with Retry-After, without checking the password', async (t) => {
  const h = await harness(t);
  for (let i = 0; i < 10; i++) t.equal((await call(`${h.url}/v2/library/alpine/pull`, { authorization: basic('alice', `guess-${i}`) })).status, 401);
  h.now.t += 10_000;
  const blocked = await call(`${h.url}/token?service=stevedore`, { authorization: basic('alice') });
  t.equal(blocked.status, 429, 'even the right password waits');
  t.equal(code(blocked), 'TOOMANYREQUESTS');
  t.match(h.logs.at(-1), { msg: 'failed login', reason: 'throttled', user: 'alice' });
  h.now.t += 50_001;
  t.equal((await call(`${h.url}/v2/lab/app/push`, { method: 'POST', authorization: basic('alice') })).status, 200, 'after the minute');
  t.equal((await call(`${h.url}/v2/library/alpine/pull`)).status, 200, 'anonymous requests were never throttled');
});

t.test('parallel guesses from one address: only the allowance is checked, the rest is 429 at once', async (t) => {
  const h = await harness(t);
  const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => call(`${h.url}/token?service=stevedore`, { authorization: basic('alice', `guess-${i}`) })));
  t.equal(answers.filter((a) => a.status === 401).length, 10, 'ten guesses were checked (and wrong)');
  t.equal(answers.filter((a) => a.status === 429).length, 20, 'twenty were refused unchecked');
  t.equal(h.logs.filter((l) => l.msg === 'failed login' && l.reason === 'bad-password').length, 10);
});

t.test('a successful login does not reset the failures counted against its address', async (t) => {
  const h = await harness(t);
  for (let i = 0; i < 9; i++) t.equal((await call(`${h.url}/token?service=stevedore`, { authorization: basic('mallory', `guess-${i}`) })).status, 401);
  t.equal((await call(`${h.url}/token?service=stevedore`, { authorization: basic('bob') })).status, 200, 'bob logs in from the same address');
  t.equal((await call(`${h.url}/token?service=stevedore`, { authorization: basic('mallory', 'guess-9') })).status, 401, 'the tenth guess is checked');
  const blocked = await call(`${h.url}/token?service=stevedore`, { authorization: basic('mallory', 'guess-10') });
  t.equal(blocked.status, 429, "the eleventh waits: bob's success did not give mallory more guesses");
});

t.test('eleven wrong passwords for alice from one address do not lock alice out: from another address she logs in, slowed, on /token and /v2/', async (t) => {
  const h = await harness(t, { trustedProxies: ['127.0.0.1'] });
  const from = (address: string): Record<string, string> => ({ 'x-forwarded-for': address });
  for (let i = 0; i < 11; i++) await call(`${h.url}/token?service=stevedore`, { authorization: basic('alice', `guess-${i}`), headers: from('10.0.0.66') });
  t.equal((await call(`${h.url}/token?service=stevedore`, { authorization: basic('alice'), headers: from('10.0.0.66') })).status, 429, 'the guessing address waits for alice');
  const started = Date.now();
  const a = await call(`${h.url}/token?service=stevedore`, { authorization: basic('alice'), headers: from('10.0.0.99') });
  t.equal(a.status, 200, 'alice logs in from another address');
  t.equal((await call(`${h.url}/v2/`, { authorization: basic('alice'), headers: from('10.0.0.98') })).status, 200, 'and on /v2/ with Basic credentials');
  t.ok(Date.now() - started >= 1000, `each of her logins was slowed (${Date.now() - started} ms for two)`);
  t.match(h.logs.find((l) => l.msg === 'login slowed'), { user: 'alice', ip: '10.0.0.99' }, 'the slowing is logged');
  t.equal((await call(`${h.url}/token?service=stevedore`, { authorization: basic('bob'), headers: from('10.0.0.66') })).status, 200, 'bob, from the guessing address, is not refused');
});

t.test('behind a trusted proxy, each client is throttled by its own address (X-Forwarded-For)', async (t) => {
  const h = await harness(t, { trustedProxies: ['127.0.0.0/8'] });
  // 30: the per-address allowance across users (login-throttle.ts).
  for (let i = 0; i < 30; i++) {
    const a = await call(`${h.url}/token?service=stevedore`, { authorization: basic(`nobody-${i}`, 'guess'), headers: { 'x-forwarded-for': '203.0.113.7' } });
    t.equal(a.status, 401);
  }
  const attacker = await call(`${h.url}/token?service=stevedore`, { authorization: basic('alice'), headers: { 'x-forwarded-for': '203.0.113.7' } });
  t.equal(attacker.status, 429, 'the guessing client waits');
  t.match(h.logs.at(-1), { msg: 'failed login', reason: 'throttled', ip: '203.0.113.7' });
  const other = await call(`${h.url}/token?service=stevedore`, { authorization: basic('alice'), headers: { 'x-forwarded-for': '203.0.113.7, 198.51.100.20' } });
  t.equal(other.status, 200, 'another client behind the same proxy logs in; what it wrote left of its own address is ignored');
});

t.test('X-Forwarded-For from a peer that is not a trusted proxy is ignored', async (t) => {
  const h = await harness(t, { trustedProxies: ['10.0.0.0/8'] });
  for (let i = 0; i < 30; i++) {
    t.equal((await call(`${h.url}/token?service=stevedore`, { authorization: basic(`nobody-${i}`, 'guess'), headers: { 'x-forwarded-for': `198.51.100.${i}` } })).status, 401);
  }
  const a = await call(`${h.url}/token?service=stevedore`, { authorization: basic('nobody-x', 'guess'), headers: { 'x-forwarded-for': '198.51.100.200' } });
  t.equal(a.status, 429, 'a new X-Forwarded-For does not make a new client');
});

t.test('bad credentials are refused even where anonymous access would do', async (t) => {
  const h = await harness(t);
  t.equal((await call(`${h.url}/v2/library/alpine/pull`, { authorization: basic('alice', 'nope') })).status, 401);
  t.equal((await call(`${h.url}/v2/library/alpine/pull`, { authorization: 'Digest x' })).status, 401);
});

t.test('an authenticated user the rules refuse gets 403 DENIED', async (t) => {
  const h = await harness(t, {
    groups: { devs: ['alice'] },
    rules: [
      { repository: '**', users: ['*'], actions: ['pull'] },
      { repository: 'lab/**', groups: ['devs'], actions: ['push'] },
    ],
  });
  t.equal((await call(`${h.url}/v2/lab/app/push`, { method: 'POST', authorization: basic('alice') })).status, 200);
  const a = await call(`${h.url}/v2/lab/app/push`, { method: 'POST', authorization: basic('bob') });
  t.equal(a.status, 403);
  t.equal(code(a), 'DENIED');
  t.equal(message(a), 'user bob may not push on lab/app');
  t.equal(a.challenge, null);
  t.equal((await call(`${h.url}/v2/lab/app/delete`, { method: 'DELETE', authorization: basic('alice') })).status, 403);
});

t.test('who asked is told to the caller before a refusal, for the access log', async (t) => {
  const h = await harness(t, { rules: [{ repository: '**', users: ['*'], actions: ['pull'] }] });
  const seen: Array<string | null> = [];
  const req = { headers: { authorization: basic('bob') }, socket: {} } as unknown as http.IncomingMessage;
  await t.rejects(h.auth.authorize(req, { repository: 'lab/app', name: 'lab/app', actions: ['push'] }, { identified: (who) => seen.push(who.user) }), { code: 'DENIED' });
  t.same(seen, ['bob']);
});

t.test('an explicit rule may open pushing to anonymous clients, even with no users', async (t) => {
  const h = await harness(t, { rules: [{ repository: 'docker.io/drop/**', users: ['anonymous'], actions: ['pull', 'push'] }] }, { users: false });
  t.equal((await call(`${h.url}/v2/drop/box/push`, { method: 'POST' })).status, 200);
  t.equal((await call(`${h.url}/v2/lab/app/push`, { method: 'POST' })).status, 403);
});

// ---------------------------------------------------------------- the token endpoint

t.test('GET /token answers token, access_token, expires_in and issued_at', async (t) => {
  const h = await harness(t);
  const a = await call(`${h.url}/token?service=stevedore&scope=repository:lab/app:pull,push`, { authorization: basic('alice') });
  t.equal(a.status, 200);
  t.type(a.body.token, 'string');
  t.equal(a.body.access_token, a.body.token);
  t.equal(a.body.expires_in, 300);
  t.equal(a.body.issued_at, '2026-01-01T00:00:00.000Z');
  t.match(claims(String(a.body.token)), { sub: 'alice', aud: 'stevedore', iss: 'stevedore', access: [{ type: 'repository', name: 'lab/app', actions: ['pull', 'push'] }] });
});

t.test('a token grants what was asked and the rules allow, by canonical name', async (t) => {
  const h = await harness(t, {
    rules: [
      { repository: '**', users: ['*'], actions: ['pull'] },
      { repository: 'lab/*', users: ['alice'], actions: ['push'] },
    ],
  });
  const tok = await token(h, ['repository:lab/app:pull,push,delete', 'repository:alpine:pull,push repository:nowhere/x:pull', 'repository:lab/b:*'], basic('alice'));
  t.same(claims(tok).access, [
    { type: 'repository', name: 'lab/app', actions: ['pull', 'push'] },
    { type: 'repository', name: 'docker.io/library/alpine', actions: ['pull'] },
    { type: 'repository', name: 'lab/b', actions: ['pull', 'push'] },
  ]);
  const anon = await token(h, 'repository:lab/app:pull,push');
  t.match(claims(anon), { sub: '', access: [{ type: 'repository', name: 'lab/app', actions: ['pull'] }] });
});

t.test('the whole Docker flow: challenge, token with Basic, request with Bearer', async (t) => {
  const h = await harness(t);
  const first = await call(`${h.url}/v2/lab/app/push`, { method: 'POST' });
  t.equal(first.status, 401);
  const params = Object.fromEntries([...first.challenge!.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
  const q = new URLSearchParams({ service: params.service!, scope: params.scope! });
  const tok = await call(`${params.realm}?${q.toString()}`, { authorization: basic('alice') });
  const again = await call(`${h.url}/v2/lab/app/push`, { method: 'POST', authorization: bearer(String(tok.body.token)) });
  t.equal(again.status, 200);
  t.same(h.identities.at(-1), { user: 'alice', via: 'bearer' });
});

t.test('an anonymous token pulls, but cannot push (401: log in)', async (t) => {
  const h = await harness(t);
  const tok = await token(h, 'repository:lab/app:pull,push');
  t.equal((await call(`${h.url}/v2/lab/app/pull`, { authorization: bearer(tok) })).status, 200);
  const a = await call(`${h.url}/v2/lab/app/push`, { method: 'POST', authorization: bearer(tok) });
  t.equal(a.status, 401);
  t.notMatch(a.challenge, /error=/);
});

t.test('a user\'s token used on a repository it was not issued for is 401 insufficient_scope', async (t) => {
  const h = await harness(t);
  const tok = await token(h, 'repository:lab/app:pull,push', basic('alice'));
  const a = await call(`${h.url}/v2/lab/other/push`, { method: 'POST', authorization: bearer(tok) });
  t.equal(a.status, 401);
  t.match(a.challenge, /scope="repository:lab\/other:push",error="insufficient_scope"$/);
});

t.test('a user\'s token for a push the rules refuse is 403', async (t) => {
  const h = await harness(t, { rules: [{ repository: '**', users: ['*'], actions: ['pull'] }] });
  const tok = await token(h, 'repository:lab/app:pull,push', basic('bob'));
  t.same(claims(tok).access, [{ type: 'repository', name: 'lab/app', actions: ['pull'] }]);
  const a = await call(`${h.url}/v2/lab/app/push`, { method: 'POST', authorization: bearer(tok) });
  t.equal(a.status, 403);
  t.equal(code(a), 'DENIED');
});

t.test('an expired token is 401 invalid_token (fake clock)', async (t) => {
  const h = await harness(t, { token: { ttl: '1m' } });
  const tok = await token(h, 'repository:lab/app:pull', basic('alice'));
  h.now.t += 50_000;
  t.equal((await call(`${h.url}/v2/lab/app/pull`, { authorization: bearer(tok) })).status, 200);
  h.now.t += 25_000;
  const a = await call(`${h.url}/v2/lab/app/pull`, { authorization: bearer(tok) });
  t.equal(a.status, 401);
  t.equal(message(a), 'token expired');
  t.match(a.challenge, /error="invalid_token"$/);
});

t.test('a forged token is 401 invalid_token', async (t) => {
  const h = await harness(t);
  const tok = await token(h, 'repository:lab/app:pull', basic('alice'));
  const [hd, , sig] = tok.split('.');
  const payload = Buffer.from(JSON.stringify({ ...claims(tok), access: [{ type: 'repository', name: 'lab/app', actions: ['pull', 'push', 'delete'] }] })).toString('base64url');
  const a = await call(`${h.url}/v2/lab/app/push`, { method: 'POST', authorization: bearer(`${hd}.${payload}.${sig}`) });
  t.equal(a.status, 401);
  t.equal(message(a), 'invalid token');
});

t.test('a token of a user removed from htpasswd is refused', async (t) => {
  const h = await harness(t);
  const tok = await token(h, 'repository:lab/app:pull', basic('carol'));
  const { writeFile } = await import('node:fs/promises');
  await writeFile(h.htpasswdFile!, HTPASSWD.split('\n').filter((l) => !l.startsWith('carol:')).join('\n'));
  const a = await call(`${h.url}/v2/lab/app/pull`, { authorization: bearer(tok) });
  t.equal(a.status, 401);
  t.equal(message(a), 'user carol no longer exists');
});

t.test("a user's token stops working once the user's password changes", async (t) => {
  const h = await harness(t);
  const tok = await token(h, 'repository:lab/app:pull', basic('carol'));
  t.equal((await call(`${h.url}/v2/lab/app/pull`, { authorization: bearer(tok) })).status, 200);
  const { writeFile } = await import('node:fs/promises');
  await writeFile(h.htpasswdFile!, HTPASSWD.replace(/^carol:.*$/m, `carol:${bcrypt.hashSync('n3w-password', 4)}`));
  const a = await call(`${h.url}/v2/lab/app/pull`, { authorization: bearer(tok) });
  t.equal(a.status, 401);
  t.equal(message(a), 'the htpasswd entry of user carol changed after this token was issued; log in again');
  t.match(a.challenge, /error="invalid_token"$/);
  const fresh = await token(h, 'repository:lab/app:pull', basic('carol', 'n3w-password'));
  t.equal((await call(`${h.url}/v2/lab/app/pull`, { authorization: bearer(fresh) })).status, 200, 'a token issued with the new password works');
});

t.test("a user removed and added again with a new password: the old token stays refused", async (t) => {
  const h = await harness(t);
  const tok = await token(h, 'repository:lab/app:pull', basic('carol'));
  const { writeFile } = await import('node:fs/promises');
  const others = HTPASSWD.split('\n').filter((l) => !l.startsWith('carol:'));
  await writeFile(h.htpasswdFile!, others.join('\n'));
  t.equal((await call(`${h.url}/v2/lab/app/pull`, { authorization: bearer(tok) })).status, 401);
  await writeFile(h.htpasswdFile!, [...others, `carol:${bcrypt.hashSync('someone-else', 4)}`].join('\n'));
  t.equal((await call(`${h.url}/v2/lab/app/pull`, { authorization: bearer(tok) })).status, 401);
});

t.test("another user's password change leaves a token working", async (t) => {
  const h = await harness(t);
  const tok = await token(h, 'repository:lab/app:pull', basic('alice'));
  const { writeFile } = await import('node:fs/promises');
  await writeFile(h.htpasswdFile!, HTPASSWD.replace(/^bob:.*$/m, `bob:${bcrypt.hashSync('n3w-password', 4)}`));
  t.equal((await call(`${h.url}/v2/lab/app/pull`, { authorization: bearer(tok) })).status, 200);
});

t.test('GET /token with a wrong password is 401 and logged without the password', async (t) => {
  const h = await harness(t);
  const a = await call(`${h.url}/token?service=stevedore&scope=repository:lab/app:pull`, { authorization: basic('alice', 'guess') });
  t.equal(a.status, 401);
  t.equal(code(a), 'UNAUTHORIZED');
  t.match(h.logs.find((l) => l.msg === 'failed login'), { user: 'alice', via: 'token', reason: 'bad-password' });
  t.notOk(JSON.stringify(h.logs).includes('guess'));
});

t.test('POST /token (OAuth2 password grant, as containerd sends it)', async (t) => {
  const h = await harness(t);
  const form = new URLSearchParams({ grant_type: 'password', username: 'alice', password: PASSWORDS.alice!, service: 'stevedore', scope: 'repository:lab/app:pull,push repository:alpine:pull', client_id: 'containerd-client' });
  const a = await call(`${h.url}/token`, { method: 'POST', body: form.toString() });
  t.equal(a.status, 200);
  t.equal(a.body.access_token, a.body.token);
  t.equal(a.body.scope, 'repository:lab/app:pull,push repository:docker.io/library/alpine:pull');
  t.equal(claims(String(a.body.access_token)).sub, 'alice');
  const bad = await call(`${h.url}/token`, { method: 'POST', body: new URLSearchParams({ ...Object.fromEntries(form), password: 'guess' }).toString() });
  t.equal(bad.status, 401);
  const refresh = await call(`${h.url}/token`, { method: 'POST', body: 'grant_type=refresh_token&refresh_token=abc' });
  t.equal(refresh.status, 400);
  t.equal(refresh.body.error, 'unsupported_grant_type');
  t.notOk(JSON.stringify(h.logs).includes('guess'));
});

t.test('POST /token without a username is an anonymous token', async (t) => {
  const h = await harness(t);
  const a = await call(`${h.url}/token`, { method: 'POST', body: 'service=stevedore&scope=repository%3Alab%2Fapp%3Apull%2Cpush' });
  t.equal(a.status, 200);
  t.match(claims(String(a.body.token)), { sub: '', access: [{ name: 'lab/app', actions: ['pull'] }] });
});

t.test('POST /token with another content type is refused', async (t) => {
  const h = await harness(t);
  const res = await fetch(`${h.url}/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  t.equal(res.status, 415);
  await res.arrayBuffer();
});

// ---------------------------------------------------------------- /v2/ and the realm

t.test('/v2/ is 200 for anonymous clients when there are no users and anonymous pull is on', async (t) => {
  const h = await harness(t, {}, { users: false });
  const a = await call(`${h.url}/v2/`);
  t.equal(a.status, 200);
});

t.test('/v2/ is 401 with a challenge (no scope) when users exist, so clients log in', async (t) => {
  const h = await harness(t);
  const a = await call(`${h.url}/v2/`);
  t.equal(a.status, 401);
  t.equal(a.challenge, `Bearer realm="http://${h.host}/token",service="stevedore"`);
  t.equal((await call(`${h.url}/v2/`, { authorization: basic('alice') })).status, 200);
  t.equal((await call(`${h.url}/v2/`, { authorization: bearer(await token(h, [])) })).status, 200, 'any valid token, even anonymous');
  t.equal((await call(`${h.url}/v2/`, { authorization: basic('alice', 'x') })).status, 401);
});

t.test('/v2/ is 401 when anonymous pull is off, even with no users', async (t) => {
  const h = await harness(t, { anonymousPull: false }, { users: false });
  t.equal((await call(`${h.url}/v2/`)).status, 401);
});

t.test('the realm follows Host and X-Forwarded-Proto, unless configured', async (t) => {
  const h = await harness(t);
  // fetch may not set Host; node:http may.
  const challenge = await new Promise<string | undefined>((resolve, reject) => {
    const req = http.get(`${h.url}/v2/`, { headers: { host: 'registry.example.com:5000', 'x-forwarded-proto': 'https' } }, (res) => {
      res.resume();
      resolve(res.headers['www-authenticate']);
    });
    req.once('error', reject);
  });
  t.match(challenge, /^Bearer realm="https:\/\/registry\.example\.com:5000\/token"/);
  const h2 = await harness(t, { token: { realm: 'https://auth.example.com/token', service: 'registry.example.com' } });
  const b = await call(`${h2.url}/v2/lab/app/push`, { method: 'POST' });
  t.equal(b.challenge, 'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:lab/app:push"');
});

// ---------------------------------------------------------------- catalog

t.test('the catalog: users and (with anonymous pull) anonymous clients; tokens need registry:catalog:*', async (t) => {
  const h = await harness(t);
  t.equal((await call(`${h.url}/v2/_catalog`)).status, 200);
  t.equal((await call(`${h.url}/v2/_catalog`, { authorization: basic('alice') })).status, 200);
  const withScope = await token(h, 'registry:catalog:*', basic('alice'));
  t.equal((await call(`${h.url}/v2/_catalog`, { authorization: bearer(withScope) })).status, 200);
  const without = await token(h, 'repository:lab/app:pull', basic('alice'));
  const a = await call(`${h.url}/v2/_catalog`, { authorization: bearer(without) });
  t.equal(a.status, 401);
  t.match(a.challenge, /scope="registry:catalog:\*",error="insufficient_scope"/);
  const closed = await harness(t, { anonymousPull: false });
  t.equal((await call(`${closed.url}/v2/_catalog`)).status, 401);
  t.same(claims(await token(closed, 'registry:catalog:*')).access, [], 'no catalog for anonymous tokens');
});
