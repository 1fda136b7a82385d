import t from 'tap';
import { parseWwwAuthenticate } from '../../lib/upstream/www-authenticate.js';

t.test("Docker Hub's Bearer challenge gives realm, service and scope", async (t) => {
  t.same(
    parseWwwAuthenticate(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
    ),
    {
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' },
    },
  );
});

t.test('a comma inside a quoted value does not split it', async (t) => {
  const c = parseWwwAuthenticate('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:org/app:pull,push"');
  t.equal(c?.params.scope, 'repository:org/app:pull,push');
  t.equal(c?.params.service, 'ghcr.io');
});

t.test('a scope listing several repositories separated by spaces is kept whole', async (t) => {
  const c = parseWwwAuthenticate('Bearer realm="r",scope="repository:a:pull repository:b:pull"');
  t.equal(c?.params.scope, 'repository:a:pull repository:b:pull');
});

t.test('spaces around "=" and "," are allowed', async (t) => {
  t.same(parseWwwAuthenticate('Bearer realm = "https://a/token" ,  service= "s"'), {
    scheme: 'bearer',
    params: { realm: 'https://a/token', service: 's' },
  });
});

t.test('unquoted token values are read up to the next comma or space', async (t) => {
  t.same(parseWwwAuthenticate('Bearer realm="https://a/token",error=invalid_token,service=reg'), {
    scheme: 'bearer',
    params: { realm: 'https://a/token', error: 'invalid_token', service: 'reg' },
  });
});

t.test('a backslash escape inside a quoted value is unescaped', async (t) => {
  t.equal(parseWwwAuthenticate('Bearer realm="a\\"b\\\\c"')?.params.realm, 'a"b\\c');
});

t.test('an empty quoted value is an empty string', async (t) => {
  t.same(parseWwwAuthenticate('Bearer realm="",service="s"')?.params, { realm: '', service: 's' });
});

t.test('the scheme and parameter names are lower-cased; values keep their case', async (t) => {
  t.same(parseWwwAuthenticate('BEARER Realm="https://A/Token",SERVICE="Reg"'), {
    scheme: 'bearer',
    params: { realm: 'https://A/Token', service: 'Reg' },
  });
});

t.test('Basic with a realm is a basic challenge', async (t) => {
  t.same(parseWwwAuthenticate('Basic realm="Registry Realm"'), { scheme: 'basic', params: { realm: 'Registry Realm' } });
});

t.test('Basic with a realm and a charset keeps both', async (t) => {
  t.same(parseWwwAuthenticate('Basic realm="x", charset="UTF-8"')?.params, { realm: 'x', charset: 'UTF-8' });
});

t.test('a scheme alone has no parameters', async (t) => {
  t.same(parseWwwAuthenticate('Bearer'), { scheme: 'bearer', params: {} });
  t.same(parseWwwAuthenticate('Basic'), { scheme: 'basic', params: {} });
});

t.test('leading and trailing whitespace and a trailing comma are tolerated', async (t) => {
  t.same(parseWwwAuthenticate('  Bearer realm="r",  '), { scheme: 'bearer', params: { realm: 'r' } });
});

t.test('a later duplicate parameter wins', async (t) => {
  t.equal(parseWwwAuthenticate('Bearer realm="a",realm="b"')?.params.realm, 'b');
});

t.test('parsing stops at text that is not a parameter, keeping what came before', async (t) => {
  t.same(parseWwwAuthenticate('Bearer realm="r" garbage service="s"')?.params, { realm: 'r' });
});

t.test('a second challenge in the same header does not leak into the first', async (t) => {
  const c = parseWwwAuthenticate('Bearer realm="https://a/token",service="a" , Basic realm="b"');
  t.equal(c?.scheme, 'bearer');
  t.same(c?.params, { realm: 'https://a/token', service: 'a' });
});

t.test('a scheme followed by garbage yields the scheme with no parameters', async (t) => {
  t.same(parseWwwAuthenticate('Bearer ,,,;;;'), { scheme: 'bearer', params: {} });
});

t.test('parsing a long hostile header terminates quickly', async (t) => {
  const start = process.hrtime.bigint();
  const c = parseWwwAuthenticate(`Bearer ${'a='.repeat(50_000)}"${'\\'.repeat(50_000)}`);
  t.ok(c);
  t.ok(process.hrtime.bigint() - start < 1_000_000_000n, 'under a second');
});

for (const [what, header] of [
  ['undefined', undefined],
  ['an empty string', ''],
  ['only spaces', '   '],
  ['punctuation', '!!!'],
  ['a quoted string', '"Bearer"'],
  ['a leading "="', '=realm'],
] as Array<[string, string | undefined]>) {
  t.test(`a header that is ${what} is no challenge (null)`, async (t) => {
    t.equal(parseWwwAuthenticate(header), null);
  });
}
