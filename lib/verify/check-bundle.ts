/**
 * One sigstore bundle (what `@sigstore/oci` attaches and cosign 3 pushes as an OCI referrer),
 * checked against one policy and one manifest digest with `@sigstore/verify`:
 *   - what is signed is this manifest: a DSSE in-toto statement naming its digest among its
 *     subjects, or a message signature over its digest;
 *   - the signature verifies, with one of the policy's keys (key-based bundles; their log entries
 *     checked against the trusted root when the policy has one), or with a Fulcio certificate
 *     chaining to the trusted root, with its transparency-log inclusion and SCT checked offline;
 *   - a certificate's identity and issuer are among the policy's identities.
 */
import { X509Certificate, type KeyObject } from 'node:crypto';
import { bundleFromJSON, type Bundle, type TransparencyLogEntry } from '@sigstore/bundle';
import { TrustedRoot } from '@sigstore/protobuf-specs';
import { toSignedEntity, toTrustMaterial, Verifier, type SignedEntity, type TrustMaterial } from '@sigstore/verify';
import type { Digest } from '../oci/digest.js';
import type { SignaturePolicy } from './policies.js';

export type SignatureCheck = { ok: true; signer: string } | { ok: false; reason: string };

/** What an error from @sigstore/verify says, in one line, with what caused it. */
function errorText(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: unknown };
  const text = e.code ? `${e.code}: ${e.message ?? ''}` : (e.message ?? String(err));
  return e.cause !== undefined && e.cause !== null ? `${text} (${errorText(e.cause)})` : text;
}

/** The innermost message of an error and its causes. */
function rootMessage(err: unknown): string {
  let e = err as { message?: string; cause?: unknown };
  while (e.cause !== undefined && e.cause !== null) e = e.cause as { message?: string; cause?: unknown };
  return e.message ?? String(e);
}

function iso(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * What a keyless signature's failure to verify means, in words naming the part that failed: the
 * certificate not valid when the log recorded the signature (expired, or not yet valid), the log
 * entry recording another signature, the log entry not one of the trusted root's logs, or else
 * @sigstore/verify's own words.
 */
function keylessFailure(err: unknown, leaf: Buffer | null, tlogEntries: readonly TransparencyLogEntry[]): string {
  const code = (err as { code?: string }).code ?? '';
  if (code === 'CERTIFICATE_ERROR' && /not valid or expired/.test(rootMessage(err)) && leaf) {
    let cert: X509Certificate | null = null;
    try {
      cert = new X509Certificate(leaf);
    } catch {
      cert = null;
    }
    const logged = tlogEntries[0] ? new Date(Number(tlogEntries[0].integratedTime) * 1000) : null;
    if (cert && logged) {
      const from = new Date(cert.validFrom);
      const to = new Date(cert.validTo);
      const when = `valid from ${iso(from)} until ${iso(to)}, the transparency log recorded the signature at ${iso(logged)}`;
      if (logged > to) return `expired certificate: it was not valid when the signature was made (${when})`;
      if (logged < from) return `certificate not yet valid when the signature was made (${when})`;
    }
    return `the certificate was not valid when the signature was made (${errorText(err)})`;
  }
  if (code === 'TLOG_BODY_ERROR') {
    return `keyless signature does not verify: its transparency-log entry records another signature or digest, so the signature or the entry was altered (${errorText(err)})`;
  }
  if (code.startsWith('TLOG_')) {
    return `its transparency-log entry does not verify against the trusted root's logs: not recorded by a log the policy trusts, or altered (${errorText(err)})`;
  }
  return `keyless signature does not verify against the trusted root (${errorText(err)})`;
}

/**
 * A keyless (Fulcio certificate) signature, checked with @sigstore/verify against the policy's
 * trusted root and identities. `leaf`: the certificate's DER bytes (for the reason when it was not
 * valid at signing time). Shared by sigstore bundles and keyless cosign `.sig` layers.
 */
export function checkKeyless(entity: SignedEntity, leaf: Buffer | null, tlogEntries: readonly TransparencyLogEntry[], policy: SignaturePolicy): SignatureCheck {
  if (!policy.keyless) return { ok: false, reason: 'a keyless (certificate) signature, and the policy has no keyless trusted root' };
  // Without a log entry nothing says when the signature was made, so nothing says the short-lived
  // certificate was valid then: @sigstore/verify refuses it too (a timestamp is required); this says why.
  if (tlogEntries.length === 0) return { ok: false, reason: 'log entry missing: a keyless signature without its transparency-log (Rekor) entry' };
  let identity: { subjectAlternativeName?: string; extensions?: { issuer?: string } } | undefined;
  try {
    identity = new Verifier(policy.keyless.trust).verify(entity).identity;
  } catch (err) {
    return { ok: false, reason: keylessFailure(err, leaf, tlogEntries) };
  }
  const san = identity?.subjectAlternativeName ?? '';
  const issuer = identity?.extensions?.issuer ?? '';
  if (policy.keyless.identities.some((id) => id.subject(san) && id.issuer(issuer))) return { ok: true, signer: `${san} (issuer ${issuer})` };
  return {
    ok: false,
    reason: `certificate identity ${JSON.stringify(san)} issued by ${JSON.stringify(issuer)} does not match the policy's identities (${policy.keyless.identities.map((i) => i.text).join('; ')})`,
  };
}

/** Which digests (hex, sha256) a bundle says it signs; null when it signs something else than an image digest. */
function signedDigests(bundle: Bundle): { digests: string[] } | { problem: string } {
  const content = bundle.content;
  if (content.$case === 'dsseEnvelope') {
    const env = content.dsseEnvelope;
    if (env.payloadType !== 'application/vnd.in-toto+json') return { problem: `a DSSE envelope of type ${env.payloadType}, not an in-toto statement` };
    let statement: unknown;
    try {
      statement = JSON.parse(env.payload.toString('utf8'));
    } catch {
      return { problem: 'a DSSE payload that is not JSON' };
    }
    const subjects = (statement as { subject?: unknown }).subject;
    if (!Array.isArray(subjects)) return { problem: 'an in-toto statement without subjects' };
    const digests = subjects
      .map((s) => (s as { digest?: { sha256?: unknown } } | null)?.digest?.sha256)
      .filter((x): x is string => typeof x === 'string');
    return { digests };
  }
  const md = content.messageSignature.messageDigest;
  if (!md) return { problem: 'a message signature without its digest' };
  return { digests: [md.digest.toString('hex')] };
}

export function checkBundle(doc: unknown, subject: Digest, manifestBytes: Buffer, policy: SignaturePolicy): SignatureCheck {
  let bundle: Bundle;
  try {
    bundle = bundleFromJSON(doc);
  } catch (err) {
    return { ok: false, reason: `a sigstore bundle that does not parse (${errorText(err)})` };
  }
  const signed = signedDigests(bundle);
  if ('problem' in signed) return { ok: false, reason: signed.problem };
  if (subject.algorithm !== 'sha256' || !signed.digests.includes(subject.hex)) {
    return { ok: false, reason: `signature for another digest (${signed.digests.map((h) => `sha256:${h}`).join(', ') || 'none named'})` };
  }
  let entity: SignedEntity;
  try {
    // A message signature is checked over the manifest's bytes (whose sha256 is the digest above).
    entity = bundle.content.$case === 'dsseEnvelope' ? toSignedEntity(bundle) : toSignedEntity(bundle, manifestBytes);
  } catch (err) {
    return { ok: false, reason: `a sigstore bundle that cannot be checked (${errorText(err)})` };
  }
  const material = bundle.verificationMaterial.content;
  if (material.$case === 'publicKey') {
    if (policy.keys.length === 0) return { ok: false, reason: 'signed with a key, and the policy trusts no key' };
    // Log entries are checked when the policy has a trusted root; without one only the key counts.
    const keyed: SignedEntity = policy.trust ? entity : { ...entity, tlogEntries: [], timestamps: [] };
    const failures: string[] = [];
    for (const k of policy.keys) {
      try {
        new Verifier(keyTrust(k.key, policy.trust), { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 }).verify(keyed);
        return { ok: true, signer: `key ${k.file}` };
      } catch (err) {
        failures.push(errorText(err));
      }
    }
    if (failures.every((f) => f.startsWith('SIGNATURE_ERROR'))) return { ok: false, reason: "not signed by any of the policy's keys (signed by another key, or altered after signing)" };
    return { ok: false, reason: `a key-based bundle that does not verify (${[...new Set(failures)].join('; ')})` };
  }
  const vm = bundle.verificationMaterial;
  const leaf = material.$case === 'x509CertificateChain' ? material.x509CertificateChain.certificates[0]?.rawBytes : material.certificate.rawBytes;
  return checkKeyless(entity, leaf ? Buffer.from(leaf) : null, vm.tlogEntries, policy);
}

const NO_TRUST: TrustedRoot = TrustedRoot.fromJSON({ mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1', tlogs: [], certificateAuthorities: [], ctlogs: [], timestampAuthorities: [] });

/** Trust material that trusts exactly `key`, whatever hint a bundle gives, and (with `root`) the root's logs. */
export function keyTrust(key: KeyObject, root: TrustMaterial | null): TrustMaterial {
  const base = root ?? toTrustMaterial(NO_TRUST);
  return { ...base, publicKey: () => ({ publicKey: key, validFor: () => true }) };
}
