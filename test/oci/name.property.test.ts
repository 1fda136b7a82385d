// Repository names and manifest references, against the distribution spec's grammar:
//   <name> matches [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*, at most 255 characters
//   a tag matches [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}; a reference is a tag or a digest
import fc from 'fast-check';
import t from 'tap';
import {
  MAX_NAME_LENGTH,
  isValidName,
  isValidNameComponent,
  isValidTag,
  parseName,
  parseReference,
  referenceString,
} from '../../lib/oci/name.js';
import {
  ALNUM,
  SPEC_NAME_RE,
  SPEC_TAG_RE,
  anyString,
  attempt,
  charsFrom,
  digestString,
  holds,
  mutated,
  nameComponent,
  repositoryName,
  tag,
} from '../fixtures/property.js';

/** Characters that matter to the name grammar, and some that never belong in it. */
const NAME_ALPHABET = 'az09._-/A:@ %é\\';

/** Valid names, their near misses, and strings over the grammar's alphabet. */
const nameLike = fc.oneof(repositoryName, mutated(repositoryName, NAME_ALPHABET), charsFrom(NAME_ALPHABET, 0, 24));

t.test('every name the spec grammar generates is accepted and returned unchanged', async (t) => {
  holds(
    t,
    fc.property(repositoryName, (name) => isValidName(name) && parseName(name) === name),
  );
});

t.test('a string is a valid name exactly when the spec expression matches it and it has at most 255 characters', async (t) => {
  holds(
    t,
    fc.property(nameLike, (s) => isValidName(s) === (SPEC_NAME_RE.test(s) && s.length <= MAX_NAME_LENGTH)),
    { numRuns: 500 },
  );
});

t.test('a name is valid exactly when each of its "/"-separated components is', async (t) => {
  holds(
    t,
    fc.property(nameLike, (s) => isValidName(s) === (s.length > 0 && s.length <= MAX_NAME_LENGTH && s.split('/').every(isValidNameComponent))),
    { numRuns: 300 },
  );
});

t.test('a grammatical name is accepted up to 255 characters and refused with NAME_INVALID beyond', async (t) => {
  const longName = fc.array(nameComponent, { minLength: 1, maxLength: 12 }).map((c) => c.join('/'));
  holds(
    t,
    fc.property(longName, (name) => {
      const outcome = attempt(() => parseName(name));
      return name.length <= 255 ? outcome.ok : !outcome.ok && outcome.code === 'NAME_INVALID';
    }),
  );
});

t.test('a name that could climb out of the store (empty, "." or ".." segments, slashes at the ends) is refused', async (t) => {
  const escaping = fc
    .tuple(fc.array(fc.oneof(nameComponent, fc.constantFrom('', '.', '..', '%2e%2e')), { minLength: 1, maxLength: 5 }))
    .map(([parts]) => parts.join('/'))
    .filter((s) => s.split('/').some((p) => p === '' || p === '.' || p === '..' || p.includes('%')));
  holds(
    t,
    fc.property(escaping, (name) => {
      const outcome = attempt(() => parseName(name));
      return !outcome.ok && outcome.code === 'NAME_INVALID' && outcome.status === 400;
    }),
  );
});

t.test('parseName refuses any other input with NAME_INVALID and never throws anything else', async (t) => {
  holds(
    t,
    fc.property(fc.oneof(anyString, nameLike), (s) => {
      const outcome = attempt(() => parseName(s));
      return outcome.ok ? outcome.value === s && SPEC_NAME_RE.test(s) : outcome.code === 'NAME_INVALID';
    }),
    { numRuns: 500 },
  );
});

// ---- tags and references ----------------------------------------------------------------------

t.test('every tag of the spec grammar is a tag reference that formats back to itself', async (t) => {
  holds(
    t,
    fc.property(tag, (tg) => {
      const ref = parseReference(tg);
      return isValidTag(tg) && ref.kind === 'tag' && ref.tag === tg && referenceString(ref) === tg;
    }),
  );
});

t.test('every accepted digest is a digest reference that formats back to itself', async (t) => {
  holds(
    t,
    fc.property(digestString, (d) => {
      const ref = parseReference(d);
      return ref.kind === 'digest' && ref.digest.value === d && referenceString(ref) === d;
    }),
  );
});

t.test('a tag-like string is a valid tag exactly when the spec expression matches it (1 to 128 characters)', async (t) => {
  const TAG_ALPHABET = `${ALNUM.slice(0, 4)}Z9_.-:/@+ `;
  const tagLike = fc.oneof(tag, mutated(tag, TAG_ALPHABET), charsFrom(TAG_ALPHABET, 0, 12), fc.nat({ max: 300 }).map((n) => 'v'.repeat(n)));
  holds(
    t,
    fc.property(tagLike, (s) => isValidTag(s) === SPEC_TAG_RE.test(s) && (!isValidTag(s) || (s.length >= 1 && s.length <= 128))),
    { numRuns: 500 },
  );
});

t.test('a reference is refused by kind: DIGEST_INVALID when it has a ":", MANIFEST_INVALID (400) otherwise; never another exception', async (t) => {
  const refLike = fc.oneof(anyString, mutated(tag, 'A:/@ é'), mutated(digestString, 'A:/@g0'));
  holds(
    t,
    fc.property(refLike, (s) => {
      const outcome = attempt(() => parseReference(s));
      if (outcome.ok) return referenceString(outcome.value) === s;
      if (s.includes(':')) return outcome.code === 'DIGEST_INVALID' && outcome.status === 400;
      return outcome.code === 'MANIFEST_INVALID' && outcome.status === 400;
    }),
    { numRuns: 500 },
  );
});
