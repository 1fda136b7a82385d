// Clients pulling through stevedore over HTTPS (config `tls`, a certificate from `tls init`'s
// code for 127.0.0.1), each trusting the generated CA the way it is configured in production,
// never with verification turned off.
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { startContainerd, SAFE_FALLBACK_SERVER } from '../fixtures/containerd.js';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { preparePodman } from '../fixtures/podman.js';
import { startRegistry } from '../fixtures/registry.js';
import { readDirImage, skopeoCopy } from '../fixtures/skopeo.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { makeCertificates } from '../fixtures/tls.js';
import { tmpDir } from '../fixtures/util.js';

t.test('pulls over HTTPS', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('pull-https/app', { layers: 2 });
  await pushImage(reg.directUrl, 'library/app', '1.0', img);
  const certs = await makeCertificates(t);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { tls: { cert: certs.cert, key: certs.key } } });
  t.match(sd.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  // A client's certs directory holds the CA only (a *.key there would be taken for a client certificate's).
  const trusted = await tmpDir(t, 'stevedore-certs-');
  copyFileSync(certs.caCert, path.join(trusted, 'ca.crt'));

  await t.test('skopeo pulls trusting only the generated CA (--src-cert-dir)', async (t) => {
    const out = await tmpDir(t, 'stevedore-skopeo-out-');
    const r = await skopeoCopy(`docker://${sd.host}/library/app:1.0`, `dir:${out}`, { srcCertDir: trusted });
    t.equal(r.code, 0, r.stderr);
    const got = readDirImage(out);
    t.equal(got.manifest.toString(), img.manifest.data.toString(), 'the manifest bytes are the upstream ones');
    for (const b of [img.config, ...img.layers]) t.ok(got.blobs.get(b.digest)?.equals(b.data), `blob ${b.digest.slice(0, 19)} arrived intact`);
  });

  await t.test('skopeo without the CA is refused with a certificate error', async (t) => {
    const empty = await tmpDir(t, 'stevedore-no-certs-');
    const out = await tmpDir(t, 'stevedore-skopeo-out-');
    const r = await skopeoCopy(`docker://${sd.host}/library/app:1.0`, `dir:${out}`, { srcCertDir: empty });
    t.not(r.code, 0, 'the pull fails');
    t.match(r.stderr, /x509: certificate signed by unknown authority/);
  });

  await t.test('ctr pulls with a hosts.toml whose https host names the CA file (no skip_verify)', async (t) => {
    const ctrd = await ctrdP;
    const hostsDir = await tmpDir(t, 'stevedore-hosts-');
    mkdirSync(path.join(hostsDir, 'docker.io'));
    const toml = [`server = "${SAFE_FALLBACK_SERVER}"`, '', `[host."${sd.url}"]`, '  capabilities = ["pull", "resolve"]', `  ca = "${certs.caCert}"`, ''].join('\n');
    writeFileSync(path.join(hostsDir, 'docker.io', 'hosts.toml'), toml);
    const r = await ctrd.pull('docker.io/library/app:1.0', { hostsDir });
    t.equal(r.code, 0, r.stderr);
    t.equal(await ctrd.imageDigest('docker.io/library/app:1.0'), img.manifest.digest, 'containerd stored the upstream manifest');
    t.ok(sd.requestLogs().some((l) => String(l.path).includes('ns=docker.io')), 'containerd asked stevedore');
  });

  await t.test('podman pulls through an https mirror trusting the CA from its certs.d', async (t) => {
    const conf = `[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "${sd.host}/docker.io"\n`;
    const pm = await preparePodman(t, { registriesConf: conf });
    const before = await pm.pull('docker.io/library/app:1.0');
    t.not(before.code, 0, 'without the CA in its certs.d, podman refuses the mirror');
    t.match(before.stderr, /x509: certificate signed by unknown authority/);
    // containers-certs.d(5): $HOME/.config/containers/certs.d/HOST:PORT/ca.crt, as /etc/containers/certs.d for root.
    const certsD = path.join(pm.home, '.config', 'containers', 'certs.d', sd.host);
    mkdirSync(certsD, { recursive: true });
    copyFileSync(certs.caCert, path.join(certsD, 'ca.crt'));
    const r = await pm.pull('docker.io/library/app:1.0');
    t.equal(r.code, 0, r.stderr);
    t.equal(await pm.imageDigest('docker.io/library/app:1.0'), img.manifest.digest);
    t.ok(sd.requestLogs().some((l) => String(l.path) === '/v2/docker.io/library/app/manifests/1.0'), 'podman asked the mirror, not the registry');
  });
});

t.test('over HTTPS the token realm is https, and skopeo logs in through it', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('pull-https/private', { layers: 1 });
  await pushImage(reg.directUrl, 'library/private', '1.0', img);
  const certs = await makeCertificates(t);
  const dir = await tmpDir(t, 'stevedore-https-auth-');
  const htpasswd = path.join(dir, 'htpasswd');
  writeFileSync(htpasswd, `reader:${bcrypt.hashSync('Re4der-pass', 5)}\n`);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    config: { tls: { cert: certs.cert, key: certs.key }, auth: { htpasswd, anonymousPull: false } },
  });
  const trusted = await tmpDir(t, 'stevedore-certs-');
  copyFileSync(certs.caCert, path.join(trusted, 'ca.crt'));

  const challenge = await new Promise<string | undefined>((resolve, reject) => {
    https.get(`${sd.url}/v2/`, { ca: certs.caPem, agent: false }, (res) => {
      res.resume();
      resolve(res.headers['www-authenticate']);
    }).once('error', reject);
  });
  t.equal(challenge, `Bearer realm="https://${sd.host}/token",service="stevedore"`, 'the realm built from the request has the https scheme');
  const out = await tmpDir(t, 'stevedore-skopeo-out-');
  const r = await skopeoCopy(`docker://${sd.host}/library/private:1.0`, `dir:${out}`, { srcCertDir: trusted, creds: 'reader:Re4der-pass' });
  t.equal(r.code, 0, r.stderr);
  t.equal(readDirImage(out).manifest.toString(), img.manifest.data.toString());
  t.ok(sd.requestLogs().some((l) => String(l.path).startsWith('/token') && l.status === 200), 'skopeo got its token from the https realm');
});
