// `stevedore doctor` and credential sources (upstreams.*.credentials, passwordFile): each is asked
// once; a failing one is a FAIL line naming the upstream and the cause, and no secret is printed
// either way. Every server is on 127.0.0.1.
import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { stringify } from 'yaml';
import { stevedoreCli } from '../fixtures/cli.js';
import { BASIC_USER, startRegistry } from '../fixtures/registry.js';
import { AWS_KEY, startEcr } from '../fixtures/credential-fakes.js';
import { freePort, tmpDir } from '../fixtures/util.js';

async function writeConfig(t: Test, upstreams: Record<string, unknown>): Promise<string> {
  const dir = await tmpDir(t);
  const file = path.join(dir, 'stevedore.yaml');
  await writeFile(file, stringify({ storage: { path: path.join(dir, 'store') }, defaultUpstream: null, upstreams }));
  return file;
}

async function helperDir(t: Test, name: string, body: string): Promise<string> {
  const dir = await tmpDir(t);
  const script = path.join(dir, `docker-credential-${name}`);
  await writeFile(script, `#!/bin/sh\ncat > /dev/null\n${body}\n`);
  await chmod(script, 0o755);
  return dir;
}

const lines = (out: string): string[] => out.split('\n').filter(Boolean);

t.test('a failing credential helper is a FAIL line naming the upstream and the helper\'s message; exit 1', async (t) => {
  const reg = await startRegistry({ basicAuth: true });
  t.teardown(() => reg.stop());
  const dir = await helperDir(t, 'doctorbroken', "echo 'credentials not found in native keychain' >&2; exit 1");
  const file = await writeConfig(t, { 'docker.io': { url: reg.url, credentials: { type: 'helper', helper: 'doctorbroken' } } });
  const r = await stevedoreCli(['doctor', '--config', file], { env: { PATH: `${dir}:${process.env.PATH ?? ''}` } });
  t.equal(r.code, 1, r.stdout + r.stderr);
  const fail = lines(r.stdout).filter((l) => l.startsWith('FAIL'));
  t.equal(fail.length, 1, r.stdout);
  t.match(
    fail[0],
    /^FAIL {2}credentials docker\.io: docker-credential-doctorbroken get exited with 1: credentials not found in native keychain — check that the helper is on PATH .*\(upstreams\.docker\.io\)$/,
  );
  t.notOk(lines(r.stdout).some((l) => /upstream docker\.io: TCP/.test(l)), 'the upstream is not checked without its credentials');
});

t.test('a working credential helper: ok, the registry accepts what it gives, and its secret is never printed', async (t) => {
  const reg = await startRegistry({ basicAuth: true });
  t.teardown(() => reg.stop());
  const dir = await helperDir(t, 'doctorgood', `echo '${JSON.stringify({ ServerURL: reg.host, Username: BASIC_USER.username, Secret: BASIC_USER.password })}'`);
  const file = await writeConfig(t, { 'docker.io': { url: reg.url, credentials: { type: 'helper', helper: 'doctorgood' } } });
  for (const json of [false, true]) {
    const r = await stevedoreCli(['doctor', '--config', file, ...(json ? ['--json'] : [])], { env: { PATH: `${dir}:${process.env.PATH ?? ''}` } });
    t.equal(r.code, 0, r.stdout + r.stderr);
    if (!json) {
      t.ok(lines(r.stdout).some((l) => /^ok {4}credentials docker\.io: credential helper docker-credential-doctorgood gives credentials for user robot$/.test(l)), r.stdout);
      t.ok(lines(r.stdout).some((l) => /^ok {4}upstream docker\.io: the configured credentials are accepted \(Basic\)$/.test(l)), r.stdout);
    }
    t.notOk(r.stdout.includes(BASIC_USER.password), `no secret in the ${json ? 'JSON' : 'text'} output`);
    t.notOk(r.stderr.includes(BASIC_USER.password), 'nor on stderr');
  }
});

t.test('ECR refusing the AWS credentials: a FAIL line naming the upstream and the AWS error, no secret', async (t) => {
  const ecr = await startEcr(t, { lifeMs: 60_000 });
  const file = await writeConfig(t, { 'docker.io': { url: `http://127.0.0.1:${await freePort()}`, credentials: { type: 'ecr', region: 'us-east-1', endpoint: ecr.url } } });
  const r = await stevedoreCli(['doctor', '--config', file], {
    env: { AWS_ACCESS_KEY_ID: 'AKIDWRONG', AWS_SECRET_ACCESS_KEY: AWS_KEY.secret, AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: '/nonexistent', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent' },
  });
  t.equal(r.code, 1, r.stdout + r.stderr);
  t.match(r.stdout, /^FAIL {2}credentials docker\.io: ECR GetAuthorizationToken failed \(HTTP 400\): UnrecognizedClientException: .* — check the AWS credentials/m);
  t.equal(ecr.calls(), 1, 'asked once');
  t.notOk(r.stdout.includes(AWS_KEY.secret), 'no secret in the output');
});

t.test('a GCP metadata server that does not answer: a FAIL line naming the upstream and the address', async (t) => {
  const port = await freePort();
  const file = await writeConfig(t, { 'gcr.io': { url: `http://127.0.0.1:${await freePort()}`, credentials: { type: 'gcp', metadataUrl: `http://127.0.0.1:${port}` } } });
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 1, r.stdout + r.stderr);
  t.match(r.stdout, new RegExp(`^FAIL {2}credentials gcr\\.io: the GCP metadata server \\(http://127\\.0\\.0\\.1:${port}\\) failed: ECONNREFUSED`, 'm'));
});

t.test('a password file that is missing: a FAIL line naming the upstream and the file', async (t) => {
  const missing = path.join(await tmpDir(t), 'no-such-password');
  const file = await writeConfig(t, { 'docker.io': { url: `http://127.0.0.1:${await freePort()}`, username: 'robot', passwordFile: missing } });
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 1, r.stdout + r.stderr);
  t.match(r.stdout, /^FAIL {2}credentials docker\.io: cannot read the password file .*no-such-password \(ENOENT\)/m);
});
