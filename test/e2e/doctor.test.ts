// `stevedore doctor`: one line per check, exit 1 on any failure, --json for scripts. Every server
// is on 127.0.0.1: the configs name only the upstreams given (never the embedded defaults).
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { stringify } from 'yaml';
import { stevedoreCli } from '../fixtures/cli.js';
import { BASIC_USER, startRegistry } from '../fixtures/registry.js';
import { startTokenServer } from '../fixtures/token-server.js';
import { freePort, tmpDir } from '../fixtures/util.js';
import { startRedis } from '../fixtures/redis.js';
import { startFake } from '../fixtures/fake-upstream.js';
import { makeCertificates } from '../fixtures/tls.js';

interface Row {
  check: string;
  target: string;
  ok: boolean;
  detail: string;
  fix: string | null;
}

async function writeConfig(t: Test, doc: Record<string, unknown>, storage?: string): Promise<string> {
  const dir = await tmpDir(t);
  const file = path.join(dir, 'stevedore.yaml');
  await writeFile(file, stringify({ storage: { path: storage ?? path.join(dir, 'store') }, defaultUpstream: null, ...doc }));
  return file;
}

function lines(out: string): string[] {
  return out.split('\n').filter(Boolean);
}

t.test('a plain registry: every check ok, exit 0; --json has the same checks', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const file = await writeConfig(t, { upstreams: { 'docker.io': { url: reg.url } } });
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 0, r.stdout + r.stderr);
  const ls = lines(r.stdout);
  t.match(ls[0], /^ok {4}config /);
  t.ok(ls.some((l) => /^ok {4}store .*writable/.test(l)), 'store writable');
  t.ok(ls.some((l) => /^info {2}store .*unbounded/.test(l)), 'no maxSize: unbounded');
  t.ok(ls.some((l) => /^ok {4}upstream docker\.io: TCP connect to 127\.0\.0\.1:\d+/.test(l)), 'tcp');
  t.ok(ls.some((l) => /^ok {4}upstream docker\.io: \/v2\/ answers 200/.test(l)), '/v2/ 200');
  t.notOk(ls.some((l) => /^FAIL/.test(l)));
  t.notOk(ls.some((l) => /DNS/.test(l)), 'no DNS check for an IP literal');

  const j = await stevedoreCli(['doctor', '--config', file, '--json']);
  t.equal(j.code, 0, j.stderr);
  const rows = JSON.parse(j.stdout) as Row[];
  t.equal(rows.length, ls.length, 'one row per line');
  t.same(
    rows.map((x) => x.check),
    ls.map((l) => l.slice(6).split(' ')[0]),
  );
  for (const row of rows) {
    t.equal(typeof row.ok, 'boolean');
    t.equal(typeof row.detail, 'string');
    t.ok(row.fix === null || typeof row.fix === 'string');
    t.equal(typeof row.target, 'string');
  }
  t.ok(rows.every((x) => x.ok));
});

t.test('basic auth: right credentials ok, wrong ones FAIL, the password is never printed', async (t) => {
  const reg = await startRegistry({ basicAuth: true });
  t.teardown(() => reg.stop());
  const good = await writeConfig(t, { upstreams: { 'reg.test': { url: reg.url, username: BASIC_USER.username, password: BASIC_USER.password } } });
  const r = await stevedoreCli(['doctor', '--config', good]);
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /^ok {4}upstream reg\.test: \/v2\/ answers 401 with a Basic challenge/m);
  t.match(r.stdout, /^ok {4}upstream reg\.test: the configured credentials are accepted/m);
  t.notMatch(r.stdout + r.stderr, BASIC_USER.password);

  const wrongPassword = 'not-the-password-42';
  const bad = await writeConfig(t, { upstreams: { 'reg.test': { url: reg.url, username: BASIC_USER.username, password: wrongPassword } } });
  for (const args of [[], ['--json']]) {
    const b = await stevedoreCli(['doctor', '--config', bad, ...args]);
    t.equal(b.code, 1, b.stdout + b.stderr);
    t.notMatch(b.stdout + b.stderr, wrongPassword, 'the password is never printed');
    t.notMatch(b.stdout + b.stderr, Buffer.from(`${BASIC_USER.username}:${wrongPassword}`).toString('base64'), 'nor its Basic encoding');
    if (args.length) {
      const rows = JSON.parse(b.stdout) as Row[];
      t.ok(rows.some((x) => !x.ok && x.check === 'upstream' && /refused/.test(x.detail) && x.fix !== null));
    } else {
      t.match(b.stdout, /^FAIL {2}upstream reg\.test: the configured credentials are refused: \/v2\/ answers 401 — check upstreams\.reg\.test\.username/m);
    }
  }
});

t.test('an upstream at a closed port: TCP FAIL, exit 1', async (t) => {
  const file = await writeConfig(t, { upstreams: { 'closed.test': { url: 'http://127.0.0.1:1' } } });
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 1, r.stdout + r.stderr);
  t.match(r.stdout, /^FAIL {2}upstream closed\.test: TCP connect to 127\.0\.0\.1:1 failed: .*ECONNREFUSED/m);
  t.notMatch(r.stdout, /\/v2\//, 'stops at the first failure of an upstream');
});

t.test('an offline upstream is skipped', async (t) => {
  const file = await writeConfig(t, { upstreams: { 'closed.test': { url: 'http://127.0.0.1:1', offline: true } } });
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /^skip {2}upstream closed\.test: offline/m);
});

t.test('a token-auth registry: Bearer challenge and a token', async (t) => {
  const tokens = await startTokenServer();
  t.teardown(() => tokens.stop());
  const reg = await startRegistry({ token: tokens });
  t.teardown(() => reg.stop());
  const file = await writeConfig(t, { upstreams: { 'docker.io': { url: reg.url } } });
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /^ok {4}upstream docker\.io: \/v2\/ answers 401 with a Bearer challenge \(realm http:\/\/127\.0\.0\.1:\d+\/token\)/m);
  t.match(r.stdout, /^ok {4}upstream docker\.io: token issued anonymously for repository:library\/alpine:pull/m);
  t.ok(tokens.requests.some((q) => q.scope === 'repository:library/alpine:pull' && q.service === tokens.service && q.user === null));
  t.notMatch(r.stdout, /eyJ/, 'no token printed');
});

t.test('a storage path that is not writable: store FAIL', async (t) => {
  const dir = await tmpDir(t);
  const regular = path.join(dir, 'a-file');
  await writeFile(regular, 'x');
  const file = await writeConfig(t, { upstreams: { 'closed.test': { url: 'http://127.0.0.1:1', offline: true } } }, path.join(regular, 'store'));
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 1, r.stdout + r.stderr);
  t.match(r.stdout, /^FAIL {2}store .*a-file\/store: cannot create .*ENOTDIR.* — /m);
});

t.test('storage.maxSize larger than the disk: store FAIL', async (t) => {
  const file = await writeConfig(t, { storage: undefined, upstreams: { 'closed.test': { url: 'http://127.0.0.1:1', offline: true } } });
  const dir = path.dirname(file);
  await writeFile(file, stringify({ storage: { path: path.join(dir, 'store'), maxSize: '4000TiB' }, defaultUpstream: null, upstreams: { 'closed.test': { url: 'http://127.0.0.1:1', offline: true } } }));
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 1, r.stdout + r.stderr);
  t.match(r.stdout, /^FAIL {2}store .*storage\.maxSize .* is more than free space/m);
});

t.test('an invalid config: one config FAIL, exit 1, nothing else checked', async (t) => {
  const dir = await tmpDir(t);
  const file = path.join(dir, 'bad.yaml');
  await writeFile(file, 'upstreams:\n  docker.io:\n    url: 42\nlisten: [\n');
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 1, r.stdout + r.stderr);
  const ls = lines(r.stdout);
  t.equal(ls.length, 1, r.stdout);
  t.match(ls[0], /^FAIL {2}config .*bad\.yaml: invalid configuration: not valid YAML/);

  await writeFile(file, 'upstreams:\n  docker.io:\n    url: 42\n');
  const j = await stevedoreCli(['doctor', '--config', file, '--json']);
  t.equal(j.code, 1);
  const rows = JSON.parse(j.stdout) as Row[];
  t.equal(rows.length, 1);
  t.equal(rows[0]!.check, 'config');
  t.equal(rows[0]!.ok, false);
  t.match(rows[0]!.detail, /upstreams\.docker\.io\.url/);
});

t.test('redis: a running one answers PING, an unreachable one FAILs', async (t) => {
  const redis = await startRedis(t);
  const file = await writeConfig(t, { metadata: { redis: redis.url }, upstreams: { 'closed.test': { url: 'http://127.0.0.1:1', offline: true } } });
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /^ok {4}redis redis:\/\/127\.0\.0\.1:\d+.*: answers PING \(PONG\)/m);

  const port = await freePort();
  const down = await writeConfig(t, { metadata: { redis: `redis://:hunter2pw@127.0.0.1:${port}` }, upstreams: { 'closed.test': { url: 'http://127.0.0.1:1', offline: true } } });
  const d = await stevedoreCli(['doctor', '--config', down]);
  t.equal(d.code, 1, d.stdout + d.stderr);
  t.match(d.stdout, /^FAIL {2}redis redis:\/\/.*127\.0\.0\.1:\d+.*: unreachable: no answer within 3 s \(.*ECONNREFUSED.*\) — start Redis/m);
  t.notMatch(d.stdout + d.stderr, 'hunter2pw', 'the Redis password is never printed');
});

t.test('a 401 without WWW-Authenticate: FAIL', async (t) => {
  const fake = await startFake(t, (_req, res) => {
    res.writeHead(401, { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '76;w=21600' });
    res.end();
  });
  const file = await writeConfig(t, { upstreams: { 'fake.test': { url: fake.url } } });
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 1, r.stdout + r.stderr);
  t.match(r.stdout, /^info {2}upstream fake\.test: \/v2\/ rate limit: 76;w=21600 remaining of 100;w=21600/m);
  t.match(r.stdout, /^FAIL {2}upstream fake\.test: \/v2\/ answers 401 without a usable WWW-Authenticate \(missing\)/m);
});

t.test('an upstream with several sources: each source checked under its name; a dead one FAILs, exit 1', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const file = await writeConfig(t, {
    upstreams: { 'docker.io': { sources: [{ url: 'http://127.0.0.1:1', name: 'central', namespace: 'ns' }, { url: reg.url }] } },
  });
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 1, r.stdout + r.stderr);
  t.match(r.stdout, /^FAIL {2}upstream docker\.io \(source central\): TCP connect to 127\.0\.0\.1:1 failed/m);
  t.match(r.stdout, new RegExp(`^ok {4}upstream docker\\.io \\(source ${reg.host.replace(/\./g, '\\.')}\\): `, 'm'));
});

t.test('tls: a good pair is ok with its names and expiry; a key of another certificate FAILs naming tls.key', async (t) => {
  const certs = await makeCertificates(t, ['stevedore.example', '127.0.0.1']);
  const good = await writeConfig(t, { upstreams: { 'r.test': { url: 'http://127.0.0.1:9', offline: true } }, tls: { cert: certs.cert, key: certs.key } });
  const ok = await stevedoreCli(['doctor', '--config', good]);
  t.equal(ok.code, 0, ok.stdout + ok.stderr);
  t.match(ok.stdout, /^ok {4}tls .*tls\.crt: certificate for CN=stevedore\.example \(DNS:stevedore\.example, IP Address:127\.0\.0\.1\), valid until \S+ \(29 days\); the key matches$/m);

  const bad = await writeConfig(t, { upstreams: { 'r.test': { url: 'http://127.0.0.1:9', offline: true } }, tls: { cert: certs.cert, key: certs.caKey } });
  const r = await stevedoreCli(['doctor', '--config', bad]);
  t.equal(r.code, 1);
  t.match(r.stdout, /^FAIL {2}tls .*: tls\.key: .*ca\.key does not match the certificate in tls\.cert/m);
});

t.test('DNS: a host name that resolves is checked and named with its addresses', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const url = reg.url.replace('127.0.0.1', 'localhost');
  const file = await writeConfig(t, { upstreams: { 'r.test': { url } } });
  const r = await stevedoreCli(['doctor', '--config', file]);
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /^ok {4}upstream r\.test: DNS: localhost resolves to [^\n]*127\.0\.0\.1/m);
  t.match(r.stdout, /^ok {4}upstream r\.test: \/v2\/ answers 200/m);
});

t.test('DNS: a name that does not resolve FAILs with the resolver as the fix, and nothing further is tried', async (t) => {
  const { checkUpstream } = await import('../../lib/cli/doctor.js');
  const { parseConfig } = await import('../../lib/config/config.js');
  const config = parseConfig({ defaultUpstream: null, upstreams: { 'r.test': { url: 'https://registry.example.test' } } });
  const asked: string[] = [];
  const results = await checkUpstream(config.upstreams.get('r.test')!, new Set(), 'r.test', async (host) => {
    asked.push(host);
    throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  });
  t.same(asked, ['registry.example.test']);
  t.equal(results.length, 1, 'no TCP, TLS or HTTP check after it');
  t.equal(results[0]!.level, 'fail');
  t.match(results[0]!.detail, /^DNS: cannot resolve registry\.example\.test: .*ENOTFOUND/);
  t.match(results[0]!.fix, /resolv\.conf/);
});

t.test('TLS: an HTTPS upstream with a certificate from a CA the process trusts is ok; untrusted or for another name FAILs', async (t) => {
  const certs = await makeCertificates(t, ['127.0.0.1']);
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  // An HTTPS registry: a stevedore serving TLS in front of the real one.
  const { startStevedore } = await import('../fixtures/stevedore.js');
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { tls: { cert: certs.cert, key: certs.key } } });
  t.match(sd.url, /^https:/);

  const trusted = await writeConfig(t, { upstreams: { 'r.test': { url: sd.url } } });
  const ok = await stevedoreCli(['doctor', '--config', trusted], { env: { NODE_EXTRA_CA_CERTS: certs.caCert } });
  t.equal(ok.code, 0, ok.stdout + ok.stderr);
  t.match(ok.stdout, /^ok {4}upstream r\.test: TLS TLSv1\.[23]: certificate for [^\n]*127\.0\.0\.1[^\n]*, valid until [^\n]+ \(29 days\)$/m);

  const untrusted = await stevedoreCli(['doctor', '--config', trusted], { env: { NODE_EXTRA_CA_CERTS: '' } });
  t.equal(untrusted.code, 1);
  t.match(untrusted.stdout, /^FAIL {2}upstream r\.test: TLS handshake with 127\.0\.0\.1:\d+ failed: [^\n]*(self[- ]signed|unable to verify|issuer)/m);
  t.match(untrusted.stdout, /NODE_EXTRA_CA_CERTS/, 'the fix names how to trust a private CA');

  const otherName = await writeConfig(t, { upstreams: { 'r.test': { url: sd.url.replace('127.0.0.1', 'localhost') } } });
  const wrong = await stevedoreCli(['doctor', '--config', otherName], { env: { NODE_EXTRA_CA_CERTS: certs.caCert } });
  t.equal(wrong.code, 1);
  t.match(wrong.stdout, /^FAIL {2}upstream r\.test: TLS handshake with localhost:\d+ failed: [^\n]*(altnames|does not match)/m);
});
