// WWW-Authenticate challenges from upstreams (RFC 9110 §11.6.1, §5.6):
//
//   challenge     = auth-scheme [ 1*SP #auth-param ]
//   auth-param    = token BWS "=" BWS ( token / quoted-string )
//   quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE     quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
//   #rule         = elements separated by OWS "," OWS; empty elements are allowed and ignored
//
// Scheme and parameter names are case-insensitive: the parser lower-cases them. Parameter names
// here are letters, digits, "_" and "-" (what registries send).
import fc from 'fast-check';
import t from 'tap';
import { bearerChallenge, type Scope } from '../../lib/server/auth/challenge.js';
import { parseWwwAuthenticate } from '../../lib/upstream/www-authenticate.js';
import { ALNUM, anyString, charsFrom, holds, mutated, repositoryName } from '../fixtures/property.js';

const LETTERS = ALNUM.slice(0, 26) + ALNUM.slice(36);
const TCHAR = `${ALNUM}!#$%&'*+-.^_\`|~`;
/** qdtext and the characters of quoted-pair: HTAB, SP, VCHAR, obs-text. */
const QUOTABLE = `\t ${Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i)).join('')}\u0080\u00a0\u00e9\u00ff`;

const scheme = fc.tuple(fc.constantFrom(...LETTERS), charsFrom(`${ALNUM}-`, 0, 8)).map(([a, b]) => a + b);
const paramName = fc.tuple(fc.constantFrom(...LETTERS), charsFrom(`${ALNUM}_-`, 0, 10)).map(([a, b]) => a + b);
const ows = charsFrom(' \t', 0, 2);

/** A value and one way to write it: as a token, or quoted with `"` and `\` escaped (and maybe others too). */
const written: fc.Arbitrary<{ value: string; text: string }> = fc.oneof(
  charsFrom(TCHAR, 1, 12).map((v) => ({ value: v, text: v })),
  fc.tuple(charsFrom(QUOTABLE, 0, 24), fc.boolean()).map(([v, escapeAll]) => ({
    value: v,
    text: `"${escapeAll ? v.replace(/[^\t]/g, '\\$&') : v.replace(/["\\]/g, '\\$&')}"`,
  })),
);

/** Parameters with distinct names (ignoring case), each written with random case and spacing. */
const params = fc.uniqueArray(fc.tuple(paramName, written), { maxLength: 5, selector: ([n]) => n.toLowerCase() });

function challenge(
  s: string,
  ps: Array<[string, { value: string; text: string }]>,
  spaces: string[],
  empties: boolean[],
): string {
  const items = ps.map(([n, w], i) => `${n}${spaces[(4 * i) % spaces.length]}=${spaces[(4 * i + 1) % spaces.length]}${w.text}`);
  const sep = (i: number): string => `${spaces[(4 * i + 2) % spaces.length]},${empties[i % empties.length] ? ` ,` : ''}${spaces[(4 * i + 3) % spaces.length]}`;
  return `${s}${items.length ? ` ${items.map((it, i) => (i ? sep(i) : '') + it).join('')}` : ''}`;
}

const generated = fc.record({
  scheme,
  params,
  spaces: fc.array(ows, { minLength: 1, maxLength: 8 }),
  empties: fc.array(fc.boolean(), { minLength: 1, maxLength: 4 }),
});

t.test('a challenge with token and quoted parameters parses back to its scheme and the same parameters', async (t) => {
  holds(
    t,
    fc.property(generated.map((g) => ({ ...g, empties: [false] })), (g) => {
      const c = parseWwwAuthenticate(challenge(g.scheme, g.params, g.spaces, g.empties));
      return (
        c !== null &&
        c.scheme === g.scheme.toLowerCase() &&
        JSON.stringify(c.params) === JSON.stringify(Object.fromEntries(g.params.map(([n, w]) => [n.toLowerCase(), w.value])))
      );
    }),
    { numRuns: 300 },
  );
});

t.test('empty list elements between parameters are ignored', async (t) => {
  holds(
    t,
    fc.property(generated, (g) => {
      const c = parseWwwAuthenticate(challenge(g.scheme, g.params, g.spaces, g.empties));
      return c !== null && JSON.stringify(c.params) === JSON.stringify(Object.fromEntries(g.params.map(([n, w]) => [n.toLowerCase(), w.value])));
    }),
    { numRuns: 300 },
  );
});

t.test('a repeated parameter keeps its last value', async (t) => {
  holds(
    t,
    fc.property(paramName, written, written, (name, first, second) => {
      const c = parseWwwAuthenticate(`Bearer ${name}=${first.text},${name.toUpperCase()}=${second.text}`);
      return c !== null && c.params[name.toLowerCase()] === second.value && Object.keys(c.params).length === 1;
    }),
  );
});

t.test("stevedore's own Bearer challenge parses back to the same realm, service, scope and error", async (t) => {
  const scope: fc.Arbitrary<Scope> = fc.record({
    type: fc.constantFrom('repository', 'registry'),
    name: repositoryName,
    actions: fc.uniqueArray(fc.constantFrom('pull', 'push', 'delete', '*'), { maxLength: 3 }),
  });
  holds(
    t,
    fc.property(
      charsFrom(QUOTABLE, 0, 30),
      charsFrom(QUOTABLE, 0, 20),
      fc.option(scope, { nil: undefined }),
      fc.option(fc.constantFrom('invalid_token' as const, 'insufficient_scope' as const), { nil: undefined }),
      (realm, service, sc, error) => {
        const c = parseWwwAuthenticate(bearerChallenge({ realm, service, scope: sc, error }));
        return (
          c !== null &&
          c.scheme === 'bearer' &&
          c.params.realm === realm &&
          c.params.service === service &&
          c.params.scope === (sc ? `${sc.type}:${sc.name}:${sc.actions.join(',')}` : undefined) &&
          c.params.error === error
        );
      },
    ),
  );
});

t.test('any header gives null or a challenge with lower-case scheme and parameter names, and never throws', async (t) => {
  const headerLike = fc.oneof(
    anyString,
    fc.constant(undefined),
    generated.map((g) => challenge(g.scheme, g.params, g.spaces, g.empties)),
    mutated(generated.map((g) => challenge(g.scheme, g.params, g.spaces, g.empties)), '",=\\ \t\n'),
  );
  holds(
    t,
    fc.property(headerLike, (h) => {
      const c = parseWwwAuthenticate(h);
      if (c === null) return true;
      return (
        c.scheme === c.scheme.toLowerCase() &&
        /^[a-z][a-z0-9_-]*$/.test(c.scheme) &&
        Object.entries(c.params).every(([k, v]) => /^[a-z][a-z0-9_-]*$/.test(k) && typeof v === 'string')
      );
    }),
    { numRuns: 500 },
  );
});
