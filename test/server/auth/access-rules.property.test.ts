// Repository patterns of access rules (the config's `auth.rules[].repository`):
//
//   pattern   := part ( "/" part )*        what the config accepts: [a-z0-9._:*-]+ or "**"
//   "*"       inside a part: any characters within one name component (none included)
//   "**"      a whole part: any number of whole components, none included
//   any other character stands for itself
//
// The oracle below matches component lists directly, without regular expressions.
import fc from 'fast-check';
import t from 'tap';
import { compilePattern } from '../../../lib/server/auth/access-rules.js';
import { charsFrom, holds } from '../../fixtures/property.js';

/** Does `part` (with "*" wildcards) match the whole of `component`? */
function partMatches(part: string, component: string): boolean {
  if (part === '') return component === '';
  if (part[0] === '*') {
    for (let k = 0; k <= component.length; k++) if (partMatches(part.slice(1), component.slice(k))) return true;
    return false;
  }
  return component !== '' && part[0] === component[0] && partMatches(part.slice(1), component.slice(1));
}

function globMatches(parts: string[], components: string[]): boolean {
  if (parts.length === 0) return components.length === 0;
  const [first, ...rest] = parts as [string, ...string[]];
  if (first === '**') {
    for (let k = 0; k <= components.length; k++) if (globMatches(rest, components.slice(k))) return true;
    return false;
  }
  return components.length > 0 && partMatches(first, components[0]!) && globMatches(rest, components.slice(1));
}

// Small alphabets, so patterns and names often meet.
const patternPart = fc.oneof(
  fc.constant('**'),
  charsFrom('ab.:-*', 1, 4).filter((p) => !p.includes('**')),
);
const pattern = fc.array(patternPart, { minLength: 1, maxLength: 5 }).map((parts) => parts.join('/'));
const name = fc.array(charsFrom('ab.:-', 1, 3), { minLength: 1, maxLength: 5 }).map((c) => c.join('/'));

t.test('a pattern matches a repository name exactly when its parts match the name components, "**" standing for any number of them', async (t) => {
  holds(
    t,
    fc.property(pattern, name, (p, n) => compilePattern(p).test(n) === globMatches(p.split('/'), n.split('/'))),
    { numRuns: 2000 },
  );
});

t.test('a pattern with no wildcard matches its own text and nothing else', async (t) => {
  holds(
    t,
    fc.property(name, name, (literal, other) => compilePattern(literal).test(literal) && compilePattern(literal).test(other) === (other === literal)),
  );
});

t.test('"**" alone, or repeated, matches every name', async (t) => {
  holds(
    t,
    fc.property(fc.integer({ min: 1, max: 4 }), name, (k, n) => compilePattern(Array(k).fill('**').join('/')).test(n)),
  );
});

t.test('any text compiles to a regular expression without throwing', async (t) => {
  holds(
    t,
    fc.property(fc.string({ unit: 'binary', maxLength: 30 }), (p) => compilePattern(p) instanceof RegExp),
  );
});
