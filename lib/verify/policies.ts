/**
 * The signature policies of config `verify.policies`, loaded: key files read and parsed, the
 * trusted root read and turned into sigstore trust material, identities compiled. The first
 * policy whose repository pattern matches a canonical repository name decides (as the access
 * rules match). Each policy carries a version: a hash of everything it trusts (pattern, mode,
 * the keys' bytes, the trusted root's bytes, the identities), so a verdict reached under one
 * version is never used under another (a reload that changes anything is evaluated again).
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { TrustMaterial } from '@sigstore/verify';
import { ConfigError } from '../config/config.js';
import type { VerifyConfig, VerifyPolicyConfig } from '../config/verify-schema.js';
import { compilePattern } from '../oci/repository-pattern.js';

export type PolicyMode = 'require' | 'warn' | 'off';

export interface PolicyKey {
  /** The file it was read from (named in messages). */
  file: string;
  key: KeyObject;
}

export interface Identity {
  subject: (san: string) => boolean;
  issuer: (issuer: string) => boolean;
  /** How the policy writes it, for messages. */
  text: string;
}

export interface SignaturePolicy {
  /** Its place in verify.policies (0-based). */
  index: number;
  repository: string;
  mode: PolicyMode;
  keys: readonly PolicyKey[];
  /** Keyless: the trust material of the trusted root and the identities allowed; null: keys only. */
  keyless: { trust: TrustMaterial; identities: readonly Identity[] } | null;
  /** The trusted root's material, also used to check key-based bundles' log entries; null: none. */
  trust: TrustMaterial | null;
  /** A hash of everything this policy trusts: verdicts are kept per version. */
  version: string;
  /** `verify.policies[<index>] (<repository>)`: how messages name it. */
  name: string;
}

/** A regular expression matched against a whole string. */
function whole(source: string): (s: string) => boolean {
  const re = new RegExp(`^(?:${source})$`, 'u');
  return (s) => re.test(s);
}

function exactly(value: string): (s: string) => boolean {
  return (s) => s === value;
}

export class SignaturePolicies {
  private constructor(
    readonly policies: readonly SignaturePolicy[],
    private readonly patterns: readonly RegExp[],
  ) {}

  /** No policy: nothing is checked. */
  static none(): SignaturePolicies {
    return new SignaturePolicies([], []);
  }

  /** Reads every file the policies name; every problem at once, as a ConfigError naming the key. */
  static async load(config: VerifyConfig): Promise<SignaturePolicies> {
    const problems: string[] = [];
    const policies: SignaturePolicy[] = [];
    for (const [index, p] of config.policies.entries()) {
      const policy = await loadPolicy(index, p, problems);
      if (policy) policies.push(policy);
    }
    if (problems.length) throw new ConfigError(problems, 'verify');
    return new SignaturePolicies(
      policies,
      policies.map((p) => compilePattern(p.repository)),
    );
  }

  /** The policy deciding for a canonical repository name, or null (not checked) when none matches or it is off. */
  match(repository: string): SignaturePolicy | null {
    const i = this.patterns.findIndex((re) => re.test(repository));
    if (i < 0) return null;
    const p = this.policies[i]!;
    return p.mode === 'off' ? null : p;
  }
}

async function loadPolicy(index: number, p: VerifyPolicyConfig, problems: string[]): Promise<SignaturePolicy | null> {
  const at = `verify.policies[${index}]`;
  const hash = createHash('sha256').update(JSON.stringify({ repository: p.repository, mode: p.mode, identities: p.keyless?.identities ?? [] }));
  const keys: PolicyKey[] = [];
  for (const [k, file] of p.keys.entries()) {
    let pem: Buffer;
    try {
      pem = await readFile(file);
    } catch (err) {
      problems.push(`${at}.keys[${k}]: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      continue;
    }
    try {
      const key = createPublicKey(pem);
      const type = key.asymmetricKeyType;
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (!(type === 'rsa' || type === 'ed25519' || (type === 'ec' && curve === 'prime256v1'))) {
        problems.push(`${at}.keys[${k}]: ${file} is a ${type}${curve ? ` ${curve}` : ''} key: use ECDSA P-256, RSA or Ed25519`);
        continue;
      }
      keys.push({ file, key });
      hash.update(key.export({ type: 'spki', format: 'der' }));
    } catch (err) {
      problems.push(`${at}.keys[${k}]: ${file} is not a PEM public key (${(err as Error).message})`);
    }
  }
  let trust: TrustMaterial | null = null;
  if (p.keyless) {
    const file = p.keyless.trustedRoot;
    try {
      const bytes = await readFile(file);
      hash.update(bytes);
      // sigstore's libraries load only for a keyless policy (or a check: signature-gate.ts).
      const [{ TrustedRoot }, { toTrustMaterial }] = await Promise.all([import('@sigstore/protobuf-specs'), import('@sigstore/verify')]);
      trust = toTrustMaterial(TrustedRoot.fromJSON(JSON.parse(bytes.toString('utf8'))));
      if (trust.certificateAuthorities.length === 0) problems.push(`${at}.keyless.trustedRoot: ${file} names no certificate authority`);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      problems.push(`${at}.keyless.trustedRoot: ${code ? `cannot read ${file}: ${code}` : `${file} is not a sigstore trusted_root.json (${(err as Error).message})`}`);
    }
  }
  if (problems.length) return null;
  const identities: Identity[] = (p.keyless?.identities ?? []).map((id) => ({
    subject: id.subject !== undefined ? exactly(id.subject) : whole(id.subjectRegExp!),
    issuer: id.issuer !== undefined ? exactly(id.issuer) : whole(id.issuerRegExp!),
    text: `${id.subject ?? `/${id.subjectRegExp}/`} from ${id.issuer ?? `/${id.issuerRegExp}/`}`,
  }));
  return {
    index,
    repository: p.repository,
    mode: p.mode,
    keys,
    keyless: trust ? { trust, identities } : null,
    trust,
    version: hash.digest('hex').slice(0, 16),
    name: `${at} (${p.repository})`,
  };
}
