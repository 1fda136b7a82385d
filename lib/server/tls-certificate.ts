/**
 * The server's own certificate (config `tls`): two PEM files, the certificate (chain) and its key.
 * Read and checked at start-up, where a bad file is a ConfigError naming its key (`tls.cert: ...`);
 * then read again every `reloadInterval`. Contents that changed and make a good pair become the
 * server's secure context with `server.setSecureContext()`: new connections get the new
 * certificate, connections already open keep the one they were made with (nothing is cut). A bad
 * pair at that moment (a half-written file, a certificate whose key has not arrived yet) is logged
 * once and the pair loaded before is kept; the next look tries again.
 *
 * Why read the files on a timer rather than fs.watch:
 *   - cert-manager and the kubelet replace a Secret volume's files by swapping a `..data` symlink
 *     in the directory: a watch on the file keeps watching the old inode and never fires again,
 *     and a directory watch sees a burst of renames that must be debounced anyway;
 *   - inotify does not work on many network and FUSE filesystems (NFS, some CSI drivers), and a
 *     watch can miss events under load (queue overflow): a missed rotation would go unseen for ever;
 *   - comparing contents (not mtime) also catches a copy that keeps mtime, and a symlink swap
 *     whose new target is older than the old one.
 * Two small files read every few seconds cost nothing, and every way of replacing them is seen.
 *
 * The client CA bundle (tls.clientCA), when configured, is read and swapped with them: a CA
 * rotation (a bundle holding the old and the new CA, then the new alone) needs no restart either.
 */
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import tls from 'node:tls';
import type { Logger } from 'pino';

export interface TlsFiles {
  cert: string;
  key: string;
  /** The CA bundle client certificates must chain to (tls.clientCA); absent or null: none asked for. */
  clientCA?: string | null;
}

type TlsKey = 'tls.cert' | 'tls.key' | 'tls.clientCA';

/** What the log says about a certificate: enough to tell which one is served. */
export interface CertificateInfo {
  subject: string;
  subjectAltName: string | null;
  issuer: string;
  serialNumber: string;
  fingerprint256: string;
  validFrom: string;
  validTo: string;
}

/** A checked certificate and key, as read from the files, and the client CA bundle when there is one. */
export interface TlsPair {
  cert: Buffer;
  key: Buffer;
  info: CertificateInfo;
  /** tls.clientCA's contents; null when not configured. */
  clientCA: Buffer | null;
  /** The subjects of the client CA bundle's certificates (for the log). */
  clientCAs: string[];
}

/** A file that cannot be used, with the config key it came from (`tls.cert` or `tls.key`). */
export class TlsFileError extends Error {
  readonly key: TlsKey;
  constructor(key: TlsKey, message: string) {
    super(`${key}: ${message}`);
    this.name = 'TlsFileError';
    this.key = key;
  }
}

async function readTlsFile(key: TlsKey, file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new TlsFileError(key, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/** Reads the files (and the client CA bundle) and checks them; throws the TlsFileErrors found (several unreadable: each). */
export async function readTlsPair(files: TlsFiles): Promise<TlsPair> {
  const reads = [readTlsFile('tls.cert', files.cert), readTlsFile('tls.key', files.key), files.clientCA ? readTlsFile('tls.clientCA', files.clientCA) : Promise.resolve(null)];
  const [cert, key, ca] = await Promise.allSettled(reads);
  const failed = [cert, key, ca].filter((r): r is PromiseRejectedResult => r!.status === 'rejected').map((r) => r.reason as Error);
  if (failed.length > 1) throw new AggregateError(failed, failed.map((e) => e.message).join('; '));
  if (failed.length === 1) throw failed[0]!;
  const value = (r: PromiseSettledResult<Buffer | null> | undefined): Buffer | null => (r as PromiseFulfilledResult<Buffer | null>).value;
  return checkTlsPair(value(cert)!, value(key)!, files, value(ca));
}

const PEM_CERTIFICATE_BLOCK_RE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** The subjects of a PEM CA bundle's certificates; throws a TlsFileError when it holds none, or one that does not parse. */
function checkClientCA(ca: Buffer, file: string): string[] {
  const blocks = ca.toString('latin1').match(PEM_CERTIFICATE_BLOCK_RE) ?? [];
  if (blocks.length === 0) throw new TlsFileError('tls.clientCA', `${file} holds no PEM certificate (no "${PEM_CERTIFICATE}" ... "-----END CERTIFICATE-----" block)`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block).subject.replace(/\n/g, ', ');
    } catch (err) {
      throw new TlsFileError('tls.clientCA', `certificate ${i + 1} of ${file} does not parse: ${(err as Error).message}`);
    }
  });
}

const PEM_CERTIFICATE = '-----BEGIN CERTIFICATE-----';
const PEM_KEY_RE = /-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----/;

/** Checks that `cert` is a PEM certificate, `key` a PEM private key, that they belong together, and the client CA bundle. */
export function checkTlsPair(cert: Buffer, key: Buffer, files: TlsFiles, clientCA: Buffer | null = null): TlsPair {
  if (!cert.toString('latin1').includes(PEM_CERTIFICATE)) {
    throw new TlsFileError('tls.cert', `${files.cert} is not a PEM certificate (no "${PEM_CERTIFICATE}" line)`);
  }
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new TlsFileError('tls.cert', `${files.cert} holds no valid PEM certificate: ${(err as Error).message}`);
  }
  if (!PEM_KEY_RE.test(key.toString('latin1'))) {
    throw new TlsFileError('tls.key', `${files.key} is not a PEM private key (no "-----BEGIN PRIVATE KEY-----" line)`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key, format: 'pem' });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = /passphrase/i.test(e.message) ? 'it is encrypted (give an unencrypted key)' : e.message;
    throw new TlsFileError('tls.key', `${files.key} holds no usable private key: ${why}`);
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new TlsFileError('tls.key', `${files.key} does not match the certificate in tls.cert (${files.cert})`);
  }
  try {
    tls.createSecureContext({ cert, key });
  } catch (err) {
    throw new TlsFileError('tls.cert', `${files.cert} and ${files.key} cannot serve TLS: ${(err as Error).message}`);
  }
  const clientCAs = clientCA ? checkClientCA(clientCA, files.clientCA ?? 'tls.clientCA') : [];
  if (clientCA) {
    try {
      tls.createSecureContext({ cert, key, ca: clientCA });
    } catch (err) {
      throw new TlsFileError('tls.clientCA', `${files.clientCA} cannot be used to verify clients: ${(err as Error).message}`);
    }
  }
  return {
    cert,
    key,
    clientCA,
    clientCAs,
    info: {
      subject: x509.subject.replace(/\n/g, ', '),
      subjectAltName: x509.subjectAltName ?? null,
      issuer: x509.issuer.replace(/\n/g, ', '),
      serialNumber: x509.serialNumber,
      fingerprint256: x509.fingerprint256,
      validFrom: new Date(x509.validFrom).toISOString(),
      validTo: new Date(x509.validTo).toISOString(),
    },
  };
}

/**
 * The secure context of a pair: the certificate and key, and the client CA bundle that client
 * certificates are verified against (the server asks for one only when it has a bundle).
 */
export function secureContextOptions(pair: TlsPair): tls.SecureContextOptions {
  return { cert: pair.cert, key: pair.key, ...(pair.clientCA ? { ca: pair.clientCA } : {}) };
}

/** The part of an https.Server the reloader uses. */
export interface SecureContextTarget {
  setSecureContext(options: tls.SecureContextOptions): void;
}

/** Warns about a certificate that is expired or not valid yet (served anyway: the operator decides). */
export function warnIfOutOfDate(pair: TlsPair, log: Logger, now = Date.now()): void {
  const { validFrom, validTo } = pair.info;
  if (Date.parse(validTo) < now) log.warn({ tls: pair.info }, `the TLS certificate expired on ${validTo}: clients will refuse it`);
  else if (Date.parse(validFrom) > now) log.warn({ tls: pair.info }, `the TLS certificate is not valid before ${validFrom}: clients will refuse it until then`);
}

/**
 * Reads the files every `intervalMs` and gives the server a pair whose contents changed, once it
 * checks out. `check()` is the one look (the timer calls it; tests may too).
 */
export class CertificateReloader {
  private current: TlsPair;
  private timer: NodeJS.Timeout | null = null;
  private checking: Promise<void> | null = null;
  /** The problem last logged: the same one is not logged again on every look. */
  private lastProblem: string | null = null;

  constructor(
    private readonly server: SecureContextTarget,
    private readonly files: TlsFiles,
    initial: TlsPair,
    private readonly log: Logger,
    private readonly intervalMs: number,
  ) {
    this.current = initial;
  }

  /** The certificate served to new connections. */
  get info(): CertificateInfo {
    return this.current.info;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.check(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One look at the files; never rejects. */
  check(): Promise<void> {
    this.checking ??= this.look().finally(() => {
      this.checking = null;
    });
    return this.checking;
  }

  private async look(): Promise<void> {
    let cert: Buffer;
    let key: Buffer;
    let clientCA: Buffer | null;
    try {
      [cert, key, clientCA] = await Promise.all([
        readTlsFile('tls.cert', this.files.cert),
        readTlsFile('tls.key', this.files.key),
        this.files.clientCA ? readTlsFile('tls.clientCA', this.files.clientCA) : Promise.resolve(null),
      ]);
    } catch (err) {
      this.problem((err as Error).message);
      return;
    }
    const sameCA = clientCA === null ? this.current.clientCA === null : this.current.clientCA !== null && clientCA.equals(this.current.clientCA);
    if (cert.equals(this.current.cert) && key.equals(this.current.key) && sameCA) {
      this.lastProblem = null;
      return;
    }
    let pair: TlsPair;
    try {
      pair = checkTlsPair(cert, key, this.files, clientCA);
      this.server.setSecureContext(secureContextOptions(pair));
    } catch (err) {
      this.problem((err as Error).message);
      return;
    }
    const before = this.current.info;
    this.current = pair;
    this.lastProblem = null;
    this.log.info(
      { tls: pair.info, replaced: { serialNumber: before.serialNumber, fingerprint256: before.fingerprint256 }, ...(pair.clientCA ? { clientCAs: pair.clientCAs } : {}) },
      'TLS certificate reloaded: new connections get it',
    );
    warnIfOutOfDate(pair, this.log);
  }

  private problem(message: string): void {
    if (message === this.lastProblem) return;
    this.lastProblem = message;
    this.log.error({ problem: message, serving: { serialNumber: this.current.info.serialNumber, validTo: this.current.info.validTo } }, `TLS certificate not reloaded, keeping the one loaded before: ${message}`);
  }
}
