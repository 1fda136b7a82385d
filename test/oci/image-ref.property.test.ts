// Image references as users type them, normalized as Docker does (distribution reference/normalize.go):
//
//   reference := [ host "/" ] name [ ":" tag ] [ "@" digest ]
//   host      := a first component that has "." or ":" or is "localhost"; else the registry is docker.io
//   docker.io (and index.docker.io, registry-1.docker.io): a one-component name gets "library/"
//   neither tag nor digest: the tag is "latest"
import fc from 'fast-check';
import t from 'tap';
import { isDigestString } from '../../lib/oci/digest.js';
import { formatImageRef, parseImageRef, type ImageRef } from '../../lib/oci/image-ref.js';
import { isValidName, isValidTag } from '../../lib/oci/name.js';
import { ALNUM, anyString, attempt, charsFrom, digestString, holds, mutated, repositoryName, tag } from '../fixtures/property.js';

const hostComponent = fc
  .tuple(fc.constantFrom(...ALNUM), fc.option(fc.tuple(charsFrom(`${ALNUM}-`, 0, 8), fc.constantFrom(...ALNUM)), { nil: undefined }))
  .map(([first, more]) => (more ? first + more[0] + more[1] : first));
const port = fc.integer({ min: 1, max: 65535 }).map(String);

/** Registry hosts as clients write them: a dotted domain, a host with a port, localhost, Docker Hub's aliases. */
const host = fc.oneof(
  fc.tuple(fc.array(hostComponent, { minLength: 2, maxLength: 4 }), fc.option(port, { nil: undefined })).map(([c, p]) => c.join('.') + (p ? `:${p}` : '')),
  fc.tuple(hostComponent, port).map(([h, p]) => `${h}:${p}`),
  fc.constant('localhost'),
  port.map((p) => `localhost:${p}`),
  fc.constantFrom('docker.io', 'index.docker.io', 'registry-1.docker.io', 'Docker.IO', 'ghcr.io', 'GHCR.io:443'),
);

interface Parts {
  host: string | undefined;
  name: string;
  tag: string | undefined;
  digest: string | undefined;
}

const parts: fc.Arbitrary<Parts> = fc.record({
  host: fc.option(host, { nil: undefined }),
  name: repositoryName,
  tag: fc.option(tag, { nil: undefined }),
  digest: fc.option(digestString, { nil: undefined }),
});

function write(p: Parts): string {
  return `${p.host !== undefined ? `${p.host}/` : ''}${p.name}${p.tag !== undefined ? `:${p.tag}` : ''}${p.digest !== undefined ? `@${p.digest}` : ''}`;
}

/** distribution's domain grammar: dot-separated labels of letters, digits and inner dashes, an optional port. */
const DOMAIN_RE = /^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$/;

/**
 * What Docker makes of the parts: the oracle, written from the rules above. A first component
 * that looks like a host but is none (`a_b.c/d`: "_" is no host character) is refused.
 */
function expected(p: Parts): ImageRef | 'refused' {
  let text = write(p);
  let registry = 'docker.io';
  const slash = text.indexOf('/');
  const first = slash === -1 ? '' : text.slice(0, slash);
  if (slash !== -1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    if (!DOMAIN_RE.test(first)) return 'refused';
    registry = first.toLowerCase();
    text = text.slice(slash + 1);
  }
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = 'docker.io';
  let name = text.replace(/[:@].*$/, '');
  if (registry === 'docker.io' && !name.includes('/')) name = `library/${name}`;
  return { registry, name, tag: p.tag ?? (p.digest === undefined ? 'latest' : null), digest: p.digest ?? null };
}

/** Parts that make a reference Docker accepts. */
const goodParts = parts.filter((p) => expected(p) !== 'refused');

t.test('every reference built from a host, a name, a tag and a digest parses to what Docker makes of it', async (t) => {
  holds(
    t,
    fc.property(parts, (p) => {
      const outcome = attempt(() => parseImageRef(write(p)));
      const want = expected(p);
      if (want === 'refused') return !outcome.ok && outcome.code === 'NAME_INVALID';
      if (!outcome.ok) return false;
      const got = outcome.value;
      return got.registry === want.registry && got.name === want.name && got.tag === want.tag && got.digest === want.digest;
    }),
    { numRuns: 300 },
  );
});

t.test('surrounding whitespace is ignored', async (t) => {
  holds(
    t,
    fc.property(goodParts, charsFrom(' \t\n', 0, 3), charsFrom(' \t\n', 0, 3), (p, before, after) => {
      const a = parseImageRef(write(p));
      const b = parseImageRef(before + write(p) + after);
      return formatImageRef(a) === formatImageRef(b);
    }),
  );
});

t.test('formatting a parsed reference gives its canonical form, which parses to the same reference', async (t) => {
  holds(
    t,
    fc.property(goodParts, (p) => {
      const once = parseImageRef(write(p));
      const canonical = formatImageRef(once);
      const twice = parseImageRef(canonical);
      return formatImageRef(twice) === canonical && JSON.stringify(twice) === JSON.stringify(once);
    }),
    { numRuns: 300 },
  );
});

t.test('a reference already in canonical form formats back to exactly itself', async (t) => {
  const canonical = goodParts
    .filter((p) => p.tag !== undefined || p.digest !== undefined)
    .map((p) => formatImageRef(parseImageRef(write(p))));
  holds(
    t,
    fc.property(canonical, (s) => formatImageRef(parseImageRef(s)) === s),
  );
});

t.test('any input either parses to a valid reference or is refused with NAME_INVALID, never another exception', async (t) => {
  const refLike = fc.oneof(anyString, parts.map(write), mutated(parts.map(write), 'A:/@.é _%'));
  holds(
    t,
    fc.property(refLike, (s) => {
      const outcome = attempt(() => parseImageRef(s));
      if (!outcome.ok) return outcome.code === 'NAME_INVALID' && outcome.status === 400;
      const r = outcome.value;
      return (
        isValidName(r.name) &&
        r.registry === r.registry.toLowerCase() &&
        r.registry !== 'index.docker.io' &&
        r.registry !== 'registry-1.docker.io' &&
        (r.tag === null || isValidTag(r.tag)) &&
        (r.digest === null || isDigestString(r.digest)) &&
        (r.tag !== null || r.digest !== null)
      );
    }),
    { numRuns: 500 },
  );
});
