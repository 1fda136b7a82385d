/**
 * `stevedore tls init`: a small CA and a server certificate it signs, for serving HTTPS where no
 * other CA is at hand (a lab, an air-gapped site). Certificates are built with @peculiar/x509 on
 * Node's WebCrypto (ECDSA P-256, SHA-256), never by hand.
 *
 *   <out>/ca.crt    the CA certificate: what every client is given to trust   (0644)
 *   <out>/ca.key    the CA's key: signs certificates, keep it off the server   (0600)
 *   <out>/tls.crt   the server certificate, subjectAltNames = the --name values (0644)
 *   <out>/tls.key   the server's key                                            (0600)
 *   <out>/client-<NAME>.crt, .key   with `--client NAME`: a client certificate (CN=NAME, and
 *                   DNS:NAME when NAME is a DNS name; extended key usage clientAuth) the same CA
 *                   signs, for config tls.clientCA (README, "Client certificates")  (0644 / 0600)
 *
 * With `--client` alone (no `--name`), the CA already in <out> (ca.crt, ca.key from an earlier
 * init) signs the client certificates, and nothing else is written.
 *
 * Existing files are never overwritten without `force`; without it, nothing is written if any
 * of the files to write exists. With it, each is replaced by rename (a symlink at a name is
 * replaced, never written through).
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { randomBytes, webcrypto } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
/** The CA outlives the server certificates it signs: clients keep trusting it across rotations. */
const CA_DAYS = 3650;
const DAY_MS = 86_400_000;
/** A DNS name, a wildcard (`*.example.com`) allowed as its first label. */
const DNS_NAME_RE = /^(?:\*\.)?(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export interface TlsInitOptions {
  /** DNS names and IP addresses the server is reached by (the first is the certificate's CN); [] with `clients`: sign clients with the CA already in `out`. */
  names: string[];
  /** Client certificates to issue, one per name (its CN). */
  clients?: string[];
  /** Directory written (created if absent). */
  out: string;
  /** Validity of the server certificate, in days. */
  days: number;
  /** Overwrite existing files. */
  force?: boolean;
  now?: Date;
}

export interface TlsInitResult {
  /** The CA's and server's files; null with `--client` alone (the CA was there already). */
  files: { caCert: string; caKey: string; cert: string; key: string } | null;
  subjectAltNames: string[];
  notAfter: Date;
  /** The client certificates written, with the CA file that signed them. */
  clients: Array<{ name: string; cert: string; key: string }>;
  caCert: string;
}

/** A client name: the certificate's CN and part of its file names. */
const CLIENT_NAME_RE = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$/;

/** Checks `--client` names: letters, digits, '.', '_' and '-', at most 64, no repeats. */
export function checkClientNames(names: readonly string[]): void {
  const seen = new Set<string>();
  for (const n of names) {
    if (!CLIENT_NAME_RE.test(n)) throw new Error(`--client ${n} is not a client name (letters, digits, ".", "_" and "-", at most 64, starting and ending with a letter or digit)`);
    if (seen.has(n.toLowerCase())) throw new Error(`--client ${n} is given twice`);
    seen.add(n.toLowerCase());
  }
}

/** The subjectAltName entries for `names`: IP addresses as such, the rest as DNS names; throws on a bad one. */
export function subjectAltNames(names: readonly string[]): x509.JsonGeneralName[] {
  if (names.length === 0) throw new Error('at least one --name is needed (a DNS name or IP address clients use)');
  const seen = new Set<string>();
  return names.map((raw) => {
    const name = raw.replace(/^\[|\]$/g, '');
    if (seen.has(name.toLowerCase())) throw new Error(`--name ${raw} is given twice`);
    seen.add(name.toLowerCase());
    if (net.isIP(name)) return { type: 'ip', value: name };
    if (name.length > 253 || !DNS_NAME_RE.test(name)) throw new Error(`--name ${raw} is neither a DNS name nor an IP address`);
    return { type: 'dns', value: name.toLowerCase() };
  });
}

/** A random positive serial number (16 bytes, as RFC 5280 wants at most 20). */
function serialNumber(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

async function exportKey(key: webcrypto.CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

/** The CA in `out` (ca.crt, ca.key from an earlier init), to sign client certificates with. */
async function loadCa(caCert: string, caKey: string): Promise<{ ca: x509.X509Certificate; key: webcrypto.CryptoKey }> {
  let certText: string;
  let keyText: string;
  try {
    [certText, keyText] = await Promise.all([fsp.readFile(caCert, 'utf8'), fsp.readFile(caKey, 'utf8')]);
  } catch (err) {
    throw new Error(`--client without --name signs with the CA in --out, and ${(err as NodeJS.ErrnoException).path ?? caCert} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}): run tls init --name HOST first, or give --name to make a new CA`);
  }
  try {
    const ca = new x509.X509Certificate(certText);
    const key = await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(keyText), { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    return { ca, key };
  } catch (err) {
    throw new Error(`${caCert} and ${caKey} are not a CA that tls init wrote (an ECDSA P-256 key in PKCS#8 PEM): ${(err as Error).message}`);
  }
}

export async function tlsInit(opts: TlsInitOptions): Promise<TlsInitResult> {
  const clients = opts.clients ?? [];
  checkClientNames(clients);
  const server = opts.names.length > 0 || clients.length === 0;
  const sans = server ? subjectAltNames(opts.names) : [];
  if (!Number.isInteger(opts.days) || opts.days < 1 || opts.days > CA_DAYS) throw new Error(`--days must be a whole number of days from 1 to ${CA_DAYS}, got ${opts.days}`);
  const out = path.resolve(opts.out);
  const files = {
    caCert: path.join(out, 'ca.crt'),
    caKey: path.join(out, 'ca.key'),
    cert: path.join(out, 'tls.crt'),
    key: path.join(out, 'tls.key'),
  };
  const clientFiles = clients.map((name) => ({ name, cert: path.join(out, `client-${name}.crt`), key: path.join(out, `client-${name}.key`) }));
  const toWrite = [...(server ? Object.values(files) : []), ...clientFiles.flatMap((c) => [c.cert, c.key])];
  if (!opts.force) {
    const existing: string[] = [];
    for (const f of toWrite) {
      if (await fsp.lstat(f).then(() => true, () => false)) existing.push(f);
    }
    if (existing.length) throw new Error(`refusing to overwrite ${existing.join(', ')} (give --force to replace them)`);
  }

  const now = opts.now ?? new Date();
  // A minute back: a client whose clock is slightly behind still accepts a certificate made now.
  const notBefore = new Date(now.getTime() - 60_000);
  const notAfter = new Date(now.getTime() + opts.days * DAY_MS);
  /** A client certificate: CN=name (and DNS:name when it is a DNS name), for client authentication only. */
  const issueClient = async (name: string, ca: x509.X509Certificate, caKey: webcrypto.CryptoKey): Promise<{ cert: string; key: string }> => {
    const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serialNumber(),
      subject: `CN=${name}`,
      issuer: ca.subject,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: caKey,
      signingAlgorithm: ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
        ...(DNS_NAME_RE.test(name) && !name.includes('_') ? [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name.toLowerCase() }], false)] : []),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(ca),
      ],
    });
    return { cert: cert.toString('pem') + '\n', key: await exportKey(keys.privateKey) };
  };
  if (!server) {
    const { ca, key } = await loadCa(files.caCert, files.caKey);
    const issued = await Promise.all(clientFiles.map((c) => issueClient(c.name, ca, key)));
    await fsp.mkdir(out, { recursive: true });
    for (const [i, c] of clientFiles.entries()) {
      await writeFile(out, opts.force === true, c.key, issued[i]!.key, 0o600);
      await writeFile(out, opts.force === true, c.cert, issued[i]!.cert, 0o644);
    }
    return { files: null, subjectAltNames: [], notAfter, clients: clientFiles, caCert: files.caCert };
  }
  const caKeys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=stevedore CA ${now.toISOString().slice(0, 10)} ${randomBytes(4).toString('hex')}`,
    notBefore,
    notAfter: new Date(now.getTime() + CA_DAYS * DAY_MS),
    keys: caKeys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  const cn = sans[0]!.value.replace(/[,=+<>#;"\\]/g, '');
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${cn}`,
    issuer: ca.subject,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(sans, false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca),
    ],
  });

  const issued = await Promise.all(clientFiles.map((c) => issueClient(c.name, ca, caKeys.privateKey)));
  await fsp.mkdir(out, { recursive: true });
  const write = (file: string, text: string, mode: number): Promise<void> => writeFile(out, opts.force === true, file, text, mode);
  // Keys first: were a write to fail, no certificate points at a key that is not there.
  await write(files.caKey, await exportKey(caKeys.privateKey), 0o600);
  await write(files.key, await exportKey(keys.privateKey), 0o600);
  await write(files.caCert, ca.toString('pem') + '\n', 0o644);
  await write(files.cert, cert.toString('pem') + '\n', 0o644);
  for (const [i, c] of clientFiles.entries()) {
    await write(c.key, issued[i]!.key, 0o600);
    await write(c.cert, issued[i]!.cert, 0o644);
  }
  return { files, subjectAltNames: sans.map((s) => `${s.type === 'ip' ? 'IP' : 'DNS'}:${s.value}`), notAfter, clients: clientFiles, caCert: files.caCert };
}

/**
 * Each file is created anew with O_EXCL (`wx`, which also refuses a symlink at the name) and its
 * mode set on the open descriptor before a byte is written: a key is never readable by others,
 * not even for a moment. Without `force` that is the file itself (an existing one is refused);
 * with it, a temporary file beside it, then renamed over the old name: a symlink there is
 * replaced, never followed, and an old file's looser mode is not inherited.
 */
async function writeFile(out: string, force: boolean, file: string, text: string, mode: number): Promise<void> {
  const target = force ? path.join(out, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`) : file;
  const fh = await fsp.open(target, 'wx', mode);
  try {
    try {
      // The mode given to open() is narrowed by the umask; a certificate still wants 0644.
      await fh.chmod(mode);
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (target !== file) await fsp.rename(target, file);
  } catch (err) {
    if (target !== file) await fsp.rm(target, { force: true });
    throw err;
  }
}

/** What `stevedore tls init` prints once the files are written: the config, and where clients want ca.crt. */
export function nextSteps(r: TlsInitResult, firstName: string | undefined): string {
  const host = firstName === undefined ? 'HOST' : net.isIPv6(firstName.replace(/^\[|\]$/g, '')) ? `[${firstName.replace(/^\[|\]$/g, '')}]` : firstName;
  const hp = `${host}:5000`;
  const lines: string[] = [];
  if (r.files) {
    lines.push(
      `wrote ${r.files.caCert}   the CA: give it to every client`,
      `wrote ${r.files.caKey}   the CA's key (0600): keep it off the server and secret; it signs certificates`,
      `wrote ${r.files.cert}  the server certificate for ${r.subjectAltNames.join(', ')}, valid until ${r.notAfter.toISOString()}`,
      `wrote ${r.files.key}  its key (0600)`,
    );
  }
  for (const c of r.clients) {
    lines.push(`wrote ${c.cert}  a client certificate, CN=${c.name}, valid until ${r.notAfter.toISOString()}`, `wrote ${c.key}  its key (0600): it goes to that client only`);
  }
  if (r.files) {
    lines.push(
      '',
      'Next, in stevedore.yaml:',
      '  tls:',
      `    cert: ${r.files.cert}`,
      `    key: ${r.files.key}`,
      ...(r.clients.length ? [`    clientCA: ${r.caCert}          # client certificates signed by this CA name their clients`] : []),
      '',
      `Then each client trusts ca.crt for stevedore's HOST:PORT (here ${hp}; use the port stevedore listens on):`,
      `  Docker:         /etc/docker/certs.d/${hp}/ca.crt`,
      `  podman, CRI-O:  /etc/containers/certs.d/${hp}/ca.crt   (skopeo: --src-cert-dir DIR holding ca.crt)`,
      `  containerd:     in each hosts.toml, under [host."https://${hp}"]:  ca = "/etc/containerd/certs.d/stevedore-ca.crt"`,
      `                  (stevedore containerd-config --mirror https://${hp} --ca /etc/containerd/certs.d/stevedore-ca.crt writes them)`,
      `  k3s:            /etc/rancher/k3s/registries.yaml:  configs: { "${hp}": { tls: { ca_file: /etc/rancher/k3s/stevedore-ca.crt } } }`,
    );
  }
  if (r.clients.length) {
    const c = r.clients[0]!;
    lines.push(
      '',
      `The client certificates name their clients as cn:NAME (config tls.clientCA: ${r.caCert}; auth.rules users: ["cn:${c.name}"]).`,
      `On a containerd node, copy client-${c.name}.crt and .key to /etc/containerd/certs.d/ and write the hosts.toml files with`,
      `  stevedore containerd-config --mirror https://${hp} --ca /etc/containerd/certs.d/stevedore-ca.crt \\`,
      `    --client-cert /etc/containerd/certs.d/client-${c.name}.crt --client-key /etc/containerd/certs.d/client-${c.name}.key`,
    );
  }
  lines.push('');
  return lines.join('\n');
}
