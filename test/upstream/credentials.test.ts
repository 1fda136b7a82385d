// The credential providers' caching rules (lib/upstream/credentials/), with a fake clock: reused
// until shortly before expiry, fetched again after a refusal of that very credential, one fetch
// for concurrent callers, a failing source not asked again at once. Real files, and the GCP
// metadata fake on 127.0.0.1.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import { credentialProvider, CredentialError, FAILURE_BACKOFF_MS, parseEcrHost } from '../../lib/upstream/credentials/index.js';
import { startGcpMetadata } from '../fixtures/credential-fakes.js';
import { tmpDir } from '../fixtures/util.js';

class Clock {
  t = 1_700_000_000_000;
  now = (): number => this.t;
}

async function passwordFile(t: Parameters<typeof tmpDir>[0], content: string): Promise<string> {
  const file = path.join(await tmpDir(t), 'password');
  await writeFile(file, content);
  return file;
}

t.test('a password file is read once, reused for 60 s, then read again (a rotated secret is picked up)', async (t) => {
  const clock = new Clock();
  const file = await passwordFile(t, 'first\n');
  const p = credentialProvider({ type: 'basic', username: 'robot', passwordFile: file }, 'https://r.example.com', clock.now);
  t.same(await p.get(), { kind: 'basic', username: 'robot', password: 'first' }, 'trimmed');
  await writeFile(file, 'second\n');
  clock.t += 59_000;
  t.match(await p.get(), { password: 'first' }, 'reused within 60 s');
  clock.t += 2_000;
  t.match(await p.get(), { password: 'second' }, 'read again after 60 s');
  t.equal(p.fetches, 2);
});

t.test('a refusal of the current credential makes the next get fetch anew; a refusal of an older one does not', async (t) => {
  const clock = new Clock();
  const file = await passwordFile(t, 'one');
  const p = credentialProvider({ type: 'basic', username: 'robot', passwordFile: file }, 'https://r.example.com', clock.now);
  const first = await p.get();
  await writeFile(file, 'two');
  p.invalidate(first);
  const second = await p.get();
  t.match(second, { password: 'two' }, 'fetched anew after the refusal');
  p.invalidate(first);
  t.equal(await p.get(), second, 'a late refusal of the old credential changes nothing');
  t.equal(p.fetches, 2);
});

t.test('concurrent callers share one fetch', async (t) => {
  const file = await passwordFile(t, 'shared');
  const p = credentialProvider({ type: 'basic', username: 'robot', passwordFile: file }, 'https://r.example.com');
  const all = await Promise.all(Array.from({ length: 20 }, () => p.get()));
  t.ok(all.every((c) => c === all[0]));
  t.equal(p.fetches, 1);
});

t.test('a failing source: an error naming it, and not asked again for a few seconds', async (t) => {
  const clock = new Clock();
  const file = path.join(await tmpDir(t), 'missing');
  const p = credentialProvider({ type: 'basic', username: 'robot', passwordFile: file }, 'https://r.example.com', clock.now);
  await t.rejects(p.get(), new CredentialError(`cannot read the password file ${file} (ENOENT)`));
  await t.rejects(p.get(), CredentialError);
  t.equal(p.fetches, 1, 'the second get did not read again');
  await writeFile(file, 'now-there');
  clock.t += FAILURE_BACKOFF_MS;
  t.match(await p.get(), { password: 'now-there' }, 'asked again after the back-off');
});

t.test('GCP metadata server: the access token is reused until 5 minutes before expires_in, then renewed', async (t) => {
  const clock = new Clock();
  const md = await startGcpMetadata(t, { lifeMs: 3_600_000 });
  const p = credentialProvider({ type: 'gcp', keyFile: null, tokenFile: null, metadataUrl: md.url }, 'https://europe-docker.pkg.dev', clock.now);
  const first = await p.get();
  t.match(first, { kind: 'basic', username: 'oauth2accesstoken' });
  clock.t += 54 * 60_000;
  t.equal(await p.get(), first, 'reused 54 minutes later');
  clock.t += 2 * 60_000;
  const renewed = await p.get();
  t.not(renewed, first, 'renewed 56 minutes later');
  t.equal(md.calls(), 2);
  t.ok(md.requests.every((r) => r.headers['metadata-flavor'] === 'Google'));
});

t.test('GCP metadata server refusing (no Metadata-Flavor would be 403): the status is the cause, no body echoed', async (t) => {
  const md = await startGcpMetadata(t, { lifeMs: 60_000 });
  const p = credentialProvider({ type: 'gcp', keyFile: null, tokenFile: null, metadataUrl: `${md.url}/nowhere` }, 'https://gcr.io');
  await t.rejects(p.get(), { name: 'CredentialError', message: `the GCP metadata server (${md.url}/nowhere) answered 404` });
});

t.test('a service-account key file that is not JSON is refused, naming the file only', async (t) => {
  const file = await passwordFile(t, 'not json but secret');
  const p = credentialProvider({ type: 'gcp', keyFile: file, tokenFile: null, metadataUrl: 'http://127.0.0.1:1' }, 'https://gcr.io');
  const err = (await p.get().catch((e: unknown) => e)) as Error;
  t.equal(err.message, `the service-account key file ${file} is not JSON`);
  t.notMatch(err.message, /secret/);
});

t.test('a GCP access token file is sent as Basic oauth2accesstoken; a key file as _json_key with its JSON', async (t) => {
  const token = await passwordFile(t, 'ya29.from-a-file\n');
  t.same(await credentialProvider({ type: 'gcp', keyFile: null, tokenFile: token, metadataUrl: 'http://127.0.0.1:1' }, 'https://gcr.io').get(), {
    kind: 'basic',
    username: 'oauth2accesstoken',
    password: 'ya29.from-a-file',
  });
  const key = await passwordFile(t, '{"type":"service_account"}');
  t.same(await credentialProvider({ type: 'gcp', keyFile: key, tokenFile: null, metadataUrl: 'http://127.0.0.1:1' }, 'https://gcr.io').get(), {
    kind: 'basic',
    username: '_json_key',
    password: '{"type":"service_account"}',
  });
});

t.test('the account and region of an ECR registry host', async (t) => {
  t.same(parseEcrHost('123456789012.dkr.ecr.eu-west-1.amazonaws.com'), { registryId: '123456789012', region: 'eu-west-1' });
  t.same(parseEcrHost('123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com'), { registryId: '123456789012', region: 'us-gov-west-1' });
  t.same(parseEcrHost('123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn'), { registryId: '123456789012', region: 'cn-north-1' });
  t.equal(parseEcrHost('public.ecr.aws'), null);
  t.equal(parseEcrHost('ghcr.io'), null);
});
