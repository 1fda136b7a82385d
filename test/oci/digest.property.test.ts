// Digests, after the image spec (descriptor.md): `algorithm ":" encoded`. stevedore accepts the
// registered algorithms sha256 and sha512 with their exact encoding, lowercase hex of 64 or 128
// characters; everything else is DIGEST_INVALID.
import fc from 'fast-check';
import t from 'tap';
import { digestOf, isDigestString, parseDigest, tryParseDigest } from '../../lib/oci/digest.js';
import {
  ACCEPTED_DIGEST_RE,
  HEX_LENGTH,
  LOWER_HEX,
  anyString,
  attempt,
  charsFrom,
  digestAlgorithm,
  digestString,
  holds,
  mutated,
} from '../fixtures/property.js';

t.test('the digest of any bytes parses back to the same algorithm, hex and string', async (t) => {
  holds(
    t,
    fc.property(fc.uint8Array({ maxLength: 256 }), digestAlgorithm, (bytes, alg) => {
      const d = digestOf(Buffer.from(bytes), alg);
      const parsed = parseDigest(d.value);
      return d.value === `${alg}:${d.hex}` && d.hex.length === HEX_LENGTH[alg] && parsed.algorithm === alg && parsed.hex === d.hex && parsed.value === d.value;
    }),
  );
});

t.test('any lowercase hex of the right length after a registered algorithm is accepted and split at the colon', async (t) => {
  holds(
    t,
    fc.property(digestString, (s) => {
      const d = parseDigest(s);
      return `${d.algorithm}:${d.hex}` === s && d.value === s && isDigestString(s);
    }),
  );
});

t.test('hex of any other length is refused with DIGEST_INVALID', async (t) => {
  holds(
    t,
    fc.property(
      digestAlgorithm,
      charsFrom(LOWER_HEX, 0, 200).filter((h) => h.length !== 64 && h.length !== 128),
      (alg, hex) => {
        const outcome = attempt(() => parseDigest(`${alg}:${hex}`));
        return !outcome.ok && outcome.code === 'DIGEST_INVALID';
      },
    ),
  );
});

t.test('one upper-case or non-hex character anywhere in the encoding is refused with DIGEST_INVALID', async (t) => {
  holds(
    t,
    fc.property(digestString, fc.nat(), fc.constantFrom(...'ABCDEFgxz-_=+/ :'), (s, at, c) => {
      const colon = s.indexOf(':');
      const i = colon + 1 + (at % (s.length - colon - 1));
      const bad = s.slice(0, i) + c + s.slice(i + 1);
      const outcome = attempt(() => parseDigest(bad));
      return !outcome.ok && outcome.code === 'DIGEST_INVALID';
    }),
  );
});

t.test('a digest well formed for the image spec but of an algorithm other than sha256 or sha512 is refused with DIGEST_INVALID', async (t) => {
  // algorithm := component (separator component)*, component [a-z0-9]+, separator [+._-]; encoded [a-zA-Z0-9=_-]+
  const algorithm = fc
    .tuple(charsFrom('abcdefhmsz0123456789', 1, 8), fc.array(fc.tuple(fc.constantFrom('+', '.', '_', '-'), charsFrom('abz059', 1, 5)), { maxLength: 2 }))
    .map(([head, rest]) => head + rest.map(([s, c]) => s + c).join(''))
    .filter((a) => a !== 'sha256' && a !== 'sha512');
  const encoded = charsFrom(`${LOWER_HEX}ABCXYZ=_-`, 1, 130);
  holds(
    t,
    fc.property(algorithm, encoded, (alg, enc) => {
      const outcome = attempt(() => parseDigest(`${alg}:${enc}`));
      return !outcome.ok && outcome.code === 'DIGEST_INVALID';
    }),
  );
});

t.test('any input is accepted exactly when it is sha256 or sha512 with its hex, and refused only with DIGEST_INVALID', async (t) => {
  const digestLike = fc.oneof(anyString, digestString, mutated(digestString, `${LOWER_HEX}A:@ `));
  holds(
    t,
    fc.property(digestLike, (s) => {
      const outcome = attempt(() => parseDigest(s));
      const accepted = ACCEPTED_DIGEST_RE.test(s);
      const consistent = isDigestString(s) === accepted && (tryParseDigest(s) !== null) === accepted;
      return consistent && (outcome.ok ? accepted && outcome.value.value === s : !accepted && outcome.code === 'DIGEST_INVALID');
    }),
    { numRuns: 500 },
  );
});
