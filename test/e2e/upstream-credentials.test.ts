// Upstream credentials the way clouds issue them (upstreams.*.credentials, passwordFile), each
// against a fake of its issuer on 127.0.0.1 that hands out expiring secrets and counts its calls,
// and a registry that checks them: the real CNCF distribution (htpasswd) where the credential is a
// fixed password, a programmable one where tokens expire. stevedore runs as a process, so that a
// credential helper is found on its PATH and the AWS SDK reads its environment.
import { chmod, writeFile, readFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { MANIFEST_ACCEPT, buildDockerImage, pushImageWithBasic } from '../fixtures/images.js';
import { rawRequest, ociErrors, type RawResponse } from '../fixtures/http-client.js';
import { BASIC_USER, startRegistry } from '../fixtures/registry.js';
import { logsSettled, spawnStevedore, type StevedoreProcess } from '../fixtures/stevedore-process.js';
import { AWS_KEY, startAad, startAuthRegistry, startEcr, startGcpMetadata, type AuthRegistry } from '../fixtures/credential-fakes.js';
import { sleep } from '../fixtures/fake-upstream.js';
import { tmpDir } from '../fixtures/util.js';

let tagNo = 0;
/** A manifest GET of a tag never asked before: it always reaches the upstream. */
function pull(p: StevedoreProcess, repo = 'team/app'): Promise<RawResponse> {
  return rawRequest(`${p.url}/v2/docker.io/${repo}/manifests/t${++tagNo}`, { headers: { accept: MANIFEST_ACCEPT } });
}

/** No secret in anything stevedore logged (once its last lines have arrived). */
async function assertNoSecrets(t: Test, p: StevedoreProcess, secrets: string[]): Promise<void> {
  await logsSettled(p);
  const logged = JSON.stringify(p.logs);
  t.same(
    secrets.filter((s) => logged.includes(s)),
    [],
    'no secret appears in the log',
  );
}

/** The environment of a stevedore that may use the AWS SDK: the test's access key, nothing else of AWS. */
const AWS_ENV = {
  AWS_ACCESS_KEY_ID: AWS_KEY.id,
  AWS_SECRET_ACCESS_KEY: AWS_KEY.secret,
  AWS_SESSION_TOKEN: undefined,
  AWS_PROFILE: undefined,
  AWS_EC2_METADATA_DISABLED: 'true',
  AWS_CONFIG_FILE: '/nonexistent/aws-config',
  AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/aws-credentials',
};

async function ecrSetup(t: Test, lifeMs: number): Promise<{ reg: AuthRegistry; ecr: Awaited<ReturnType<typeof startEcr>>; p: StevedoreProcess }> {
  const ecr = await startEcr(t, { lifeMs });
  const reg = await startAuthRegistry(t, { mode: 'basic', accepts: (u, pw) => u === 'AWS' && ecr.issued.valid(pw) });
  const p = await spawnStevedore(
    t,
    { defaultUpstream: null, storage: { path: path.join(await tmpDir(t), 'store') }, upstreams: { 'docker.io': { url: reg.url, credentials: { type: 'ecr', region: 'us-east-1', endpoint: ecr.url } } } },
    { env: AWS_ENV },
  );
  return { reg, ecr, p };
}

t.test('ECR: an image is pulled from a real registry (distribution, htpasswd user AWS) with the password GetAuthorizationToken gives', async (t) => {
  const password = 'ecr-password-accepted-by-htpasswd';
  const ecr = await startEcr(t, { lifeMs: 12 * 3_600_000, password });
  const reg = await startRegistry({ users: [{ username: 'AWS', password }] });
  t.teardown(() => reg.stop());
  const img = buildDockerImage('credentials/ecr-real', { layers: 2 });
  await pushImageWithBasic(reg.directUrl, 'team/app', 'v1', `Basic ${Buffer.from(`AWS:${password}`).toString('base64')}`, img);
  const p = await spawnStevedore(
    t,
    { defaultUpstream: null, storage: { path: path.join(await tmpDir(t), 'store') }, upstreams: { 'docker.io': { url: reg.url, credentials: { type: 'ecr', region: 'us-east-1', endpoint: ecr.url } } } },
    { env: AWS_ENV },
  );
  const m = await rawRequest(`${p.url}/v2/docker.io/team/app/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
  t.equal(m.status, 200);
  t.ok(m.body.equals(img.manifest.data), 'the manifest bytes');
  for (const b of [img.config, ...img.layers]) {
    const r = await rawRequest(`${p.url}/v2/docker.io/team/app/blobs/${b.digest}`);
    t.equal(r.status, 200);
    t.ok(r.body.equals(b.data), `blob ${b.digest.slice(0, 19)}: the bytes`);
  }
  t.equal(ecr.calls(), 1, 'one GetAuthorizationToken for the whole pull');
  const authed = reg.requests.filter((q) => q.status === 200);
  t.ok(authed.length >= 4 && authed.every((q) => q.headers.authorization === `Basic ${Buffer.from(`AWS:${password}`).toString('base64')}`), 'every answered request carried AWS:<password>');
  await assertNoSecrets(t, p, [password, AWS_KEY.secret]);
  const metrics = await rawRequest(`${p.url}/metrics`);
  t.equal(metrics.status, 200);
  t.notOk([password, AWS_KEY.secret].some((x) => metrics.body.toString().includes(x)), 'no secret in /metrics');
  t.match(metrics.body.toString(), /^stevedore_source_credential_fetches_total\{upstream="docker\.io",source="127\.0\.0\.1:\d+",type="ecr",result="ok"\} 1$/m, 'the fetch is counted');
});

t.test('each source has its own credentials: a mirror with a GCP access token, then the registry with a password file', async (t) => {
  const md = await startGcpMetadata(t, { lifeMs: 3_600_000 });
  const mirror = await startAuthRegistry(t, { mode: 'bearer', accepts: (u, pw) => u === 'oauth2accesstoken' && md.issued.valid(pw) });
  const reg = await startRegistry({ basicAuth: true });
  t.teardown(() => reg.stop());
  const auth = `Basic ${Buffer.from(`${BASIC_USER.username}:${BASIC_USER.password}`).toString('base64')}`;
  const other = buildDockerImage('credentials/sources-other', { layers: 1 });
  await pushImageWithBasic(reg.directUrl, 'team/other', 'v1', auth, other);
  const file = path.join(await tmpDir(t), 'password');
  await writeFile(file, BASIC_USER.password);
  const p = await spawnStevedore(t, {
    defaultUpstream: null,
    storage: { path: path.join(await tmpDir(t), 'store') },
    upstreams: {
      'docker.io': {
        sources: [
          { url: mirror.url, name: 'mirror', credentials: { type: 'gcp', metadataUrl: md.url } },
          { url: reg.url, username: BASIC_USER.username, passwordFile: file },
        ],
      },
    },
  });
  const fromMirror = await pull(p);
  t.equal(fromMirror.status, 200);
  t.equal(fromMirror.headers['docker-content-digest'], mirror.image.manifest.digest, 'team/app comes from the mirror');
  const fromRegistry = await rawRequest(`${p.url}/v2/docker.io/team/other/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
  t.equal(fromRegistry.status, 200);
  t.equal(fromRegistry.headers['docker-content-digest'], other.manifest.digest, 'team/other (not on the mirror) comes from the registry');
  t.equal(md.calls(), 1, 'the mirror\'s access token came from the metadata server');
  t.ok(
    reg.requests.filter((q) => q.status === 200).every((q) => q.headers.authorization === auth),
    'the registry was sent the password from the file, and only that',
  );
  t.notOk(
    reg.requests.some((q) => String(q.headers.authorization ?? '').startsWith('Bearer')),
    'the mirror\'s tokens never went to the registry',
  );
  await assertNoSecrets(t, p, [BASIC_USER.password, ...md.issued.all, ...mirror.registryTokens.all]);
});

t.test('ECR: the token from GetAuthorizationToken is renewed before it expires, so pulls keep working across its expiry without a 401', async (t) => {
  const { reg, ecr, p } = await ecrSetup(t, 4_000);
  t.equal((await pull(p)).status, 200, 'first pull');
  t.equal((await pull(p)).status, 200, 'second pull');
  t.equal(ecr.calls(), 1, 'one GetAuthorizationToken for both');
  const refusedBefore = reg.refusals();
  await sleep(4_500);
  t.equal((await pull(p)).status, 200, 'a pull after the first token expired');
  t.equal(ecr.calls(), 2, 'the token was renewed once');
  t.equal(reg.refusals(), refusedBefore, 'the registry refused nothing: the new token was used from the start');
  await assertNoSecrets(t, p, [...ecr.issued.all, AWS_KEY.secret]);
});

t.test('ECR: a token revoked before its expiry: the 401 triggers exactly one GetAuthorizationToken, however many pulls hit it', async (t) => {
  const { reg, ecr, p } = await ecrSetup(t, 12 * 3_600_000);
  t.equal((await pull(p)).status, 200, 'first pull');
  t.equal(ecr.calls(), 1);
  ecr.issued.revoke();
  const answers = await Promise.all(Array.from({ length: 5 }, () => pull(p)));
  t.same(
    answers.map((r) => r.status),
    [200, 200, 200, 200, 200],
    'five concurrent pulls with the revoked token all succeed',
  );
  t.equal(ecr.calls(), 2, 'exactly one more GetAuthorizationToken');
  t.ok(reg.refusals() >= 2, 'the registry did refuse the revoked token');
  await assertNoSecrets(t, p, [...ecr.issued.all, AWS_KEY.secret]);
});

/** What a client of stevedore can read of an answer: its status line and its body. */
function shown(r: RawResponse): string {
  return `${r.status} ${r.statusMessage}\n${r.body.toString()}`;
}

/** The answer to a client when a credential source fails: which upstream, and that its source failed; nothing of why. */
const GENERIC_FAILURE = /cannot get credentials for upstream docker\.io \(its credential source failed; the cause is in stevedore's log\)/;

t.test('ECR: a failing GetAuthorizationToken is a 502 naming the upstream, its cause only in the log, without a secret', async (t) => {
  const ecr = await startEcr(t, { lifeMs: 60_000 });
  const reg = await startAuthRegistry(t, { mode: 'basic', accepts: () => false });
  const p = await spawnStevedore(
    t,
    { defaultUpstream: null, storage: { path: path.join(await tmpDir(t), 'store') }, upstreams: { 'docker.io': { url: reg.url, credentials: { type: 'ecr', region: 'us-east-1', endpoint: ecr.url } } } },
    { env: { ...AWS_ENV, AWS_ACCESS_KEY_ID: 'AKIDWRONG' } },
  );
  const r = await pull(p);
  t.equal(r.status, 502);
  t.match(ociErrors(r)?.[0]?.message ?? '', GENERIC_FAILURE);
  t.match(r.statusMessage, GENERIC_FAILURE, 'the status line says the same');
  t.notMatch(shown(r), /UnrecognizedClientException|GetAuthorizationToken|HTTP 400/, "the client is not told the provider's answer");
  await logsSettled(p);
  const warned = p.logs.find((l) => l.msg === 'cannot get credentials for upstream docker.io');
  t.ok(warned, 'logged');
  t.match(warned?.upstream, 'docker.io', 'the log line names the upstream');
  t.match(String(warned?.cause), /UnrecognizedClientException/, 'and the cause');
  await assertNoSecrets(t, p, [AWS_KEY.secret]);
});

t.test('GCP metadata server: the access token (Basic oauth2accesstoken) is renewed before expires_in; pulls keep working across its expiry', async (t) => {
  const md = await startGcpMetadata(t, { lifeMs: 4_000 });
  const reg = await startAuthRegistry(t, { mode: 'bearer', tokenLifeMs: 1_000, accepts: (u, pw) => u === 'oauth2accesstoken' && md.issued.valid(pw) });
  const p = await spawnStevedore(t, {
    defaultUpstream: null,
    storage: { path: path.join(await tmpDir(t), 'store') },
    upstreams: { 'docker.io': { url: reg.url, credentials: { type: 'gcp', metadataUrl: md.url } } },
  });
  t.equal((await pull(p)).status, 200, 'first pull');
  t.equal(md.calls(), 1, 'one access token');
  t.ok(md.requests.every((r) => r.headers['metadata-flavor'] === 'Google'), 'asked with Metadata-Flavor: Google');
  const refused = reg.refusals();
  await sleep(4_500);
  t.equal((await pull(p)).status, 200, 'a pull after the access token expired');
  t.equal(md.calls(), 2, 'renewed once');
  t.equal(reg.refusals(), refused, 'nothing was refused: the expired registry token and access token were both renewed before use');
  await assertNoSecrets(t, p, [...md.issued.all, ...reg.registryTokens.all]);
});

t.test('GCP metadata server: an access token revoked early: the token service\'s 401 triggers exactly one new access token', async (t) => {
  const md = await startGcpMetadata(t, { lifeMs: 3_600_000 });
  const reg = await startAuthRegistry(t, { mode: 'bearer', tokenLifeMs: 1_000, accepts: (u, pw) => u === 'oauth2accesstoken' && md.issued.valid(pw) });
  const p = await spawnStevedore(t, {
    defaultUpstream: null,
    storage: { path: path.join(await tmpDir(t), 'store') },
    upstreams: { 'docker.io': { url: reg.url, credentials: { type: 'gcp', metadataUrl: md.url } } },
  });
  t.equal((await pull(p)).status, 200);
  md.issued.revoke();
  await sleep(1_200); // the registry token expires too: the next pull needs a new one
  t.equal((await pull(p)).status, 200, 'the pull after the revocation succeeds');
  t.equal(md.calls(), 2, 'exactly one new access token');
  t.equal(reg.count('GET', /^\/token/), 3, 'token requests: the first, the refused one, the one with the new access token');
});

t.test('GCP service-account key file: Basic _json_key with the file\'s JSON', async (t) => {
  const key = JSON.stringify({ type: 'service_account', project_id: 'p', private_key_id: 'k1', private_key: '-----BEGIN PRIVATE KEY-----\\nMIIfake\\n-----END PRIVATE KEY-----\\n', client_email: 'puller@p.iam.gserviceaccount.com' });
  const file = path.join(await tmpDir(t), 'key.json');
  await writeFile(file, key);
  const reg = await startAuthRegistry(t, { mode: 'bearer', accepts: (u, pw) => u === '_json_key' && pw === key });
  const p = await spawnStevedore(t, {
    defaultUpstream: null,
    storage: { path: path.join(await tmpDir(t), 'store') },
    upstreams: { 'docker.io': { url: reg.url, credentials: { type: 'gcp', keyFile: file } } },
  });
  t.equal((await pull(p)).status, 200);
  t.equal(reg.count('GET', /^\/token/), 1, 'one token, issued to the key');
  await assertNoSecrets(t, p, [key, 'MIIfake']);
});

async function acrSetup(t: Test, refreshLifeMs: number): Promise<{ reg: AuthRegistry; p: StevedoreProcess; aad: string }> {
  const aad = 'eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQuYXp1cmUuY29tIn0.aad-test-signature';
  const file = path.join(await tmpDir(t), 'aad-token');
  await writeFile(file, `${aad}\n`);
  const reg = await startAuthRegistry(t, { mode: 'acr', tokenLifeMs: 1_000, refreshLifeMs, accepts: (u, tok) => u === 'aad' && tok === aad });
  const p = await spawnStevedore(t, {
    defaultUpstream: null,
    storage: { path: path.join(await tmpDir(t), 'store') },
    upstreams: { 'docker.io': { url: reg.url, credentials: { type: 'acr', tokenFile: file } } },
  });
  return { reg, p, aad };
}

t.test('ACR: the AAD token is exchanged for a refresh token, renewed before it expires; access tokens come from /oauth2/token', async (t) => {
  const { reg, p, aad } = await acrSetup(t, 4_000);
  t.equal((await pull(p)).status, 200, 'first pull');
  t.equal(reg.count('POST', /^\/oauth2\/exchange/), 1, 'one exchange');
  t.equal(reg.count('POST', /^\/oauth2\/token/), 1, 'one access token');
  await sleep(4_500);
  t.equal((await pull(p)).status, 200, 'a pull after the refresh token expired');
  t.equal(reg.count('POST', /^\/oauth2\/exchange/), 2, 'exchanged again, once');
  t.equal(reg.refusals(), 1, 'refused: only the first, unauthenticated request (then every token was renewed before use)');
  await assertNoSecrets(t, p, [aad, ...reg.refreshTokens.all, ...reg.registryTokens.all]);
});

t.test('ACR: a refresh token revoked early: the refusal at /oauth2/token triggers exactly one new exchange', async (t) => {
  const { reg, p } = await acrSetup(t, 3 * 3_600_000);
  t.equal((await pull(p)).status, 200);
  reg.refreshTokens.revoke();
  await sleep(1_200);
  t.equal((await pull(p)).status, 200, 'the pull after the revocation succeeds');
  t.equal(reg.count('POST', /^\/oauth2\/exchange/), 2, 'exactly one more exchange');
  t.equal(reg.count('POST', /^\/oauth2\/token/), 3, 'access tokens: the first, the refused one, the one with the new refresh token');
});

t.test('ACR with workload identity: the federated token is traded at AAD for an access token, which the registry exchanges; renewed across the AAD token\'s expiry', async (t) => {
  const federated = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cmVnaXN0cnk6c3RldmVkb3JlIn0.k8s-sa-token';
  const dir = await tmpDir(t);
  const tokenFile = path.join(dir, 'azure-identity-token');
  await writeFile(tokenFile, federated);
  const aad = await startAad(t, { tenant: 'tenant-1', clientId: 'client-1', lifeMs: 4_000, federatedToken: federated });
  const reg = await startAuthRegistry(t, { mode: 'acr', tokenLifeMs: 1_000, accepts: (u, tok) => u === 'aad' && aad.issued.valid(tok) });
  const p = await spawnStevedore(
    t,
    { defaultUpstream: null, storage: { path: path.join(dir, 'store') }, upstreams: { 'docker.io': { url: reg.url, credentials: { type: 'acr', authorityHost: aad.url } } } },
    { env: { AZURE_TENANT_ID: 'tenant-1', AZURE_CLIENT_ID: 'client-1', AZURE_FEDERATED_TOKEN_FILE: tokenFile, AZURE_CLIENT_SECRET: undefined, AZURE_AUTHORITY_HOST: undefined } },
  );
  t.equal((await pull(p)).status, 200, 'first pull');
  t.equal(aad.calls(), 1, 'one AAD token');
  t.equal(reg.count('POST', /^\/oauth2\/exchange/), 1, 'one exchange');
  await sleep(4_500);
  t.equal((await pull(p)).status, 200, 'a pull after the AAD token expired');
  t.equal(aad.calls(), 2, 'AAD asked again, once');
  t.equal(reg.count('POST', /^\/oauth2\/exchange/), 2, 'exchanged again with the new AAD token');
  t.equal(reg.refusals(), 1, 'refused: only the first, unauthenticated request');
  await assertNoSecrets(t, p, [federated, ...aad.issued.all, ...reg.refreshTokens.all, ...reg.registryTokens.all]);
});

t.test('ACR with a client secret from the environment; a wrong secret is a 502 naming the upstream; AAD, the tenant and the client only in the log; no secret anywhere', async (t) => {
  const dir = await tmpDir(t);
  const aad = await startAad(t, { tenant: 'tenant-2', clientId: 'client-2', lifeMs: 3_600_000, clientSecret: 'right-client-secret' });
  const reg = await startAuthRegistry(t, { mode: 'acr', accepts: (u, tok) => u === 'aad' && aad.issued.valid(tok) });
  const config = { defaultUpstream: null, storage: { path: path.join(dir, 'store') }, upstreams: { 'docker.io': { url: reg.url, credentials: { type: 'acr', authorityHost: aad.url } } } };
  const env = { AZURE_TENANT_ID: 'tenant-2', AZURE_CLIENT_ID: 'client-2', AZURE_FEDERATED_TOKEN_FILE: undefined, AZURE_AUTHORITY_HOST: undefined };
  const good = await spawnStevedore(t, config, { env: { ...env, AZURE_CLIENT_SECRET: 'right-client-secret' } });
  t.equal((await pull(good)).status, 200);
  t.equal(aad.calls(), 1);

  const bad = await spawnStevedore(t, { ...config, storage: { path: path.join(dir, 'store2') } }, { env: { ...env, AZURE_CLIENT_SECRET: 'wrong-client-secret' } });
  const r = await pull(bad);
  t.equal(r.status, 502);
  const e = ociErrors(r)?.[0];
  t.match(e?.message, GENERIC_FAILURE, 'names the upstream');
  t.notMatch(shown(r), /tenant-2|client-2|AAD|127\.0\.0\.1/, 'not the tenant, the client id or the authority');
  await logsSettled(bad);
  const warned = bad.logs.find((l) => l.msg === 'cannot get credentials for upstream docker.io');
  t.match(String(warned?.cause), /AAD \(http:\/\/127\.0\.0\.1:\d+, tenant tenant-2, client client-2\) answered 401/, 'the log names AAD and what it said');
  await assertNoSecrets(t, bad, ['wrong-client-secret', 'right-client-secret']);
  t.notMatch(r.body.toString(), /client-secret/);
});

t.test('ACR through a credential helper answering an identity token (Username <token>): it is the refresh token, no exchange', async (t) => {
  const reg = await startAuthRegistry(t, { mode: 'acr', accepts: () => false });
  const { secret: refreshToken } = reg.refreshTokens.issue('helper-refresh-', 3_600_000);
  const h = await writeHelper(t, 'stevedoreacr', [JSON.stringify({ ServerURL: new URL(reg.url).host, Username: '<token>', Secret: refreshToken })]);
  const p = await spawnStevedore(
    t,
    { defaultUpstream: null, storage: { path: path.join(await tmpDir(t), 'store') }, upstreams: { 'docker.io': { url: reg.url, credentials: { type: 'helper', helper: 'stevedoreacr' } } } },
    { env: { PATH: `${h.dir}:${process.env.PATH ?? '/usr/bin:/bin'}` } },
  );
  t.equal((await pull(p)).status, 200);
  t.equal(reg.count('POST', /^\/oauth2\/token/), 1, 'an access token for the refresh token');
  t.equal(reg.count('POST', /^\/oauth2\/exchange/), 0, 'no exchange');
  t.equal((await h.calls()).length, 1);
  await assertNoSecrets(t, p, [refreshToken, ...reg.registryTokens.all]);
});

/** A docker-credential-<name> script that appends what it was asked (stdin) to `<dir>/calls`, and answers `answers[n]` on its n-th run (the last one after). */
async function writeHelper(t: Test, name: string, answers: string[], exit = 0): Promise<{ dir: string; calls: () => Promise<string[]> }> {
  const dir = await tmpDir(t);
  const script = path.join(dir, `docker-credential-${name}`);
  const cases = answers.map((a, i) => `  ${i + 1}) echo '${a}' ;;`).join('\n');
  await writeFile(
    script,
    `#!/bin/sh
[ "$1" = get ] || exit 3
host=$(cat)
echo "$host" >> "${dir}/calls"
n=$(wc -l < "${dir}/calls")
case "$n" in
${cases}
  *) echo '${answers.at(-1)}' ;;
esac
exit ${exit}
`,
  );
  await chmod(script, 0o755);
  return { dir, calls: async () => (await readFile(path.join(dir, 'calls'), 'utf8').catch(() => '')).split('\n').filter(Boolean) };
}

t.test('credential helper', async (t) => {
  const reg = await startRegistry({ basicAuth: true });
  t.teardown(() => reg.stop());
  const auth = `Basic ${Buffer.from(`${BASIC_USER.username}:${BASIC_USER.password}`).toString('base64')}`;
  const img = buildDockerImage('credentials/helper', { layers: 1 });
  for (let i = 1; i <= 8; i++) await pushImageWithBasic(reg.directUrl, 'team/app', `t${i}`, auth, img);
  const good = JSON.stringify({ ServerURL: reg.host, Username: BASIC_USER.username, Secret: BASIC_USER.password });
  const stale = JSON.stringify({ ServerURL: reg.host, Username: BASIC_USER.username, Secret: 'an-old-password' });
  const start = async (t: Test, helper: string, dir: string): Promise<StevedoreProcess> =>
    spawnStevedore(
      t,
      { defaultUpstream: null, storage: { path: path.join(await tmpDir(t), 'store') }, upstreams: { 'docker.io': { url: reg.url, credentials: { type: 'helper', helper } } } },
      { env: { PATH: `${dir}:${process.env.PATH ?? '/usr/bin:/bin'}` } },
    );

  await t.test('is run with the registry host on stdin, and its answer reused for later pulls', async (t) => {
    const h = await writeHelper(t, 'stevedoretest', [good]);
    const p = await start(t, 'stevedoretest', h.dir);
    tagNo = 0;
    for (let i = 0; i < 3; i++) t.equal((await pull(p)).status, 200, `pull ${i + 1}`);
    t.same(await h.calls(), [reg.host], 'run once, asked for the registry host');
    await assertNoSecrets(t, p, [BASIC_USER.password]);
  });

  await t.test('is run again when the registry refuses its answer (401), once', async (t) => {
    const h = await writeHelper(t, 'stevedorerotated', [stale, good]);
    const p = await start(t, 'stevedorerotated', h.dir);
    tagNo = 0;
    for (let i = 0; i < 3; i++) t.equal((await pull(p)).status, 200, `pull ${i + 1}`);
    t.equal((await h.calls()).length, 2, 'run twice: the refused answer, then the good one (reused after)');
    await assertNoSecrets(t, p, [BASIC_USER.password, 'an-old-password']);
  });

  await t.test("a failing helper: 502 naming the upstream; the helper's message only in the log", async (t) => {
    const h = await writeHelper(t, 'stevedorebroken', ['credentials not found in native keychain'], 1);
    const p = await start(t, 'stevedorebroken', h.dir);
    const r = await pull(p);
    t.equal(r.status, 502);
    t.match(ociErrors(r)?.[0]?.message ?? '', GENERIC_FAILURE);
    t.notMatch(shown(r), /native keychain|exited with/, "the helper's output does not reach the client");
    await logsSettled(p);
    const warned = p.logs.find((l) => l.msg === 'cannot get credentials for upstream docker.io');
    t.equal(warned?.upstream, 'docker.io', 'logged, naming the upstream');
    t.match(String(warned?.cause), /docker-credential-stevedorebroken get exited with 1: credentials not found in native keychain/, "and the helper's message");
  });

  await t.test("the dashboard shows each source's credentials: the helper, how often it ran, and that it fails (why: in the log)", async (t) => {
    const good = await writeHelper(t, 'stevedoreshown', [JSON.stringify({ ServerURL: reg.host, Username: BASIC_USER.username, Secret: BASIC_USER.password })]);
    const ok = await start(t, 'stevedoreshown', good.dir);
    t.equal((await pull(ok)).status, 200);
    const st = (await (await fetch(`${ok.url}/ui/api/state`)).json()) as { upstreams: Array<{ sources: Array<{ credentials: unknown }> }> };
    t.same(st.upstreams[0]!.sources[0]!.credentials, { type: 'helper', source: 'credential helper docker-credential-stevedoreshown', fetches: 1, failures: 0, lastError: null });
    t.notMatch(JSON.stringify(st), BASIC_USER.password, 'no secret in the state');

    const broken = await writeHelper(t, 'stevedorebroken2', ['no such login'], 1);
    const bad = await start(t, 'stevedorebroken2', broken.dir);
    t.equal((await pull(bad)).status, 502);
    const st2 = (await (await fetch(`${bad.url}/ui/api/state`)).json()) as { upstreams: Array<{ sources: Array<{ credentials: { failures: number; lastError: string } }> }> };
    const c = st2.upstreams[0]!.sources[0]!.credentials;
    t.equal(c.failures, 1);
    t.equal(c.lastError, "the credential source failed; the cause is in stevedore's log");
    t.notMatch(JSON.stringify(st2), /no such login/, "the helper's output is not on the dashboard");
  });

  await t.test('a password file that cannot be read: neither clients nor the dashboard learn its path; the log does', async (t) => {
    const file = path.join(await tmpDir(t), 'secret-dir', 'registry-password');
    const p = await spawnStevedore(t, {
      defaultUpstream: null,
      storage: { path: path.join(await tmpDir(t), 'store') },
      upstreams: { 'docker.io': { url: reg.url, username: BASIC_USER.username, passwordFile: file } },
    });
    const r = await pull(p);
    t.equal(r.status, 502);
    t.match(ociErrors(r)?.[0]?.message ?? '', GENERIC_FAILURE);
    t.notMatch(shown(r), /secret-dir|registry-password|ENOENT/, 'the answer does not name the file');
    const state = await (await fetch(`${p.url}/ui/api/state`)).text();
    t.notMatch(state, /secret-dir|registry-password|ENOENT/, 'nor does the dashboard');
    const c = (JSON.parse(state) as { upstreams: Array<{ sources: Array<{ credentials: Record<string, unknown> }> }> }).upstreams[0]!.sources[0]!.credentials;
    t.same(c, { type: 'basic', source: 'password file', fetches: 1, failures: 1, lastError: "the credential source failed; the cause is in stevedore's log" }, 'which says what kind of source fails');
    await logsSettled(p);
    const warned = p.logs.find((l) => l.msg === 'cannot get credentials for upstream docker.io');
    t.match(String(warned?.cause), `cannot read the password file ${file} (ENOENT)`, 'the log names the file and why');
  });

  await t.test('passwordFile: the password read from a file, accepted by the registry', async (t) => {
    const file = path.join(await tmpDir(t), 'password');
    await writeFile(file, `${BASIC_USER.password}\n`);
    const p = await spawnStevedore(t, {
      defaultUpstream: null,
      storage: { path: path.join(await tmpDir(t), 'store') },
      upstreams: { 'docker.io': { url: reg.url, username: BASIC_USER.username, passwordFile: file } },
    });
    tagNo = 0;
    const r = await pull(p);
    t.equal(r.status, 200);
    t.equal(r.headers['docker-content-digest'], img.manifest.digest);
    await assertNoSecrets(t, p, [BASIC_USER.password]);
  });
});
