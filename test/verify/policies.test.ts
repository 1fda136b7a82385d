// Bad signature policies are ConfigErrors naming the key: unreadable or malformed key files, a
// key of an unsupported kind, a missing or malformed trusted root, a bad regular expression, a
// keyless policy without a trusted root, a policy that trusts nothing.
import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { ConfigError, parseConfig } from '../../lib/config/config.js';
import { verifySchema } from '../../lib/config/verify-schema.js';
import { SignaturePolicies } from '../../lib/verify/policies.js';
import { tmpDir } from '../fixtures/util.js';

async function problems(verify: unknown): Promise<string[]> {
  try {
    await SignaturePolicies.load(verifySchema.parse(verify));
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

function schemaProblems(verify: unknown): string[] {
  try {
    parseConfig({ verify });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

const dir = await tmpDir(t, 'verify-policies-');
const good = path.join(dir, 'good.pub');
await writeFile(good, generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ type: 'spki', format: 'pem' }));
const p384 = path.join(dir, 'p384.pub');
await writeFile(p384, generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey.export({ type: 'spki', format: 'pem' }));
const garbage = path.join(dir, 'garbage.pub');
await writeFile(garbage, '-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n');
const badRoot = path.join(dir, 'root.json');
await writeFile(badRoot, '{"mediaType": 1');

t.test('an unreadable key file names its key', async (t) => {
  t.match(await problems({ policies: [{ repository: '**', keys: [good, path.join(dir, 'missing.pub')] }] }), [/^verify\.policies\[0\]\.keys\[1\]: cannot read .*missing\.pub: ENOENT/]);
});

t.test('a file that is not a PEM public key names its key', async (t) => {
  t.match(await problems({ policies: [{ repository: '**', keys: [garbage] }] }), [/^verify\.policies\[0\]\.keys\[0\]: .*garbage\.pub is not a PEM public key/]);
});

t.test('an ECDSA key on another curve than P-256 is refused', async (t) => {
  t.match(await problems({ policies: [{ repository: '**', keys: [p384] }] }), [/keys\[0\]: .* secp384r1 key: use ECDSA P-256, RSA or Ed25519/]);
});

t.test('a missing trusted root names keyless.trustedRoot', async (t) => {
  const keyless = { trustedRoot: path.join(dir, 'none.json'), identities: [{ subject: 'a@b', issuer: 'https://i' }] };
  t.match(await problems({ policies: [{ repository: '**', keyless }] }), [/^verify\.policies\[0\]\.keyless\.trustedRoot: cannot read .*none\.json: ENOENT/]);
});

t.test('a trusted root that is not JSON names keyless.trustedRoot', async (t) => {
  const keyless = { trustedRoot: badRoot, identities: [{ subject: 'a@b', issuer: 'https://i' }] };
  t.match(await problems({ policies: [{ repository: '**', keyless }] }), [/keyless\.trustedRoot: .*root\.json is not a sigstore trusted_root\.json/]);
});

t.test('a bad regular expression is refused when the configuration is read', async (t) => {
  const keyless = { trustedRoot: badRoot, identities: [{ subjectRegExp: '(unclosed', issuer: 'https://i' }] };
  t.match(schemaProblems({ policies: [{ repository: '**', keyless }] }), [/verify\.policies\.0\.keyless\.identities\.0\.subjectRegExp.*not a regular expression/]);
});

t.test('keyless without a trusted root, and a policy trusting nothing, are refused', async (t) => {
  t.match(schemaProblems({ policies: [{ repository: '**', keyless: { identities: [{ subject: 'a', issuer: 'b' }] } }] }), [/verify\.policies\.0\.keyless\.trustedRoot/]);
  t.match(schemaProblems({ policies: [{ repository: '**', mode: 'require' }] }), [/verify\.policies\.0\.keys.*needs keys, keyless, or both/]);
  t.same(schemaProblems({ policies: [{ repository: '**', mode: 'off' }] }), [], 'an off policy needs nothing');
});

t.test('the first matching policy decides, and an off policy checks nothing', async (t) => {
  const p = await SignaturePolicies.load(verifySchema.parse({ policies: [{ repository: 'docker.io/library/*', mode: 'off' }, { repository: 'docker.io/**', keys: [good] }] }));
  t.equal(p.match('docker.io/library/alpine'), null);
  t.equal(p.match('docker.io/bitnami/redis')?.index, 1);
  t.equal(p.match('ghcr.io/x'), null);
});
