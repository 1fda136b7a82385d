import { randomBytes } from 'node:crypto';
import path from 'node:path';
import t, { type Test } from 'tap';
import { TokenError, TokenIssuer } from '../../../lib/server/auth/token-issuer.js';

const KEY = randomBytes(32);
const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

function issuer(opts: { now?: () => number; key?: Uint8Array; issuer?: string; service?: string; ttlMs?: number } = {}): TokenIssuer {
  return new TokenIssuer({ issuer: opts.issuer ?? 'stevedore', service: opts.service ?? 'stevedore', ttlMs: opts.ttlMs ?? 300_000, key: opts.key ?? KEY, now: opts.now ?? (() => T0) });
}

const ACCESS = [{ type: 'repository', name: 'lab/app', actions: ['pull', 'push'] }];

async function rejectsWith(t: Test, p: Promise<unknown>, code: TokenError['code']): Promise<void> {
  try {
    await p;
    t.fail('verified');
  } catch (err) {
    t.ok(err instanceof TokenError, 'a TokenError');
    t.equal((err as TokenError).code, code);
  }
}

t.test('a token verifies to its subject and access', async (t) => {
  const i = issuer();
  const issued = await i.issue('alice', ACCESS);
  t.equal(issued.expiresIn, 300);
  t.equal(issued.issuedAt, '2026-01-01T12:00:00.000Z');
  const claims = await i.verify(issued.token);
  t.equal(claims.subject, 'alice');
  t.same(claims.access, ACCESS);
  t.equal(claims.expiresAt, T0 + 300_000);
});

t.test('an anonymous token has a null subject', async (t) => {
  const i = issuer();
  const claims = await i.verify((await i.issue(null, [])).token);
  t.equal(claims.subject, null);
  t.same(claims.access, []);
});

t.test('a token is a JWT with the standard claims', async (t) => {
  const { token } = await issuer().issue('alice', ACCESS);
  const [header, payload] = token.split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>);
  t.same(header, { alg: 'HS256', typ: 'JWT' });
  t.match(payload, { iss: 'stevedore', aud: 'stevedore', sub: 'alice', iat: T0 / 1000, nbf: T0 / 1000, exp: T0 / 1000 + 300, access: ACCESS });
  t.type(payload!.jti, 'string');
});

t.test('a token expires after its ttl (fake clock)', async (t) => {
  let now = T0;
  const i = issuer({ now: () => now, ttlMs: 60_000 });
  const { token } = await i.issue('alice', ACCESS);
  now = T0 + 59_000;
  t.equal((await i.verify(token)).subject, 'alice', 'valid before expiry');
  now = T0 + 60_000 + 11_000; // past exp and the 10 s tolerance for clock skew
  await rejectsWith(t, i.verify(token), 'expired');
});

t.test("a user's token carries the binding it was issued with; bindings differ by user, hash and key", async (t) => {
  const i = issuer();
  const binding = i.binding('alice', '$2y$10$hash-one');
  t.equal((await i.verify((await i.issue('alice', ACCESS, binding)).token)).binding, binding);
  t.equal((await i.verify((await i.issue('alice', ACCESS)).token)).binding, null, 'none given, none carried');
  t.equal(i.binding('alice', '$2y$10$hash-one'), binding, 'the same entry, the same binding');
  t.not(i.binding('alice', '$2y$10$hash-two'), binding, 'another hash');
  t.not(i.binding('bob', '$2y$10$hash-one'), binding, 'another user');
  t.not(issuer({ key: Buffer.alloc(32, 7) }).binding('alice', '$2y$10$hash-one'), binding, 'another key');
  t.notMatch(binding, /hash-one/);
});

t.test('a token issued in the future (beyond the skew tolerance) is refused', async (t) => {
  let now = T0 + 60_000;
  const i = issuer({ now: () => now });
  const { token } = await i.issue('alice', ACCESS);
  now = T0;
  await rejectsWith(t, i.verify(token), 'invalid');
});

t.test('a token with a changed payload is refused', async (t) => {
  const i = issuer();
  const { token } = await i.issue('alice', ACCESS);
  const [h, p, s] = token.split('.');
  const payload = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
  payload.sub = 'root';
  const forged = [h, Buffer.from(JSON.stringify(payload)).toString('base64url'), s].join('.');
  await rejectsWith(t, i.verify(forged), 'invalid');
});

t.test('a token signed with another key, or for another issuer or service, is refused', async (t) => {
  const { token } = await issuer({ key: randomBytes(32) }).issue('alice', ACCESS);
  await rejectsWith(t, issuer().verify(token), 'invalid');
  await rejectsWith(t, issuer().verify((await issuer({ issuer: 'other' }).issue('a', [])).token), 'invalid');
  await rejectsWith(t, issuer().verify((await issuer({ service: 'other' }).issue('a', [])).token), 'invalid');
});

t.test('an unsigned (alg none) token and garbage are refused', async (t) => {
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: 'stevedore', aud: 'stevedore', sub: 'root', iat: T0 / 1000, exp: T0 / 1000 + 60 })}.`;
  await rejectsWith(t, issuer().verify(none), 'invalid');
  await rejectsWith(t, issuer().verify('not.a.jwt'), 'invalid');
});

t.test('two issuers sharing a key accept each other\'s tokens (replicas)', async (t) => {
  const key = randomBytes(40);
  const { token } = await issuer({ key }).issue('alice', ACCESS);
  t.equal((await issuer({ key }).verify(token)).subject, 'alice');
});

t.test('the key is read from a file, trailing newline dropped; a short one is refused', async (t) => {
  const hex = randomBytes(32).toString('hex');
  const dir = t.testdir({ key: `${hex}\n`, short: 'abc\n' });
  const key = await TokenIssuer.loadKey(path.join(dir, 'key'));
  t.equal(Buffer.from(key).toString(), hex);
  await t.rejects(TokenIssuer.loadKey(path.join(dir, 'short')), /auth\.token\.key: .*short holds 3 bytes; at least 32/);
  await t.rejects(TokenIssuer.loadKey(path.join(dir, 'missing')), /auth\.token\.key: cannot read .*ENOENT/);
  t.equal((await TokenIssuer.loadKey(null)).length, 32, 'no file: 32 random bytes');
  t.throws(() => issuer({ key: randomBytes(16) }), /too short/);
});
