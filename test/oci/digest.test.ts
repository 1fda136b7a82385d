import t from 'tap';
import { createDigester, digestOf, isDigestString, parseDigest, tryParseDigest } from '../../lib/oci/digest.js';
import { OciError } from '../../lib/oci/errors.js';

const SHA256_EMPTY = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const SHA256_ABC = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad';
const SHA512_ABC =
  'ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f';

t.test('a sha256 digest with 64 lowercase hex digits parses into algorithm, hex and value', async (t) => {
  t.same(tryParseDigest(`sha256:${SHA256_ABC}`), { algorithm: 'sha256', hex: SHA256_ABC, value: `sha256:${SHA256_ABC}` });
});

t.test('a sha512 digest with 128 lowercase hex digits parses', async (t) => {
  t.same(tryParseDigest(`sha512:${SHA512_ABC}`), { algorithm: 'sha512', hex: SHA512_ABC, value: `sha512:${SHA512_ABC}` });
});

const invalid: Array<[string, string]> = [
  ['sha256 with 63 hex digits', `sha256:${SHA256_ABC.slice(1)}`],
  ['sha256 with 65 hex digits', `sha256:${SHA256_ABC}0`],
  ['sha256 with 128 hex digits (a sha512 length)', `sha256:${SHA512_ABC}`],
  ['sha512 with 127 hex digits', `sha512:${SHA512_ABC.slice(1)}`],
  ['sha512 with 129 hex digits', `sha512:${SHA512_ABC}0`],
  ['sha512 with 64 hex digits (a sha256 length)', `sha512:${SHA256_ABC}`],
  ['uppercase hex', `sha256:${SHA256_ABC.toUpperCase()}`],
  ['one uppercase hex digit', `sha256:${SHA256_ABC.slice(0, -1)}D`],
  ['an uppercase algorithm', `SHA256:${SHA256_ABC}`],
  ['md5', 'md5:900150983cd24fb0d6963f7d28e17f72'],
  ['sha384', `sha384:${'a'.repeat(96)}`],
  ['blake3', `blake3:${SHA256_ABC}`],
  ['sha1', 'sha1:a9993e364706816aba3e25717850c26c9cd0d89d'],
  ['a non-hex digit', `sha256:${SHA256_ABC.slice(0, -1)}g`],
  ['no algorithm', SHA256_ABC],
  ['an empty algorithm', `:${SHA256_ABC}`],
  ['an empty hex part', 'sha256:'],
  ['the empty string', ''],
  ['a trailing newline', `sha256:${SHA256_ABC}\n`],
  ['a leading space', ` sha256:${SHA256_ABC}`],
  ['a trailing space', `sha256:${SHA256_ABC} `],
  ['two colons', `sha256::${SHA256_ABC}`],
  ['a path after the hex', `sha256:${SHA256_ABC}/../x`],
  ['a "+" algorithm suffix', `sha256+b64u:${SHA256_ABC}`],
];

for (const [what, input] of invalid) {
  t.test(`a digest with ${what} is refused`, async (t) => {
    t.equal(tryParseDigest(input), null);
    t.equal(isDigestString(input), false);
    t.throws(() => parseDigest(input), { code: 'DIGEST_INVALID' });
  });
}

t.test('isDigestString accepts a valid digest', async (t) => {
  t.equal(isDigestString(`sha256:${SHA256_ABC}`), true);
  t.equal(isDigestString(`sha512:${SHA512_ABC}`), true);
});

t.test('parseDigest returns the parsed digest for valid input', async (t) => {
  t.same(parseDigest(`sha256:${SHA256_ABC}`), { algorithm: 'sha256', hex: SHA256_ABC, value: `sha256:${SHA256_ABC}` });
});

t.test('parseDigest throws an OciError with status 400', async (t) => {
  try {
    parseDigest('sha256:nope');
    t.fail('did not throw');
  } catch (err) {
    t.ok(err instanceof OciError);
    t.equal((err as OciError).status, 400);
    t.equal((err as OciError).code, 'DIGEST_INVALID');
    t.match((err as OciError).message, /sha256:nope/);
  }
});

t.test('parseDigest quotes at most 200 characters of a huge input in its message', async (t) => {
  try {
    parseDigest(`sha256:${'x'.repeat(100_000)}`);
    t.fail('did not throw');
  } catch (err) {
    t.ok((err as Error).message.length < 300, `message length ${(err as Error).message.length}`);
  }
});

t.test('digestOf an empty input is the well-known sha256 of nothing', async (t) => {
  t.same(digestOf(''), { algorithm: 'sha256', hex: SHA256_EMPTY, value: `sha256:${SHA256_EMPTY}` });
});

t.test('digestOf a string and of the same bytes as a Buffer are equal', async (t) => {
  t.same(digestOf('abc'), digestOf(Buffer.from('abc')));
  t.equal(digestOf('abc').value, `sha256:${SHA256_ABC}`);
});

t.test('digestOf with sha512 gives the sha512 digest', async (t) => {
  t.same(digestOf('abc', 'sha512'), { algorithm: 'sha512', hex: SHA512_ABC, value: `sha512:${SHA512_ABC}` });
});

t.test('digestOf produces a digest that parseDigest accepts back', async (t) => {
  for (const alg of ['sha256', 'sha512'] as const) {
    const d = digestOf(Buffer.from([0, 1, 2, 255]), alg);
    t.same(parseDigest(d.value), d, alg);
  }
});

t.test('createDigester hashes incrementally to the same hex as digestOf', async (t) => {
  for (const alg of ['sha256', 'sha512'] as const) {
    const h = createDigester(alg);
    h.update('a');
    h.update(Buffer.from('bc'));
    t.equal(h.digest('hex'), digestOf('abc', alg).hex, alg);
  }
});
