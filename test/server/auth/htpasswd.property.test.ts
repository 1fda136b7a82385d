// htpasswd files as `htpasswd -B` writes them:
//
//   file  := ( line ( "\n" | "\r\n" ) )*       blank lines and lines starting with "#" are skipped
//   line  := user ":" bcrypt                   surrounding spaces ignored
//   user  := non-empty, no ":" and no spaces; not "anonymous" or "*" (reserved in access rules)
//   bcrypt:= "$2" ( "a" | "b" | "y" ) "$" cost "$" 53 of [./A-Za-z0-9]     cost 04..31
//
// Every other line is refused with one problem naming its line number, never its hash.
import fc from 'fast-check';
import t from 'tap';
import { parseHtpasswd } from '../../../lib/server/auth/htpasswd.js';
import { ALNUM, anyString, charsFrom, holds } from '../../fixtures/property.js';

const BCRYPT_RE = /^\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$/;

const user = fc
  .string({ unit: 'grapheme', minLength: 1, maxLength: 12 })
  .filter((u) => !/[\s:]/.test(u) && !u.startsWith('#') && u !== 'anonymous' && u !== '*');
const bcrypt = fc
  .tuple(fc.constantFrom('a', 'b', 'y'), fc.integer({ min: 4, max: 31 }), charsFrom(`./${ALNUM}`, 53, 53))
  .map(([v, cost, rest]) => `$2${v}$${String(cost).padStart(2, '0')}$${rest}`);

type Line = { kind: 'user'; user: string; hash: string; pad: [string, string] } | { kind: 'comment'; text: string } | { kind: 'blank'; text: string };

const line: fc.Arbitrary<Line> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('user' as const), user, hash: bcrypt, pad: fc.tuple(charsFrom(' \t', 0, 2), charsFrom(' \t', 0, 2)) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('comment' as const), text: fc.tuple(charsFrom(' \t', 0, 2), anyString).map(([a, b]) => `${a}#${b.replace(/[\r\n]/g, '')}`) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('blank' as const), text: charsFrom(' \t', 0, 3) }) },
);

function render(lines: Line[], eol: string): string {
  return lines.map((l) => (l.kind === 'user' ? `${l.pad[0]}${l.user}:${l.hash}${l.pad[1]}` : l.text)).join(eol);
}

t.test('every user line of a file is loaded, the last one winning for a repeated user; comments and blank lines are skipped', async (t) => {
  holds(
    t,
    fc.property(fc.array(line, { maxLength: 12 }), fc.constantFrom('\n', '\r\n'), fc.boolean(), (lines, eol, finalEol) => {
      const { users, problems } = parseHtpasswd(render(lines, eol) + (finalEol ? eol : ''));
      const want = new Map<string, string>();
      let repeats = 0;
      for (const l of lines) {
        if (l.kind !== 'user') continue;
        if (want.has(l.user)) repeats++;
        want.set(l.user, l.hash);
      }
      return JSON.stringify([...users]) === JSON.stringify([...want]) && problems.length === repeats && problems.every((p) => p.includes('appears again'));
    }),
    { numRuns: 300 },
  );
});

const badLine = fc.oneof(
  fc.tuple(user, charsFrom(ALNUM, 20, 30)).map(([u, h]) => ({ text: `${u}:$apr1$${h}`, secret: h })),
  fc.tuple(user, charsFrom(ALNUM, 20, 30)).map(([u, h]) => ({ text: `${u}:{SHA}${h}=`, secret: h })),
  fc.tuple(user, charsFrom(ALNUM, 20, 30)).map(([u, h]) => ({ text: `${u}:${h}`, secret: h })),
  fc.tuple(user, charsFrom(ALNUM, 20, 30)).map(([u, h]) => ({ text: `${u}:$5$rounds=5000$${h}`, secret: h })),
  fc.tuple(user, bcrypt).map(([u, h]) => ({ text: `${u}:${h.slice(0, -1)}`, secret: h.slice(7, -1) })),
  fc.tuple(charsFrom(ALNUM, 20, 30)).map(([h]) => ({ text: `:${h}`, secret: h })),
  fc.tuple(fc.constantFrom('anonymous', '*'), bcrypt).map(([u, h]) => ({ text: `${u}:${h}`, secret: h.slice(7) })),
  fc.tuple(user, user, bcrypt).map(([a, b, h]) => ({ text: `${a} ${b}:${h}`, secret: h.slice(7) })),
);

t.test('each line that is not user:bcrypt is refused with one problem naming its line and never quoting its hash', async (t) => {
  holds(
    t,
    fc.property(fc.array(fc.oneof(line.map((l) => ({ good: l })), badLine.map((b) => ({ bad: b }))), { maxLength: 10 }), (mixed) => {
      const text = mixed.map((m) => ('good' in m ? render([m.good], '\n') : m.bad.text)).join('\n');
      const { users, problems } = parseHtpasswd(text);
      const badAt = mixed.flatMap((m, i) => ('bad' in m ? [i + 1] : []));
      const mine = problems.filter((p) => !p.includes('appears again'));
      const goodUsers = new Set(mixed.flatMap((m) => ('good' in m && m.good.kind === 'user' ? [m.good.user] : [])));
      return (
        mine.length === badAt.length &&
        mine.every((p, k) => p.startsWith(`line ${badAt[k]}`)) &&
        mixed.every((m) => !('bad' in m) || problems.every((p) => !p.includes(m.bad.secret))) &&
        [...users.keys()].every((u) => goodUsers.has(u))
      );
    }),
    { numRuns: 300 },
  );
});

t.test('whatever the text, the users have names without spaces or ":" and bcrypt hashes, and nothing throws', async (t) => {
  const fileLike = fc.oneof(
    anyString,
    fc.array(fc.oneof(anyString, line.map((l) => render([l], '')), badLine.map((b) => b.text)), { maxLength: 8 }).map((ls) => ls.join('\n')),
  );
  holds(
    t,
    fc.property(fileLike, (text) => {
      const { users } = parseHtpasswd(text);
      return [...users].every(([u, h]) => u.length > 0 && !/[\s:]/.test(u) && u !== 'anonymous' && u !== '*' && BCRYPT_RE.test(h));
    }),
    { numRuns: 300 },
  );
});
