// `stevedore serve` with config `tls` whose files cannot serve: start-up stops (exit 2) with an
// error naming the key, before anything listens.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { stevedoreCli } from '../fixtures/cli.js';
import { makeCertificates } from '../fixtures/tls.js';
import { tmpDir, type RunResult, type Teardownable } from '../fixtures/util.js';

async function serveWith(t: Teardownable, tls: { cert: string; key: string }): Promise<RunResult> {
  const dir = await tmpDir(t, 'stevedore-tls-startup-');
  const file = path.join(dir, 'stevedore.yaml');
  writeFileSync(file, JSON.stringify({ listen: '127.0.0.1:0', storage: { path: path.join(dir, 'data') }, defaultUpstream: null, upstreams: {}, tls }));
  return stevedoreCli(['serve', '--config', file], { timeoutMs: 60_000 });
}

t.test('a certificate file that does not exist stops start-up, naming tls.cert', async (t) => {
  const certs = await makeCertificates(t);
  const r = await serveWith(t, { cert: path.join(certs.dir, 'missing.crt'), key: certs.key });
  t.equal(r.code, 2, 'exit 2: a configuration error');
  t.match(r.stderr, /tls\.cert: cannot read .*missing\.crt: ENOENT/);
  t.notMatch(r.stdout, /stevedore listening/, 'nothing listened');
});

t.test('a key file that does not exist stops start-up, naming tls.key', async (t) => {
  const certs = await makeCertificates(t);
  const r = await serveWith(t, { cert: certs.cert, key: path.join(certs.dir, 'missing.key') });
  t.equal(r.code, 2);
  t.match(r.stderr, /tls\.key: cannot read .*missing\.key: ENOENT/);
});

t.test('a key that does not match the certificate stops start-up, naming tls.key', async (t) => {
  const certs = await makeCertificates(t);
  // The CA's key: a good key, of another certificate.
  const r = await serveWith(t, { cert: certs.cert, key: certs.caKey });
  t.equal(r.code, 2);
  t.match(r.stderr, /tls\.key: .*ca\.key does not match the certificate in tls\.cert/);
});

t.test('a certificate file that is not PEM stops start-up, naming tls.cert', async (t) => {
  const certs = await makeCertificates(t);
  const notPem = path.join(certs.dir, 'notpem.crt');
  writeFileSync(notPem, 'this is not a certificate\n');
  const r = await serveWith(t, { cert: notPem, key: certs.key });
  t.equal(r.code, 2);
  t.match(r.stderr, /tls\.cert: .*notpem\.crt is not a PEM certificate/);
});

t.test('a key file that is not PEM stops start-up, naming tls.key', async (t) => {
  const certs = await makeCertificates(t);
  const r = await serveWith(t, { cert: certs.cert, key: certs.cert });
  t.equal(r.code, 2);
  t.match(r.stderr, /tls\.key: .*tls\.crt is not a PEM private key/);
});
