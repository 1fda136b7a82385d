import t from 'tap';
import { OciError } from '../../lib/oci/errors.js';
import {
  MAX_NAME_LENGTH,
  isValidName,
  isValidNameComponent,
  isValidTag,
  parseName,
  parseReference,
  referenceString,
} from '../../lib/oci/name.js';

const HEX = 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad';

const validNames: Array<[string, string]> = [
  ['a single character', 'a'],
  ['a single digit', '0'],
  ['one lowercase component', 'alpine'],
  ['two components', 'library/alpine'],
  ['many components', 'a/b/c/d/e'],
  ['digits and letters', 'app2/v1beta'],
  ['a dot separator', 'foo.bar'],
  ['a single underscore separator', 'foo_bar'],
  ['a double underscore separator', 'foo__bar'],
  ['a dash separator', 'foo-bar'],
  ['several dashes in a row', 'foo---bar'],
  ['mixed separators', 'a.b_c__d-e--f'],
  ['a registry-host-like first component', 'ghcr.io/org/app'],
  ['exactly 255 characters', 'a'.repeat(255)],
  ['255 characters counting slashes', `${'a'.repeat(127)}/${'b'.repeat(127)}`],
];

for (const [what, name] of validNames) {
  t.test(`a name with ${what} is valid`, async (t) => {
    t.equal(isValidName(name), true);
    t.equal(parseName(name), name);
  });
}

const invalidNames: Array<[string, string]> = [
  ['nothing at all', ''],
  ['256 characters', 'a'.repeat(256)],
  ['256 characters counting slashes', `${'a'.repeat(127)}/${'b'.repeat(128)}`],
  ['only a slash', '/'],
  ['a leading slash', '/alpine'],
  ['a trailing slash', 'library/'],
  ['an empty component', 'library//alpine'],
  ['a ".." component', '..'],
  ['a ".." in the middle', 'a/../b'],
  ['a ".." at the end', 'a/..'],
  ['a "." component', 'a/./b'],
  ['"%2e%2e"', '%2e%2e'],
  ['"%2e%2e" as a component', 'a/%2e%2e/b'],
  ['"%2E%2E" in upper case', 'a/%2E%2E/b'],
  ['an encoded slash', 'a%2fb'],
  ['an uppercase letter', 'Alpine'],
  ['an uppercase letter in a later component', 'library/alpinE'],
  ['a triple underscore', 'foo___bar'],
  ['a trailing underscore', 'foo_'],
  ['a leading underscore', '_foo'],
  ['a trailing dot', 'foo.'],
  ['a leading dot', '.foo'],
  ['two dots in a row', 'foo..bar'],
  ['a trailing dash', 'foo-'],
  ['a leading dash', '-foo'],
  ['dot then underscore', 'foo._bar'],
  ['dash then underscore', 'foo-_bar'],
  ['underscore then dash', 'foo_-bar'],
  ['a space', 'foo bar'],
  ['a colon', 'foo:bar'],
  ['an at sign', 'foo@sha256'],
  ['a backslash', 'a\\b'],
  ['a newline', 'a\nb'],
  ['a NUL byte', 'a\0b'],
  ['a non-ASCII letter', 'caf\u00e9'],
  ['a fullwidth letter', '\uff41'],
  ['a trailing separator component', 'a/b-'],
];

for (const [what, name] of invalidNames) {
  t.test(`a name with ${what} is invalid`, async (t) => {
    t.equal(isValidName(name), false);
    t.throws(() => parseName(name), { code: 'NAME_INVALID' });
  });
}

t.test('MAX_NAME_LENGTH is 255', async (t) => {
  t.equal(MAX_NAME_LENGTH, 255);
});

t.test('isValidNameComponent refuses a component with a slash', async (t) => {
  t.equal(isValidNameComponent('a/b'), false);
  t.equal(isValidNameComponent('a'), true);
});

t.test('parseName throws an OciError with status 400 naming the input', async (t) => {
  try {
    parseName('Bad');
    t.fail('did not throw');
  } catch (err) {
    t.ok(err instanceof OciError);
    t.equal((err as OciError).status, 400);
    t.match((err as Error).message, /"Bad"/);
  }
});

t.test('parseName quotes at most 300 characters of a huge name', async (t) => {
  try {
    parseName('A'.repeat(100_000));
    t.fail('did not throw');
  } catch (err) {
    t.ok((err as Error).message.length < 400, `message length ${(err as Error).message.length}`);
  }
});

const validTags = ['latest', 'v1.2.3', '1.0', '_private', 'A', 'UPPER-case_Mixed.9', 'a'.repeat(128), '0'];
for (const tag of validTags) {
  t.test(`the tag ${JSON.stringify(tag.length > 20 ? `${tag.slice(0, 10)}…(${tag.length})` : tag)} is valid`, async (t) => {
    t.equal(isValidTag(tag), true);
  });
}

const invalidTags: Array<[string, string]> = [
  ['is empty', ''],
  ['starts with a dot', '.hidden'],
  ['starts with a dash', '-rc1'],
  ['has 129 characters', 'a'.repeat(129)],
  ['has a slash', 'a/b'],
  ['has a colon', 'a:b'],
  ['has a space', 'a b'],
  ['has an at sign', 'a@b'],
  ['has a plus', '1.0+build'],
  ['has a non-ASCII letter', 'v\u00e9'],
  ['has a trailing newline', 'latest\n'],
];
for (const [what, tag] of invalidTags) {
  t.test(`a tag that ${what} is invalid`, async (t) => {
    t.equal(isValidTag(tag), false);
  });
}

t.test('parseReference reads a tag as a tag reference', async (t) => {
  t.same(parseReference('latest'), { kind: 'tag', tag: 'latest' });
});

t.test('parseReference reads a sha256 digest as a digest reference', async (t) => {
  t.same(parseReference(`sha256:${HEX}`), {
    kind: 'digest',
    digest: { algorithm: 'sha256', hex: HEX, value: `sha256:${HEX}` },
  });
});

t.test('parseReference reads a sha512 digest as a digest reference', async (t) => {
  const ref = parseReference(`sha512:${HEX}${HEX}`);
  t.equal(ref.kind, 'digest');
  t.equal(ref.kind === 'digest' && ref.digest.algorithm, 'sha512');
});

t.test('parseReference refuses a malformed digest with DIGEST_INVALID', async (t) => {
  t.throws(() => parseReference('sha256:abc'), { code: 'DIGEST_INVALID', status: 400 });
});

t.test('parseReference refuses a digest with uppercase hex with DIGEST_INVALID', async (t) => {
  t.throws(() => parseReference(`sha256:${HEX.toUpperCase()}`), { code: 'DIGEST_INVALID' });
});

t.test('parseReference treats anything with a colon as a digest, never as a tag', async (t) => {
  t.throws(() => parseReference('v1:latest'), { code: 'DIGEST_INVALID' });
});

t.test('parseReference refuses an invalid tag with MANIFEST_INVALID and status 400', async (t) => {
  t.throws(() => parseReference('-bad'), { code: 'MANIFEST_INVALID', status: 400 });
});

t.test('parseReference refuses an empty reference', async (t) => {
  t.throws(() => parseReference(''), { code: 'MANIFEST_INVALID' });
});

t.test('parseReference refuses a tag longer than 128 characters', async (t) => {
  t.throws(() => parseReference('a'.repeat(129)), { code: 'MANIFEST_INVALID' });
});

t.test('parseReference refuses a path-traversal reference', async (t) => {
  t.throws(() => parseReference('..'), { code: 'MANIFEST_INVALID' });
  t.throws(() => parseReference('%2e%2e'), { code: 'MANIFEST_INVALID' });
});

t.test('referenceString gives back the tag of a tag reference', async (t) => {
  t.equal(referenceString(parseReference('v1.0')), 'v1.0');
});

t.test('referenceString gives back the digest string of a digest reference', async (t) => {
  t.equal(referenceString(parseReference(`sha256:${HEX}`)), `sha256:${HEX}`);
});
