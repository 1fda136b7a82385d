// `stevedore tls init`: a CA and a server certificate for the names given, run as a user would.
import { X509Certificate } from 'node:crypto';
import { chmodSync, lstatSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { stevedoreCli } from '../fixtures/cli.js';
import { tmpDir } from '../fixtures/util.js';

const FILES = ['ca.crt', 'ca.key', 'tls.crt', 'tls.key'];

t.test('tls init writes a CA and a server certificate whose subjectAltNames are the names given', async (t) => {
  const out = path.join(await tmpDir(t, 'stevedore-tls-init-'), 'tls');
  const r = await stevedoreCli(['tls', 'init', '--name', 'stevedore.example', '--name', '10.0.0.5', '--name', '127.0.0.1', '--out', out, '--days', '30']);
  t.equal(r.code, 0, r.stderr);
  const cert = new X509Certificate(readFileSync(path.join(out, 'tls.crt')));
  t.equal(cert.subjectAltName, 'DNS:stevedore.example, IP Address:10.0.0.5, IP Address:127.0.0.1');
  t.equal(cert.subject, 'CN=stevedore.example', 'the first name is the CN');
  t.equal(cert.ca, false, 'the server certificate is no CA');
  const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
  t.ok(days > 29 && days <= 30, `valid for --days 30 (${days.toFixed(2)} days left)`);
  t.match(r.stdout, /tls:\n\s+cert: .*tls\.crt\n\s+key: .*tls\.key/, 'it prints the config lines');
  t.match(r.stdout, /\/etc\/docker\/certs\.d\/stevedore\.example:5000\/ca\.crt/, 'and where Docker wants ca.crt');
  t.match(r.stdout, /\/etc\/containers\/certs\.d\/stevedore\.example:5000\/ca\.crt/, 'and where podman and CRI-O want it');
  t.match(r.stdout, /ca = "/, 'and the containerd hosts.toml line');
  t.match(r.stdout, /ca_file/, 'and the k3s registries.yaml key');
});

t.test('the server certificate chains to the CA written beside it, and to no other', async (t) => {
  const dir = await tmpDir(t, 'stevedore-tls-init-');
  for (const d of ['a', 'b']) {
    const r = await stevedoreCli(['tls', 'init', '--name', 'registry.lab', '--out', path.join(dir, d)]);
    t.equal(r.code, 0, r.stderr);
  }
  const ca = new X509Certificate(readFileSync(path.join(dir, 'a', 'ca.crt')));
  const cert = new X509Certificate(readFileSync(path.join(dir, 'a', 'tls.crt')));
  const otherCa = new X509Certificate(readFileSync(path.join(dir, 'b', 'ca.crt')));
  t.equal(ca.ca, true, 'ca.crt is a CA certificate');
  t.ok(cert.checkIssued(ca), 'tls.crt names ca.crt as its issuer');
  t.ok(cert.verify(ca.publicKey), "tls.crt is signed with ca.crt's key");
  t.notOk(cert.verify(otherCa.publicKey), 'another init made another CA');
  t.not(cert.serialNumber, new X509Certificate(readFileSync(path.join(dir, 'b', 'tls.crt'))).serialNumber, 'serial numbers differ');
});

t.test('the keys are readable by their owner only, the certificates by everyone', async (t) => {
  const out = await tmpDir(t, 'stevedore-tls-init-');
  const r = await stevedoreCli(['tls', 'init', '--name', '127.0.0.1', '--out', out]);
  t.equal(r.code, 0, r.stderr);
  const mode = (f: string): string => (statSync(path.join(out, f)).mode & 0o777).toString(8);
  t.same(FILES.map(mode), ['644', '600', '644', '600']);
});

t.test('tls init refuses to overwrite existing files, and replaces them with --force', async (t) => {
  const out = await tmpDir(t, 'stevedore-tls-init-');
  writeFileSync(path.join(out, 'tls.key'), 'precious\n', { mode: 0o644 });
  const refused = await stevedoreCli(['tls', 'init', '--name', '127.0.0.1', '--out', out]);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /refusing to overwrite .*tls\.key.*--force/);
  t.equal(readFileSync(path.join(out, 'tls.key'), 'utf8'), 'precious\n', 'the file is untouched');
  for (const f of ['ca.crt', 'ca.key', 'tls.crt']) t.throws(() => statSync(path.join(out, f)), `${f} was not written either`);

  const forced = await stevedoreCli(['tls', 'init', '--name', '127.0.0.1', '--out', out, '--force']);
  t.equal(forced.code, 0, forced.stderr);
  t.match(readFileSync(path.join(out, 'tls.key'), 'utf8'), /BEGIN PRIVATE KEY/);
  t.equal((statSync(path.join(out, 'tls.key')).mode & 0o777).toString(8), '600', 'an overwritten key gets 0600 too');
});

t.test('--force replaces a symlink at a key with a new file: the file it pointed at is untouched, and no key is ever readable by others', async (t) => {
  const dir = await tmpDir(t, 'stevedore-tls-init-');
  const out = path.join(dir, 'tls');
  const victim = path.join(dir, 'victim');
  writeFileSync(victim, 'precious\n', { mode: 0o644 });
  const first = await stevedoreCli(['tls', 'init', '--name', '127.0.0.1', '--out', out]);
  t.equal(first.code, 0, first.stderr);
  // Someone who may write in the directory points ca.key elsewhere, and loosens tls.key.
  rmSync(path.join(out, 'ca.key'));
  symlinkSync(victim, path.join(out, 'ca.key'));
  chmodSync(path.join(out, 'tls.key'), 0o644);

  const forced = await stevedoreCli(['tls', 'init', '--name', '127.0.0.1', '--out', out, '--force']);
  t.equal(forced.code, 0, forced.stderr);
  t.equal(readFileSync(victim, 'utf8'), 'precious\n', 'the file the symlink pointed at is untouched');
  t.equal((statSync(victim).mode & 0o777).toString(8), '644', 'and keeps its mode');
  const caKey = lstatSync(path.join(out, 'ca.key'));
  t.ok(caKey.isFile() && !caKey.isSymbolicLink(), 'ca.key is a file of its own now');
  t.equal((caKey.mode & 0o777).toString(8), '600', 'readable by its owner only');
  t.match(readFileSync(path.join(out, 'ca.key'), 'utf8'), /BEGIN PRIVATE KEY/);
  t.equal((lstatSync(path.join(out, 'tls.key')).mode & 0o777).toString(8), '600', 'the loosened key was replaced by a 0600 one');
  t.same(readdirSync(out).sort(), [...FILES].sort(), 'no temporary file is left');
});

t.test('a name that is neither a DNS name nor an IP address is refused', async (t) => {
  const out = await tmpDir(t, 'stevedore-tls-init-');
  const r = await stevedoreCli(['tls', 'init', '--name', 'not a host!', '--out', out]);
  t.equal(r.code, 1);
  t.match(r.stderr, /--name not a host! is neither a DNS name nor an IP address/);
});

// ---------------------------------------------------------------- --client (config tls.clientCA)

t.test('tls init --client issues a client certificate the same CA signs, for client authentication, named by its CN', async (t) => {
  const out = await tmpDir(t, 'stevedore-tls-init-');
  const r = await stevedoreCli(['tls', 'init', '--name', '127.0.0.1', '--client', 'node-1', '--out', out]);
  t.equal(r.code, 0, r.stderr);
  const ca = new X509Certificate(readFileSync(path.join(out, 'ca.crt')));
  const client = new X509Certificate(readFileSync(path.join(out, 'client-node-1.crt')));
  t.equal(client.subject, 'CN=node-1');
  t.equal(client.subjectAltName, 'DNS:node-1');
  t.same(client.keyUsage, ['1.3.6.1.5.5.7.3.2'], 'extended key usage: client authentication only');
  t.ok(client.verify(ca.publicKey), 'signed by ca.crt');
  t.equal((statSync(path.join(out, 'client-node-1.key')).mode & 0o777).toString(8), '600');
  t.match(r.stdout, /clientCA: .*ca\.crt/, 'it prints the clientCA line');
  t.match(r.stdout, /--client-cert \/etc\/containerd\/certs\.d\/client-node-1\.crt --client-key /, 'and the containerd-config flags');
});

t.test('tls init --client without --name signs with the CA already in --out, and writes nothing else', async (t) => {
  const out = await tmpDir(t, 'stevedore-tls-init-');
  t.equal((await stevedoreCli(['tls', 'init', '--name', '127.0.0.1', '--out', out])).code, 0);
  const before = readFileSync(path.join(out, 'ca.crt'));
  const r = await stevedoreCli(['tls', 'init', '--client', 'node-2', '--out', out]);
  t.equal(r.code, 0, r.stderr);
  t.same(readdirSync(out).sort(), [...FILES, 'client-node-2.crt', 'client-node-2.key'].sort());
  t.ok(readFileSync(path.join(out, 'ca.crt')).equals(before), 'the CA is the one that was there');
  const client = new X509Certificate(readFileSync(path.join(out, 'client-node-2.crt')));
  t.ok(client.verify(new X509Certificate(before).publicKey), 'signed by it');
});

t.test('tls init --client without --name and without a CA in --out is refused, saying what to do', async (t) => {
  const out = await tmpDir(t, 'stevedore-tls-init-');
  const r = await stevedoreCli(['tls', 'init', '--client', 'node-1', '--out', out]);
  t.equal(r.code, 1);
  t.match(r.stderr, /signs with the CA in --out.*run tls init --name HOST first/);
  t.same(readdirSync(out), []);
});

t.test('a client name that would not make a plain CN or file name is refused', async (t) => {
  const out = await tmpDir(t, 'stevedore-tls-init-');
  const r = await stevedoreCli(['tls', 'init', '--name', '127.0.0.1', '--client', '../node', '--out', out]);
  t.equal(r.code, 1);
  t.match(r.stderr, /--client \.\.\/node is not a client name/);
  t.same(readdirSync(out), []);
});
