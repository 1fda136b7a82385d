/**
 * The trust material of the signature policies that cover some repositories, as files of a bundle
 * (registry/oci-bundle.ts, TRUST_DIR): `stevedore export` carries it so that the lab's operator
 * can review and install it. A bundle is untrusted input: `stevedore import` never verifies with
 * what it carries (it can only write it out, `--trust-out`).
 *
 *   stevedore/trust/verify.json                 { "policies": [ ... ] }: each policy as the config
 *                                               writes it, its files named relative to stevedore/trust/
 *   stevedore/trust/policy-<i>/key-<k>.pem      its keys (public keys only: SPKI PEM, re-encoded)
 *   stevedore/trust/policy-<i>/trusted_root.json its keyless trusted root, as configured
 *
 * `<i>` is the policy's place in the exporter's verify.policies.
 */
import { createHash, createPublicKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { VerifyConfig } from '../config/verify-schema.js';
import { compilePattern } from '../oci/repository-pattern.js';
import { TRUST_DIR, type BundleFile } from '../registry/oci-bundle.js';

export interface TrustFile extends BundleFile {
  /** The file it was read from (or what it was made of). */
  source: string;
  /** `sha256:<hex>` of its bytes: what an operator compares on both sides of the gap. */
  sha256: string;
}

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** The policies (first match, as serving decides; `off` ones left out) covering these canonical repository names, as bundle files. */
export async function trustFiles(verify: VerifyConfig, repositories: Iterable<string>): Promise<TrustFile[]> {
  const patterns = verify.policies.map((p) => compilePattern(p.repository));
  const chosen = new Set<number>();
  for (const repository of repositories) {
    const i = patterns.findIndex((re) => re.test(repository));
    if (i >= 0 && verify.policies[i]!.mode !== 'off') chosen.add(i);
  }
  const files: TrustFile[] = [];
  const policies: unknown[] = [];
  for (const i of [...chosen].sort((a, b) => a - b)) {
    const p = verify.policies[i]!;
    const keys: string[] = [];
    for (const [k, file] of p.keys.entries()) {
      // The public key alone, whatever the file holds: a private key never leaves in a bundle.
      const data = Buffer.from(createPublicKey(await readFile(file)).export({ type: 'spki', format: 'pem' }).toString());
      const rel = `policy-${i}/key-${k}.pem`;
      files.push({ name: `${TRUST_DIR}/${rel}`, data, source: file, sha256: sha256(data) });
      keys.push(rel);
    }
    let keyless: unknown = null;
    if (p.keyless) {
      const data = await readFile(p.keyless.trustedRoot);
      const rel = `policy-${i}/trusted_root.json`;
      files.push({ name: `${TRUST_DIR}/${rel}`, data, source: p.keyless.trustedRoot, sha256: sha256(data) });
      keyless = { trustedRoot: rel, identities: p.keyless.identities };
    }
    policies.push({ repository: p.repository, mode: p.mode, keys, keyless });
  }
  if (policies.length === 0) return [];
  const doc = Buffer.from(`${JSON.stringify({ policies }, null, 2)}\n`);
  return [{ name: `${TRUST_DIR}/verify.json`, data: doc, source: 'verify.policies', sha256: sha256(doc) }, ...files];
}
