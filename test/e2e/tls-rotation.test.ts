// The certificate is rotated the way cert-manager and the kubelet do it (a Secret volume: files
// reached through a `..data` symlink that is swapped atomically to a new directory) while a
// 200 MiB blob streams to a client over HTTPS. The transfer in flight completes on the certificate
// it began with; a new connection gets the new one; a bad pair later is logged and not served.
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, renameSync, symlinkSync } from 'node:fs';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import path from 'node:path';
import t from 'tap';
import { makeBlob, pushBlob } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { makeCertificates, presentedCertificate, type Certificates } from '../fixtures/tls.js';
import { tmpDir, waitFor } from '../fixtures/util.js';

const SIZE = 200 * 1024 * 1024;

/** A Secret-volume-like directory: tls.crt and tls.key are symlinks through `..data` to a generation directory. */
class SecretVolume {
  private generation = 0;
  constructor(readonly dir: string) {}
  get cert(): string {
    return path.join(this.dir, 'tls.crt');
  }
  get key(): string {
    return path.join(this.dir, 'tls.key');
  }
  /** Publishes a new pair as the kubelet does: a new directory, then one atomic rename of the `..data` link. */
  publish(files: { cert: string; key: string }): void {
    const gen = `..gen${++this.generation}`;
    mkdirSync(path.join(this.dir, gen));
    copyFileSync(files.cert, path.join(this.dir, gen, 'tls.crt'));
    copyFileSync(files.key, path.join(this.dir, gen, 'tls.key'));
    symlinkSync(gen, path.join(this.dir, '..data_tmp'));
    renameSync(path.join(this.dir, '..data_tmp'), path.join(this.dir, '..data'));
    if (this.generation === 1) {
      symlinkSync('..data/tls.crt', this.cert);
      symlinkSync('..data/tls.key', this.key);
    }
  }
}

t.test('certificate rotation while a 200 MiB blob streams over HTTPS', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(randomBytes(SIZE), 'application/octet-stream');
  await pushBlob(reg.directUrl, 'library/big', blob);
  const [first, second] = await Promise.all([makeCertificates(t), makeCertificates(t)]);
  const volume = new SecretVolume(await tmpDir(t, 'stevedore-secret-'));
  volume.publish(first);
  const sd = await spawnStevedore(t, {
    storage: { path: await tmpDir(t) },
    upstreams: { 'docker.io': { url: reg.url } },
    tls: { cert: volume.cert, key: volume.key, reloadInterval: '1s' },
  });
  t.match(sd.url, /^https:/, 'the listening line gives an https URL');
  const reloads = (): Array<Record<string, unknown>> => sd.logs.filter((l) => l.msg === 'TLS certificate reloaded: new connections get it');

  // The client trusts the first CA only, and reads 8 MiB, then stops reading.
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    https.get(`${sd.url}/v2/library/big/blobs/${blob.digest}?ns=docker.io`, { ca: first.caPem, agent: false }, resolve).once('error', reject);
  });
  t.equal(res.statusCode, 200);
  const hash = createHash('sha256');
  let received = 0;
  const done = new Promise<void>((resolve, reject) => {
    res.on('data', (c: Buffer) => {
      hash.update(c);
      received += c.length;
      if (received >= 8 * 1024 * 1024 && !res.isPaused() && reloads().length === 0) res.pause();
    });
    res.once('end', resolve);
    res.once('error', reject);
  });
  t.equal((res.socket as TLSSocket).getPeerX509Certificate()?.fingerprint256, first.x509.fingerprint256, 'the transfer began on the first certificate');
  await waitFor('the client to have read 8 MiB', async () => received >= 8 * 1024 * 1024, 60_000);

  await t.test('a new connection after the files are replaced gets the new certificate', async (t) => {
    volume.publish(second);
    await waitFor('stevedore to reload the certificate', async () => reloads().length === 1, 20_000);
    t.ok(received < SIZE, `the blob was still in flight when the certificate changed (${received} of ${SIZE} bytes read)`);
    t.equal((reloads()[0]!.tls as { serialNumber: string }).serialNumber, second.x509.serialNumber, 'the log names the new serial number');
    const seen = await presentedCertificate(sd.url, second.caPem);
    t.equal(seen.fingerprint256, second.x509.fingerprint256, 'the new certificate is presented');
    t.equal(seen.serialNumber, second.x509.serialNumber);
    await t.rejects(presentedCertificate(sd.url, first.caPem), /self[- ]signed|unable to verify|unknown authority/i, 'a client trusting only the old CA no longer verifies');
  });

  await t.test('the transfer in flight completes with the right digest', async (t) => {
    res.resume();
    await done;
    t.equal(received, SIZE);
    t.equal(`sha256:${hash.digest('hex')}`, blob.digest);
  });

  await t.test('a bad pair at reload time is logged and the certificate loaded before is kept', async (t) => {
    const bad: Certificates = { ...second, key: first.key };
    volume.publish(bad);
    await waitFor('stevedore to log the bad pair', async () => sd.logs.some((l) => String(l.msg).startsWith('TLS certificate not reloaded')), 20_000);
    const line = sd.logs.find((l) => String(l.msg).startsWith('TLS certificate not reloaded'))!;
    t.match(String(line.problem), /^tls\.key: .* does not match the certificate in tls\.cert/);
    const seen = await presentedCertificate(sd.url, second.caPem);
    t.equal(seen.fingerprint256, second.x509.fingerprint256, 'new connections still get the last good certificate');
    t.equal(reloads().length, 1, 'nothing was reloaded');
  });
});
