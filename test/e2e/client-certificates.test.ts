// Client certificates as identities (config tls.clientCA, tls.clientAuth, tls.clientIdentity):
// ctr pulls through stevedore over HTTPS presenting a certificate from `stevedore tls init
// --client`, with the hosts.toml lines `stevedore containerd-config --client-cert --client-key`
// writes. The certificate's identity (`cn:NAME`) is the user the access rules match and the access
// and audit logs name.
import { readFileSync } from 'node:fs';
import { readAudit } from '../fixtures/audit.js';
import path from 'node:path';
import t, { type Test } from 'tap';
import { writeHostsTomls } from '../../lib/cli/containerd-config.js';
import { tlsInit } from '../../lib/cli/tls-init.js';
import { startContainerd, SAFE_FALLBACK_SERVER, type Containerd } from '../fixtures/containerd.js';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { tmpDir, waitFor, type Teardownable } from '../fixtures/util.js';


/** A CA, stevedore's certificate for 127.0.0.1 and client certificates for `clients`, as `tls init --name 127.0.0.1 --client ...` writes them. */
async function pki(t: Teardownable, clients: string[]): Promise<{ dir: string; caCert: string; cert: string; key: string; client: (name: string) => { cert: string; key: string } }> {
  const dir = await tmpDir(t, 'stevedore-mtls-');
  const r = await tlsInit({ names: ['127.0.0.1'], clients, out: dir, days: 30 });
  return {
    dir,
    caCert: r.caCert,
    cert: r.files!.cert,
    key: r.files!.key,
    client: (name) => ({ cert: path.join(dir, `client-${name}.crt`), key: path.join(dir, `client-${name}.key`) }),
  };
}

/** The hosts.toml `containerd-config --mirror URL --ca CA [--client-cert C --client-key K]` writes, in a hosts dir of its own. */
async function hostsDir(t: Test, mirror: string, ca: string, client?: { cert: string; key: string }): Promise<string> {
  const dir = await tmpDir(t, 'stevedore-mtls-hosts-');
  const [file] = await writeHostsTomls(dir, ['docker.io'], mirror, {
    server: SAFE_FALLBACK_SERVER,
    ca,
    ...(client ? { clientCert: client.cert, clientKey: client.key } : {}),
  });
  if (client) t.match(readFileSync(file!, 'utf8'), `  client = [[${JSON.stringify(client.cert)}, ${JSON.stringify(client.key)}]]`, 'the hosts.toml names the client certificate');
  return dir;
}

t.test('client certificates required: the certificate names the client', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('mtls/app', { layers: 1 });
  await pushImage(reg.directUrl, 'library/app', '1.0', img);
  const certs = await pki(t, ['node-1', 'node-2']);
  const audit = path.join(certs.dir, 'audit.log');
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    config: {
      tls: { cert: certs.cert, key: certs.key, clientCA: certs.caCert, clientAuth: 'required' },
      audit: { enabled: true, file: audit },
      // Only node-1 may pull; nobody else may do anything.
      auth: { anonymousPull: false, rules: [{ repository: 'docker.io/**', users: ['cn:node-1'], actions: ['pull'] }] },
    },
  });
  const ctrd: Containerd = await ctrdP;

  await t.test('ctr presenting node-1\'s certificate pulls, and the access log names cn:node-1', async (t) => {
    const r = await ctrd.pull('docker.io/library/app:1.0', { hostsDir: await hostsDir(t, sd.url, certs.caCert, certs.client('node-1')) });
    t.equal(r.code, 0, r.stderr);
    t.equal(await ctrd.imageDigest('docker.io/library/app:1.0'), img.manifest.digest, 'containerd stored the upstream manifest');
    const lines = sd.requestLogs().filter((l) => String(l.path).startsWith('/v2/library/app/'));
    t.ok(lines.length >= 3, 'containerd asked stevedore for the manifest and the blobs');
    t.same([...new Set(lines.map((l) => `${String(l.status)} ${String(l.user)}`))], ['200 cn:node-1'], 'every request was node-1\'s, and served');
  });

  await t.test('ctr presenting node-2\'s certificate is refused: 403 naming cn:node-2, in the access log and the audit log', async (t) => {
    const r = await ctrd.pull('docker.io/library/app:1.0', { hostsDir: await hostsDir(t, sd.url, certs.caCert, certs.client('node-2')) });
    t.not(r.code, 0, 'the pull fails');
    t.match(r.stderr, /403 Forbidden - user cn:node-2 may not pull/, 'ctr prints why');
    t.ok(sd.requestLogs().some((l) => l.status === 403 && l.user === 'cn:node-2'), 'the access log names cn:node-2');
    await waitFor('the access.denied audit line', async () => readAudit(audit).some((l) => l.act === 'access.denied'), 5_000);
    t.match(readAudit(audit).find((l) => l.act === 'access.denied'), { act: 'access.denied', user: 'cn:node-2', address: '127.0.0.1', repository: 'docker.io/library/app' });
  });

  await t.test('ctr without a client certificate is refused: 403 saying a certificate is required', async (t) => {
    const r = await ctrd.pull('docker.io/library/app:1.0', { hostsDir: await hostsDir(t, sd.url, certs.caCert) });
    t.not(r.code, 0, 'the pull fails');
    t.match(r.stderr, /403 Forbidden - a client certificate is required/, 'ctr prints why');
    t.ok(sd.requestLogs().some((l) => l.status === 403 && l.user === undefined && (l.error as { message?: string } | undefined)?.message?.includes('client certificate is required')));
  });

  await t.test('ctr given a certificate from another CA (also CN=node-1) is refused, named nobody', async (t) => {
    const other = await pki(t, ['node-1']);
    const before = sd.requestLogs().length;
    const r = await ctrd.pull('docker.io/library/app:1.0', { hostsDir: await hostsDir(t, sd.url, certs.caCert, other.client('node-1')) });
    t.not(r.code, 0, 'the pull fails');
    // Go's TLS client presents a certificate only when its issuer is among the CAs the server
    // names in its request (tls.clientCA's): this one it keeps, and stevedore sees none at all.
    t.match(r.stderr, /403 Forbidden - (a client certificate is required|the client certificate is refused)/);
    const lines = sd.requestLogs().slice(before);
    t.ok(lines.length > 0 && lines.every((l) => l.status === 403 && l.user === undefined), 'refused, and no request was node-1\'s');
  });

  await t.test('the probes answer without a certificate (the kubelet presents none)', async (t) => {
    const { request } = await import('node:https');
    const status = await new Promise<number>((resolve, reject) => {
      request(`${sd.url}/healthz`, { ca: readFileSync(certs.caCert), agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .once('error', reject)
        .end();
    });
    t.equal(status, 200);
  });
});

t.test('client certificates optional: anonymous clients still pull, a certificate still names its client', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('mtls/optional', { layers: 1 });
  await pushImage(reg.directUrl, 'library/app', '1.0', img);
  const certs = await pki(t, ['node-1']);
  const sd: Stevedore = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    config: {
      tls: { cert: certs.cert, key: certs.key, clientCA: certs.caCert, clientAuth: 'optional' },
      auth: { anonymousPull: true },
    },
  });
  const ctrd = await ctrdP;

  await t.test('ctr without a certificate pulls anonymously', async (t) => {
    const r = await ctrd.pull('docker.io/library/app:1.0', { hostsDir: await hostsDir(t, sd.url, certs.caCert) });
    t.equal(r.code, 0, r.stderr);
    t.equal(await ctrd.imageDigest('docker.io/library/app:1.0'), img.manifest.digest);
    const lines = sd.requestLogs().filter((l) => String(l.path).startsWith('/v2/library/app/'));
    t.ok(lines.length > 0 && lines.every((l) => l.status === 200 && l.user === undefined), 'served, to nobody in particular');
  });

  await t.test('ctr presenting node-1\'s certificate is named cn:node-1', async (t) => {
    await ctrd.removeImage('docker.io/library/app:1.0');
    const before = sd.requestLogs().length;
    const r = await ctrd.pull('docker.io/library/app:1.0', { hostsDir: await hostsDir(t, sd.url, certs.caCert, certs.client('node-1')) });
    t.equal(r.code, 0, r.stderr);
    const lines = sd.requestLogs().slice(before);
    t.ok(lines.length > 0 && lines.every((l) => l.user === 'cn:node-1'), 'every request was node-1\'s');
  });
});
