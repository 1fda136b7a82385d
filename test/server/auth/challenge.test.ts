import t from 'tap';
import { bearerChallenge, formatScope, parseAuthorization, parseScopes } from '../../../lib/server/auth/challenge.js';

const basic = (s: string): string => `Basic ${Buffer.from(s).toString('base64')}`;

t.test('Authorization: none, Basic, Bearer', async (t) => {
  t.same(parseAuthorization(undefined), { kind: 'none' });
  t.same(parseAuthorization(''), { kind: 'none' });
  t.same(parseAuthorization(basic('alice:pa:ss word')), { kind: 'basic', user: 'alice', password: 'pa:ss word' });
  t.same(parseAuthorization(basic('alice:')), { kind: 'basic', user: 'alice', password: '' });
  t.same(parseAuthorization('bearer abc.def.ghi'), { kind: 'bearer', token: 'abc.def.ghi' });
  t.same(parseAuthorization(`basic ${Buffer.from('u:p').toString('base64')}`), { kind: 'basic', user: 'u', password: 'p' }, 'scheme is case-insensitive');
});

t.test('malformed Authorization headers are invalid, with a reason', async (t) => {
  t.match(parseAuthorization('Basic'), { kind: 'invalid', reason: /malformed/ });
  t.match(parseAuthorization('Basic !!!'), { kind: 'invalid', reason: /base64/ });
  t.match(parseAuthorization(basic('nocolon')), { kind: 'invalid', reason: /user:password/ });
  t.match(parseAuthorization(basic(':password')), { kind: 'invalid', reason: /user:password/ });
  t.match(parseAuthorization('Digest abc'), { kind: 'invalid', reason: /unsupported authorization scheme Digest/ });
});

t.test('scopes: several per value and per parameter, names with a port, resource classes', async (t) => {
  t.same(parseScopes(['repository:lab/app:pull,push', 'repository:a:pull repository:localhost:5000/b:push registry:catalog:*', 'repository(plugin):p:pull']), [
    { type: 'repository', name: 'lab/app', actions: ['pull', 'push'] },
    { type: 'repository', name: 'a', actions: ['pull'] },
    { type: 'repository', name: 'localhost:5000/b', actions: ['push'] },
    { type: 'registry', name: 'catalog', actions: ['*'] },
    { type: 'repository', name: 'p', actions: ['pull'] },
  ]);
});

t.test('malformed scopes are skipped; repeated actions are kept once', async (t) => {
  t.same(parseScopes(['', 'repository', 'repository:x', ':x:pull', 'repository::pull', 'Bad:x:pull', 'repository:x:pull,pull,']), [
    { type: 'repository', name: 'x', actions: ['pull'] },
  ]);
});

t.test('the challenge is Docker\'s format: realm, service, then scope', async (t) => {
  t.equal(
    bearerChallenge({ realm: 'http://127.0.0.1:5000/token', service: 'stevedore', scope: { type: 'repository', name: 'lab/app', actions: ['pull', 'push'] } }),
    'Bearer realm="http://127.0.0.1:5000/token",service="stevedore",scope="repository:lab/app:pull,push"',
  );
  t.equal(bearerChallenge({ realm: 'https://r/token', service: 's' }), 'Bearer realm="https://r/token",service="s"', 'no scope on /v2/');
  t.equal(
    bearerChallenge({ realm: 'https://r/token', service: 's', scope: { type: 'repository', name: 'a', actions: ['pull'] }, error: 'insufficient_scope' }),
    'Bearer realm="https://r/token",service="s",scope="repository:a:pull",error="insufficient_scope"',
  );
  t.equal(formatScope({ type: 'registry', name: 'catalog', actions: ['*'] }), 'registry:catalog:*');
});
