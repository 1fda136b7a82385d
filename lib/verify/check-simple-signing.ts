/**
 * The legacy cosign signature (cosign's specs/SIGNATURE_SPEC.md): an image manifest tagged
 * `sha256-<hex>.sig` whose layers are simple-signing payloads
 * (`application/vnd.dev.cosign.simplesigning.v1+json`), each signed by the base64 signature in
 * its `dev.cosignproject.cosign/signature` annotation. A layer counts when its signature verifies
 * over the payload's bytes with one of the policy's keys (Node's crypto: ECDSA P-256 with SHA-256,
 * RSA PKCS#1 v1.5 or PSS with SHA-256, Ed25519) AND the payload's
 * `critical.image.docker-manifest-digest` is the manifest's digest. Keyless `.sig` signatures
 * (a certificate annotation) are not verified here: they are refused with that reason.
 */
import { verify as cryptoVerify, constants, type KeyObject } from 'node:crypto';
import type { Digest } from '../oci/digest.js';
import type { SignatureCheck } from './check-bundle.js';
import type { SignaturePolicy } from './policies.js';

export const SIMPLE_SIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const CERTIFICATE_ANNOTATION = 'dev.sigstore.cosign/certificate';
const COSIGN_TYPE = 'cosign container image signature';

/** One signed layer of a `.sig` manifest: its payload's descriptor and the signature. */
export interface SimpleSignature {
  payloadDigest: string;
  size: number;
  signature: string;
  keyless: boolean;
}

/** The signed layers of a `.sig` manifest (the others are ignored). */
export function simpleSignatures(manifest: unknown): SimpleSignature[] {
  const layers = (manifest as { layers?: unknown } | null)?.layers;
  if (!Array.isArray(layers)) return [];
  const out: SimpleSignature[] = [];
  for (const l of layers as Array<Record<string, unknown> | null>) {
    if (!l || l.mediaType !== SIMPLE_SIGNING || typeof l.digest !== 'string' || typeof l.size !== 'number') continue;
    const ann = (l.annotations ?? {}) as Record<string, unknown>;
    const signature = ann[SIGNATURE_ANNOTATION];
    if (typeof signature !== 'string') continue;
    out.push({ payloadDigest: l.digest, size: l.size, signature, keyless: typeof ann[CERTIFICATE_ANNOTATION] === 'string' });
  }
  return out;
}

function verifiesWith(key: KeyObject, payload: Buffer, signature: Buffer): boolean {
  try {
    switch (key.asymmetricKeyType) {
      case 'ed25519':
        return cryptoVerify(null, payload, key, signature);
      case 'rsa':
        return (
          cryptoVerify('sha256', payload, { key, padding: constants.RSA_PKCS1_PADDING }, signature) ||
          cryptoVerify('sha256', payload, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO }, signature)
        );
      default:
        return cryptoVerify('sha256', payload, { key, dsaEncoding: 'der' }, signature);
    }
  } catch {
    return false;
  }
}

/** The digest a simple-signing payload names (the key's case varies between writers: the spec's `Docker-manifest-digest`, cosign's `docker-manifest-digest`). */
function namedDigest(payload: Buffer): { digest: string; type: unknown } | null {
  let doc: unknown;
  try {
    doc = JSON.parse(payload.toString('utf8'));
  } catch {
    return null;
  }
  const critical = (doc as { critical?: Record<string, unknown> } | null)?.critical;
  const image = critical?.image as Record<string, unknown> | undefined;
  if (!image) return null;
  const key = Object.keys(image).find((k) => k.toLowerCase() === 'docker-manifest-digest');
  const digest = key !== undefined ? image[key] : undefined;
  return typeof digest === 'string' ? { digest, type: critical!.type } : null;
}

export function checkSimpleSigning(sig: SimpleSignature, payload: Buffer, subject: Digest, policy: SignaturePolicy): SignatureCheck {
  if (sig.keyless) return { ok: false, reason: 'a keyless cosign .sig signature (certificate annotation): not verified by stevedore yet, publish a sigstore bundle (cosign 3) instead' };
  if (policy.keys.length === 0) return { ok: false, reason: 'a key-based cosign .sig signature, and the policy trusts no key' };
  const signature = Buffer.from(sig.signature, 'base64');
  const key = policy.keys.find((k) => verifiesWith(k.key, payload, signature));
  if (!key) return { ok: false, reason: "not signed by any of the policy's keys (signed by another key, or altered after signing)" };
  const named = namedDigest(payload);
  if (!named) return { ok: false, reason: 'a signed payload that names no critical.image.docker-manifest-digest' };
  if (named.type !== COSIGN_TYPE) return { ok: false, reason: `a signed payload of type ${JSON.stringify(named.type)}, not ${JSON.stringify(COSIGN_TYPE)}` };
  if (named.digest !== subject.value) return { ok: false, reason: `signature for another digest (${named.digest})` };
  return { ok: true, signer: `key ${key.file}` };
}
