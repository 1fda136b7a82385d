// `stevedore doctor` and Redis's protection: a WARN line when Redis answers without a password or
// plain redis:// crosses to another host, an ok line with the user it authenticated as, a FAIL
// naming the key for wrong credentials, and never a password printed. Real redis-server processes
// on 127.0.0.1 (requirepass).
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import t, { type Test } from 'tap';
import { stringify } from 'yaml';
import { stevedoreCli } from '../fixtures/cli.js';
import { startRedis } from '../fixtures/redis.js';
import { tmpDir } from '../fixtures/util.js';

async function writeConfig(t: Test, doc: Record<string, unknown>): Promise<string> {
  const dir = await tmpDir(t);
  const file = path.join(dir, 'stevedore.yaml');
  await writeFile(file, stringify({ storage: { path: path.join(dir, 'store') }, defaultUpstream: null, ...doc }));
  return file;
}

t.test('redis: a WARN line when Redis answers without a password; none when it requires one; wrong credentials FAIL naming the key', async (t) => {
  const offline = { 'closed.test': { url: 'http://127.0.0.1:1', offline: true } };
  const open = await startRedis(t);
  const o = await stevedoreCli(['doctor', '--config', await writeConfig(t, { metadata: { redis: open.url }, upstreams: offline })]);
  t.equal(o.code, 0, o.stdout + o.stderr);
  t.match(o.stdout, /^WARN {2}redis redis:\/\/127\.0\.0\.1:\d+\/?: no password: Redis answers anyone who reaches it.* — give Redis a password \(requirepass, or an ACL user/m);

  const pw = 'doctor-redis-pw-0123456789';
  const locked = await startRedis(t, { password: pw });
  const l = await stevedoreCli(['doctor', '--config', await writeConfig(t, { metadata: { redis: locked.url, password: '${REDIS_PASSWORD}' }, upstreams: offline })], { env: { REDIS_PASSWORD: pw } });
  t.equal(l.code, 0, l.stdout + l.stderr);
  t.match(l.stdout, /^ok {4}redis redis:\/\/127\.0\.0\.1:\d+\/?: answers PING \(PONG\), authenticated \(default user\)/m);
  t.notMatch(l.stdout, /^WARN {2}redis/m, 'no warning: Redis requires a password');
  t.notOk((l.stdout + l.stderr).includes(pw), 'the password is never printed');

  const w = await stevedoreCli(['doctor', '--config', await writeConfig(t, { metadata: { redis: locked.url, password: 'not-the-password-42' }, upstreams: offline })]);
  t.equal(w.code, 1, w.stdout + w.stderr);
  t.match(w.stdout, /^FAIL {2}redis redis:\/\/127\.0\.0\.1:\d+\/?: Redis refused the credentials of user "default" \(WRONGPASS\): check metadata\.username and metadata\.password/m);
  t.notOk((w.stdout + w.stderr).includes('not-the-password-42'), 'the wrong password is never printed');
});

t.test('redis: plain redis:// to an address that is not loopback gets a WARN line (the password would cross the network in clear)', async (t) => {
  const pw = 'doctor-redis-pw-9876543210';
  const redis = await startRedis(t, { password: pw });
  // 0.0.0.0 reaches this machine's 127.0.0.1 on Linux, but is not a loopback address by name:
  // what a Service name or a pod IP is to the check.
  const url = redis.urlWith(null, pw).replace('127.0.0.1', '0.0.0.0');
  const r = await stevedoreCli(['doctor', '--config', await writeConfig(t, { metadata: { redis: url }, upstreams: { 'closed.test': { url: 'http://127.0.0.1:1', offline: true } } })]);
  t.equal(r.code, 0, r.stdout + r.stderr);
  t.match(r.stdout, /^ok {4}redis redis:\/\/:redacted@0\.0\.0\.0:\d+\/?: answers PING/m);
  t.match(r.stdout, /^WARN {2}redis .*: plain redis:\/\/ to another host: the password and every record cross the network unencrypted — use rediss:\/\//m);
  t.notOk((r.stdout + r.stderr).includes(pw), 'the password is never printed');
});
