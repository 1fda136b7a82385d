// The words of the token flow that stevedore reads from clients:
//
//   Authorization = auth-scheme 1*SP credentials          (scheme case-insensitive)
//   Basic         credentials = base64( user ":" password ), user non-empty and without ":" (RFC 7617)
//   Bearer        credentials = token68 (RFC 6750)
//   scope         = type [ "(" class ")" ] ":" name ":" action *( "," action ), several separated by spaces;
//                   the name may hold ":" (localhost:5000/app): the actions follow the last one
import fc from 'fast-check';
import t from 'tap';
import { formatScope, parseAuthorization, parseScopes, type Scope } from '../../../lib/server/auth/challenge.js';
import { ALNUM, anyString, charsFrom, holds, mutated, repositoryName } from '../../fixtures/property.js';

/** Text that survives UTF-8: no lone surrogates (an HTTP header cannot carry them). */
const text = (minLength: number, maxLength: number): fc.Arbitrary<string> =>
  fc
    .oneof(fc.string({ unit: 'grapheme', minLength, maxLength }), fc.string({ unit: 'binary', minLength, maxLength }))
    .filter((s) => Buffer.from(s, 'utf8').toString('utf8') === s);

const user = text(1, 16).filter((u) => !u.includes(':'));
const password = text(0, 24);
const schemeCase = (scheme: string): fc.Arbitrary<string> =>
  fc.array(fc.boolean(), { minLength: scheme.length, maxLength: scheme.length }).map((up) => [...scheme].map((c, i) => (up[i] ? c.toUpperCase() : c)).join(''));

t.test('Basic credentials of any user (without ":") and any password come back as they were', async (t) => {
  holds(
    t,
    fc.property(user, password, schemeCase('basic'), charsFrom(' ', 1, 3), charsFrom(' ', 0, 2), (u, p, scheme, gap, trail) => {
      const header = `${scheme}${gap}${Buffer.from(`${u}:${p}`, 'utf8').toString('base64')}${trail}`;
      const c = parseAuthorization(header);
      return c.kind === 'basic' && c.user === u && c.password === p;
    }),
    { numRuns: 300 },
  );
});

t.test('Bearer credentials give back the token as sent', async (t) => {
  const token68 = fc.tuple(charsFrom(`${ALNUM}-._~+/`, 1, 60), charsFrom('=', 0, 2)).map(([a, b]) => a + b);
  holds(
    t,
    fc.property(token68, schemeCase('bearer'), (token, scheme) => {
      const c = parseAuthorization(`${scheme} ${token}`);
      return c.kind === 'bearer' && c.token === token;
    }),
  );
});

t.test('Basic credentials without a user before a ":" are invalid', async (t) => {
  holds(
    t,
    fc.property(text(0, 20), fc.boolean(), (s, leadingColon) => {
      const decoded = leadingColon ? `:${s}` : s.replace(/:/g, '');
      if (decoded === '') return true;
      const c = parseAuthorization(`Basic ${Buffer.from(decoded, 'utf8').toString('base64')}`);
      return c.kind === 'invalid';
    }),
  );
});

t.test('any Authorization header is none only when absent or empty, and never throws', async (t) => {
  const headerLike = fc.oneof(
    anyString,
    fc.constant(undefined),
    fc.tuple(fc.constantFrom('Basic ', 'Bearer ', 'Digest ', 'basic  ', ''), anyString).map(([a, b]) => a + b),
    mutated(fc.tuple(user, password).map(([u, p]) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`), '=:+/ \t!'),
  );
  holds(
    t,
    fc.property(headerLike, (h) => {
      const c = parseAuthorization(h);
      if (c.kind === 'none') return h === undefined || h === '';
      if (c.kind === 'basic') return c.user.length > 0 && !c.user.includes(':');
      if (c.kind === 'bearer') return c.token.length > 0 && !/\s/.test(c.token);
      return c.kind === 'invalid' && typeof c.reason === 'string';
    }),
    { numRuns: 500 },
  );
});

// ---- scopes -----------------------------------------------------------------------------------

const hostPrefix = fc.option(fc.constantFrom('localhost:5000/', 'docker.io/', 'ghcr.io:443/'), { nil: '' });
const scope: fc.Arbitrary<Scope> = fc.record({
  type: fc.constantFrom('repository', 'registry', 'plugin'),
  name: fc.tuple(hostPrefix, repositoryName).map(([h, n]) => h + n),
  actions: fc.uniqueArray(fc.constantFrom('pull', 'push', 'delete', '*'), { maxLength: 4 }),
});

t.test('a formatted scope parses back to the same type, name and actions', async (t) => {
  holds(
    t,
    fc.property(scope, (s) => JSON.stringify(parseScopes([formatScope(s)])) === JSON.stringify([s])),
  );
});

t.test('several scopes, in one value separated by spaces or in several values, parse in order', async (t) => {
  holds(
    t,
    fc.property(fc.array(fc.array(scope, { minLength: 1, maxLength: 3 }), { minLength: 1, maxLength: 3 }), charsFrom(' ', 1, 2), (groups, gap) => {
      const values = groups.map((g) => g.map(formatScope).join(gap));
      return JSON.stringify(parseScopes(values)) === JSON.stringify(groups.flat());
    }),
  );
});

t.test('a resource class is dropped and repeated actions are kept once', async (t) => {
  holds(
    t,
    fc.property(scope, charsFrom('abcxyz019', 1, 8), fc.array(fc.constantFrom('pull', 'push'), { minLength: 1, maxLength: 5 }), (s, cls, actions) => {
      const parsed = parseScopes([`${s.type}(${cls}):${s.name}:${actions.join(',')}`]);
      return parsed.length === 1 && parsed[0]!.type === s.type && parsed[0]!.name === s.name && JSON.stringify(parsed[0]!.actions) === JSON.stringify([...new Set(actions)]);
    }),
  );
});

t.test('whatever the scope values, each parsed scope has a lower-case type, a name of 1 to 512 characters and no empty action; nothing throws', async (t) => {
  const scopeLike = fc.oneof(anyString, scope.map(formatScope), mutated(scope.map(formatScope), ':,() A'));
  holds(
    t,
    fc.property(fc.array(scopeLike, { maxLength: 3 }), (values) =>
      parseScopes(values).every((s) => /^[a-z]+$/.test(s.type) && s.name.length >= 1 && s.name.length <= 512 && !/\s/.test(s.name) && s.actions.every((a) => a !== '' && !a.includes(','))),
    ),
    { numRuns: 300 },
  );
});
