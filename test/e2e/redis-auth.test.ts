// Redis with a password, ACL users and TLS: real redis-server processes (requirepass, `--user`,
// tls-port with a CA of `stevedore tls init`), real `stevedore serve` replicas in cluster mode in
// front of a paced real registry, all on 127.0.0.1. With the right credentials the replicas
// coordinate (one upstream GET for a cold blob asked of both); with wrong ones, or a certificate
// they cannot verify, `serve` refuses to start with a message naming the key; the password is in
// no log line and no message.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { blobGets, blobUrl, fetchAndHash, MiB, startCluster, upstreamWith, type Cluster } from '../fixtures/cluster.js';
import { stevedoreCli } from '../fixtures/cli.js';
import { buildDockerImage, makeBlob, pseudoRandom, pushBlob, pushImage, type Blob } from '../fixtures/images.js';
import { startRedis } from '../fixtures/redis.js';
import type { Registry } from '../fixtures/registry.js';
import { makeCertificates } from '../fixtures/tls.js';
import { blobRequests, holders, pullImage, startTiers } from '../fixtures/node-tier.js';
import { run, tmpDir, waitFor, which } from '../fixtures/util.js';

const secret = (label: string): string => `${label}-${randomBytes(12).toString('hex')}`;

/** Four clients over two replicas on a cold 6 MiB blob (~1.5 s on the wire): all right, one upstream GET. */
async function pullsTogether(t: Test, c: Cluster, reg: Registry, blob: Blob): Promise<void> {
  const results = await Promise.all(Array.from({ length: 4 }, (_, i) => fetchAndHash(blobUrl(c.replicas[i % 2]!, blob.digest))));
  t.same(
    results.filter((r) => r.status !== 200 || r.digest !== blob.digest).map((r) => r.error ?? r.status),
    [],
    'every client got 200 and the right bytes',
  );
  t.equal(blobGets(reg, blob.digest).length, 1, 'one upstream GET: the replicas coordinated through Redis');
}

function coordinated(t: Test, c: Cluster): void {
  for (const r of c.replicas) {
    t.ok(
      r.logs.some((l) => l.msg === 'cluster mode: coordinating with the replicas on this store through Redis' && l.redisUp === true),
      `${String(r.logs.find((l) => l.replicaId)?.replicaId ?? r.pid)}: Redis answered at start-up`,
    );
  }
}

function noSecretLogged(t: Test, c: Cluster, ...secrets: string[]): void {
  const text = c.replicas.map((r) => JSON.stringify(r.logs)).join('\n');
  t.ok(text.length > 0, 'the replicas logged');
  for (const s of secrets) t.notOk(text.includes(s), 'the Redis password is in no log line');
}

const cold = (seed: string): Blob => makeBlob(pseudoRandom(seed, 6 * MiB), 'application/octet-stream');

t.test('requirepass, the password from ${VAR} (metadata.password): the replicas coordinate, the password is never logged', async (t) => {
  const pw = secret('requirepass');
  const blob = cold('redis-auth-requirepass');
  const reg = await upstreamWith(t, blob, 4 * MiB);
  const c = await startCluster(t, { replicas: 2, upstreamUrl: reg.url, redis: { password: pw }, metadata: { password: '${REDIS_PASSWORD}' }, env: { REDIS_PASSWORD: pw } });
  coordinated(t, c);
  await pullsTogether(t, c, reg, blob);
  noSecretLogged(t, c, pw);
});

t.test('an ACL user (default user off) with metadata.passwordFile, re-read when the password is rotated', async (t) => {
  const pw = secret('acl');
  const dir = await tmpDir(t);
  const file = path.join(dir, 'redis-password');
  await writeFile(file, `${pw}\n`); // as `kubectl create secret --from-file` keeps a trailing newline
  const blob = cold('redis-auth-acl');
  const reg = await upstreamWith(t, blob, 4 * MiB);
  const c = await startCluster(t, {
    replicas: 2,
    upstreamUrl: reg.url,
    redis: { users: [{ name: 'stevedore', password: pw }], defaultOff: true },
    metadata: { username: 'stevedore', passwordFile: file },
  });
  coordinated(t, c);
  await pullsTogether(t, c, reg, blob);

  // Rotation: a new password in Redis and in the file, every connection of the user cut. The
  // replicas reconnect with the file's new content, and coordinate again.
  const pw2 = secret('acl-rotated');
  const cli = ['-p', String(c.redis.port), '--user', 'stevedore', '--pass', pw, '--no-auth-warning'];
  await run(which('redis-cli'), [...cli, 'ACL', 'SETUSER', 'stevedore', 'resetpass', `>${pw2}`]);
  await writeFile(file, `${pw2}\n`);
  await run(which('redis-cli'), ['-p', String(c.redis.port), '--user', 'stevedore', '--pass', pw2, '--no-auth-warning', 'CLIENT', 'KILL', 'USER', 'stevedore']);
  await waitFor('both replicas to be back on Redis', async () => c.replicas.every((r) => r.logs.some((l) => l.msg === 'Redis is back: cluster coordination resumes')), 15_000);
  const blob2 = cold('redis-auth-acl-rotated');
  await pushBlob(reg.directUrl, 'library/big', blob2);
  await pullsTogether(t, c, reg, blob2);
  noSecretLogged(t, c, pw, pw2);
});

t.test('TLS only (rediss://, a private CA in metadata.tls.ca) with an ACL user in the URL: the replicas coordinate', async (t) => {
  const certs = await makeCertificates(t);
  const pw = secret('tls');
  const blob = cold('redis-auth-tls');
  const reg = await upstreamWith(t, blob, 4 * MiB);
  const c = await startCluster(t, {
    replicas: 2,
    upstreamUrl: reg.url,
    redis: { tls: { cert: certs.cert, key: certs.key, ca: certs.caCert }, users: [{ name: 'stevedore', password: pw }], defaultOff: true },
    metadata: (redis) => ({ redis: redis.urlWith('stevedore', pw), tls: { ca: certs.caCert } }),
  });
  t.match(c.redis.url, /^rediss:\/\//, 'the Redis answers TLS only');
  coordinated(t, c);
  await pullsTogether(t, c, reg, blob);
  noSecretLogged(t, c, pw);
});

t.test('node mode with an ACL user (default user off): nodes find each other through Redis, the second gets every blob from the first', async (t) => {
  const pw = secret('node');
  const tier = await startTiers(t, {
    nodes: 2,
    redis: { users: [{ name: 'stevedore', password: pw }], defaultOff: true },
    metadata: { username: 'stevedore', password: pw },
  });
  const img = buildDockerImage('redis-auth-node', { layers: 2, layerSize: 256 * 1024 });
  await pushImage(tier.registry.directUrl, 'library/app', 'v1', img);
  const [a, b] = tier.nodes as [(typeof tier.nodes)[0], (typeof tier.nodes)[0]];
  const first = await pullImage(a.url, 'library/app', 'v1');
  for (const [d, got] of first.blobs) t.equal(got, d, `node A served ${d} intact`);
  const digests = [img.config.digest, ...img.layers.map((l) => l.digest)];
  for (const d of digests) await waitFor(`node A announces ${d}`, async () => (await holders(tier.redis.urlWith('stevedore', pw), d)).includes(a.url));
  const centralBefore = blobRequests(tier.central).length;
  const second = await pullImage(b.url, 'library/app', 'v1');
  for (const [d, got] of second.blobs) t.equal(got, d, `node B served ${d} intact`);
  t.equal(blobRequests(tier.central).length - centralBefore, 0, 'central served no blob for the second node: it had them from its peer');
  const text = [a, b].map((n) => JSON.stringify(n.logs)).join('\n');
  t.notOk(text.includes(pw), 'the Redis password is in no log line');
});

/** A client certificate for `name`, signed by the test CA (openssl), with the clientAuth purpose. */
async function clientCertificate(t: Test, caCert: string, caKey: string, name: string): Promise<{ cert: string; key: string }> {
  const dir = await tmpDir(t);
  const [key, csr, cert, ext] = ['client.key', 'client.csr', 'client.crt', 'ext.cnf'].map((f) => path.join(dir, f)) as [string, string, string, string];
  await writeFile(ext, 'extendedKeyUsage=clientAuth\n');
  const openssl = which('openssl');
  await run(openssl, ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-subj', `/CN=${name}`, '-out', csr]);
  await run(openssl, ['x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-CAcreateserial', '-days', '1', '-extfile', ext, '-out', cert]);
  return { cert, key };
}

t.test('mutual TLS: a Redis that verifies clients takes the replicas with metadata.tls.cert and key', async (t) => {
  const certs = await makeCertificates(t);
  const client = await clientCertificate(t, certs.caCert, certs.caKey, 'stevedore');
  const pw = secret('mtls');
  const blob = cold('redis-auth-mtls');
  const reg = await upstreamWith(t, blob, 4 * MiB);
  const c = await startCluster(t, {
    replicas: 2,
    upstreamUrl: reg.url,
    redis: { tls: { cert: certs.cert, key: certs.key, ca: certs.caCert, authClients: 'yes' }, password: pw },
    metadata: { password: pw, tls: { ca: certs.caCert, cert: client.cert, key: client.key } },
  });
  coordinated(t, c);
  await pullsTogether(t, c, reg, blob);
  noSecretLogged(t, c, pw);
});

// ---- refusals: `serve` exits 2 with the key to fix, and never prints the password ----------------

async function serveConfig(t: Test, metadata: Record<string, unknown>): Promise<string> {
  const dir = await tmpDir(t);
  const file = path.join(dir, 'stevedore.yaml');
  await writeFile(file, JSON.stringify({ listen: '127.0.0.1:0', storage: { path: path.join(dir, 'store') }, defaultUpstream: null, upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, metadata }));
  return file;
}

t.test('a wrong password: serve refuses to start, naming the key, without the password', async (t) => {
  const pw = secret('right');
  const wrong = secret('wrong');
  const redis = await startRedis(t, { password: pw });
  const r = await stevedoreCli(['serve', '--config', await serveConfig(t, { redis: redis.url, password: wrong })], { timeoutMs: 30_000 });
  t.equal(r.code, 2, r.stdout + r.stderr);
  t.match(r.stderr, /metadata\.redis \(redis:\/\/127\.0\.0\.1:\d+\/?\): Redis refused the credentials of user "default" \(WRONGPASS\): check metadata\.username and metadata\.password/);
  t.notOk((r.stdout + r.stderr).includes(wrong), 'the wrong password is not printed');
  t.notOk((r.stdout + r.stderr).includes(pw), 'nor the right one');

  // The same in the URL: the key named is the URL, the password masked.
  const inUrl = await stevedoreCli(['serve', '--config', await serveConfig(t, { redis: redis.urlWith(null, wrong) })], { timeoutMs: 30_000 });
  t.equal(inUrl.code, 2, inUrl.stdout + inUrl.stderr);
  t.match(inUrl.stderr, /metadata\.redis \(redis:\/\/:redacted@127\.0\.0\.1:\d+\/?\): Redis refused the credentials .*metadata\.redis \(its password\)/);
  t.notOk((inUrl.stdout + inUrl.stderr).includes(wrong), 'the password of the URL is not printed');
});

t.test('an ACL user with a wrong password, and no password at all: serve refuses to start, saying which', async (t) => {
  const pw = secret('acl-right');
  const redis = await startRedis(t, { users: [{ name: 'stevedore', password: pw }], defaultOff: true });
  const wrong = secret('acl-wrong');
  const dir = await tmpDir(t);
  const file = path.join(dir, 'pw');
  await writeFile(file, wrong);
  const r = await stevedoreCli(['serve', '--config', await serveConfig(t, { redis: redis.url, username: 'stevedore', passwordFile: file })], { timeoutMs: 30_000 });
  t.equal(r.code, 2, r.stdout + r.stderr);
  t.match(r.stderr, /Redis refused the credentials of user "stevedore" \(WRONGPASS\): check metadata\.username and metadata\.passwordFile/);
  t.notOk((r.stdout + r.stderr).includes(wrong), 'the password of the file is not printed');

  const unreadable = await stevedoreCli(['serve', '--config', await serveConfig(t, { redis: redis.url, username: 'stevedore', passwordFile: path.join(dir, 'nope') })], { timeoutMs: 30_000 });
  t.equal(unreadable.code, 2, unreadable.stdout + unreadable.stderr);
  t.match(unreadable.stderr, /metadata\.passwordFile: cannot read .*nope: ENOENT/, 'an unreadable password file, named');

  const none = await stevedoreCli(['serve', '--config', await serveConfig(t, { redis: redis.url })], { timeoutMs: 30_000 });
  t.equal(none.code, 2, none.stdout + none.stderr);
  t.match(none.stderr, /metadata\.redis .*: Redis requires a password and none is configured \(NOAUTH\): set metadata\.password, metadata\.passwordFile/);
});

t.test('rediss:// to a Redis whose CA is not given, or that wants a client certificate: serve refuses to start, naming the key', async (t) => {
  const certs = await makeCertificates(t);
  const redis = await startRedis(t, { tls: { cert: certs.cert, key: certs.key, ca: certs.caCert } });
  const r = await stevedoreCli(['serve', '--config', await serveConfig(t, { redis: redis.url })], { timeoutMs: 30_000 });
  t.equal(r.code, 2, r.stdout + r.stderr);
  t.match(r.stderr, /metadata\.redis \(rediss:\/\/127\.0\.0\.1:\d+\/?\): Redis's TLS certificate is not trusted \(.*\): set metadata\.tls\.ca to the CA that signed it/);

  const mtls = await startRedis(t, { tls: { cert: certs.cert, key: certs.key, ca: certs.caCert, authClients: 'yes' } });
  const noCert = await stevedoreCli(['serve', '--config', await serveConfig(t, { redis: mtls.url, tls: { ca: certs.caCert } })], { timeoutMs: 30_000 });
  t.equal(noCert.code, 2, noCert.stdout + noCert.stderr);
  t.match(noCert.stderr, /Redis asks for a client certificate \(.*\): set metadata\.tls\.cert and metadata\.tls\.key/, 'a Redis that verifies clients, and no client certificate');

  const missing = await stevedoreCli(['serve', '--config', await serveConfig(t, { redis: redis.url, tls: { ca: path.join(certs.dir, 'nope.crt') } })], { timeoutMs: 30_000 });
  t.equal(missing.code, 2, missing.stdout + missing.stderr);
  t.match(missing.stderr, /metadata\.tls\.ca: cannot read .*nope\.crt: ENOENT/);
});
