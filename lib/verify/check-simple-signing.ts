/**
 * The legacy cosign signature (cosign's specs/SIGNATURE_SPEC.md): an image manifest tagged
 * `sha256-<hex>.sig` whose layers are simple-signing payloads
 * (`application/vnd.dev.cosign.simplesigning.v1+json`), each signed by the base64 signature in
 * its `dev.cosignproject.cosign/signature` annotation. A layer counts when its signature verifies
 * over the payload's bytes with one of the policy's keys (Node's crypto: ECDSA P-256 with SHA-256,
 * RSA PKCS#1 v1.5 or PSS with SHA-256, Ed25519) AND the payload's
 * `critical.image.docker-manifest-digest` is the manifest's digest.
 *
 * A keyless layer (cosign signed it with a Fulcio certificate) carries, beside the signature, the
 * certificate (`dev.sigstore.cosign/certificate`, PEM), its chain (`dev.sigstore.cosign/chain`)
 * and the Rekor bundle (`dev.sigstore.cosign/bundle`: the log entry's body, integrated time, index
 * and log id, and the log's signed entry timestamp over them). Those are exactly the parts of a
 * sigstore bundle v0.1 with a message signature over the payload, so they are put together as one
 * and verified by the same code as bundles (check-bundle.ts, checkKeyless: the certificate chains
 * to the trusted root's CA and was valid when the log recorded the signature, its SCT, the SET of a
 * log the root trusts, the log entry's body naming this signature and payload digest, the
 * signature over the payload, the identity). The chain annotation is not trusted: the trusted
 * root's chain is what counts. In addition the log entry must name this certificate (cosign's own
 * check). A keyless layer without its Rekor bundle is refused (log entry missing).
 */
import { createHash, verify as cryptoVerify, constants, X509Certificate, type KeyObject } from 'node:crypto';
import { bundleFromJSON, type Bundle } from '@sigstore/bundle';
import { toSignedEntity, type SignedEntity } from '@sigstore/verify';
import type { Digest } from '../oci/digest.js';
import { checkKeyless, type SignatureCheck } from './check-bundle.js';
import type { SignaturePolicy } from './policies.js';
import { CERTIFICATE_ANNOTATION, REKOR_BUNDLE_ANNOTATION, type SimpleSignature } from './cosign-signatures.js';

const COSIGN_TYPE = 'cosign container image signature';

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

/** cosign's Rekor bundle annotation: `{"SignedEntryTimestamp", "Payload": {"body", "integratedTime", "logIndex", "logID"}}`. */
interface RekorBundle {
  SignedEntryTimestamp: string;
  Payload: { body: string; integratedTime: number; logIndex: number; logID: string };
}

function parseRekorBundle(text: string): RekorBundle | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return null;
  }
  const b = doc as Partial<RekorBundle> | null;
  const p = b?.Payload;
  if (!b || typeof b.SignedEntryTimestamp !== 'string' || !p || typeof p.body !== 'string' || typeof p.logID !== 'string' || !/^[0-9a-f]{64}$/.test(p.logID)) return null;
  if (!Number.isSafeInteger(p.integratedTime) || !Number.isSafeInteger(p.logIndex)) return null;
  return b as RekorBundle;
}

/** The DER bytes of the first certificate of a PEM text, or null. */
function certificateDer(pem: string): Buffer | null {
  try {
    return new X509Certificate(pem).raw;
  } catch {
    return null;
  }
}

/** The certificate a hashedrekord log entry's body names (`spec.signature.publicKey.content`: base64 of its PEM), or null. */
function loggedCertificate(body: Buffer): Buffer | null {
  try {
    const doc = JSON.parse(body.toString('utf8')) as { spec?: { signature?: { publicKey?: { content?: unknown } } } };
    const content = doc.spec?.signature?.publicKey?.content;
    return typeof content === 'string' ? certificateDer(Buffer.from(content, 'base64').toString('utf8')) : null;
  } catch {
    return null;
  }
}

/** A keyless `.sig` layer: its annotations as a sigstore bundle v0.1, verified as bundles are. */
function checkKeylessSig(keyless: NonNullable<SimpleSignature['keyless']>, signature: string, payload: Buffer, policy: SignaturePolicy): SignatureCheck {
  if (!policy.keyless) return { ok: false, reason: 'a keyless cosign .sig signature (certificate annotation), and the policy has no keyless trusted root' };
  const leaf = certificateDer(keyless.certificate);
  if (!leaf) return { ok: false, reason: `a keyless cosign .sig whose ${CERTIFICATE_ANNOTATION} annotation is not a PEM certificate` };
  if (keyless.rekorBundle === null) return { ok: false, reason: `log entry missing: a keyless cosign .sig without its Rekor bundle (${REKOR_BUNDLE_ANNOTATION} annotation)` };
  const rekor = parseRekorBundle(keyless.rekorBundle);
  if (!rekor) return { ok: false, reason: `a keyless cosign .sig whose ${REKOR_BUNDLE_ANNOTATION} annotation is not a Rekor bundle` };
  const body = Buffer.from(rekor.Payload.body, 'base64');
  let kind: unknown;
  let apiVersion: unknown;
  try {
    ({ kind, apiVersion } = JSON.parse(body.toString('utf8')) as { kind?: unknown; apiVersion?: unknown });
  } catch {
    return { ok: false, reason: 'a keyless cosign .sig whose Rekor entry body is not JSON' };
  }
  let bundle: Bundle;
  try {
    bundle = bundleFromJSON({
      mediaType: 'application/vnd.dev.sigstore.bundle+json;version=0.1',
      verificationMaterial: {
        x509CertificateChain: { certificates: [{ rawBytes: leaf.toString('base64') }] },
        tlogEntries: [
          {
            logIndex: String(rekor.Payload.logIndex),
            logId: { keyId: Buffer.from(rekor.Payload.logID, 'hex').toString('base64') },
            kindVersion: { kind: String(kind), version: String(apiVersion) },
            integratedTime: String(rekor.Payload.integratedTime),
            inclusionPromise: { signedEntryTimestamp: rekor.SignedEntryTimestamp },
            canonicalizedBody: rekor.Payload.body,
          },
        ],
      },
      messageSignature: {
        messageDigest: { algorithm: 'SHA2_256', digest: createHash('sha256').update(payload).digest('base64') },
        signature,
      },
    });
  } catch (err) {
    return { ok: false, reason: `a keyless cosign .sig whose annotations do not make a sigstore bundle (${(err as Error).message})` };
  }
  const logged = loggedCertificate(body);
  if (!logged?.equals(leaf)) return { ok: false, reason: 'a keyless cosign .sig whose Rekor entry does not name its certificate' };
  let entity: SignedEntity;
  try {
    entity = toSignedEntity(bundle, payload);
  } catch (err) {
    return { ok: false, reason: `a keyless cosign .sig that cannot be checked (${(err as Error).message})` };
  }
  return checkKeyless(entity, leaf, bundle.verificationMaterial.tlogEntries, policy);
}

export function checkSimpleSigning(sig: SimpleSignature, payload: Buffer, subject: Digest, policy: SignaturePolicy): SignatureCheck {
  let signer: string;
  if (sig.keyless) {
    const c = checkKeylessSig(sig.keyless, sig.signature, payload, policy);
    if (!c.ok) return c;
    signer = c.signer;
  } else {
    if (policy.keys.length === 0) return { ok: false, reason: 'a key-based cosign .sig signature, and the policy trusts no key' };
    const signature = Buffer.from(sig.signature, 'base64');
    const key = policy.keys.find((k) => verifiesWith(k.key, payload, signature));
    if (!key) return { ok: false, reason: "not signed by any of the policy's keys (signed by another key, or altered after signing)" };
    signer = `key ${key.file}`;
  }
  const named = namedDigest(payload);
  if (!named) return { ok: false, reason: 'a signed payload that names no critical.image.docker-manifest-digest' };
  if (named.type !== COSIGN_TYPE) return { ok: false, reason: `a signed payload of type ${JSON.stringify(named.type)}, not ${JSON.stringify(COSIGN_TYPE)}` };
  if (named.digest !== subject.value) return { ok: false, reason: `signature for another digest (${named.digest})` };
  return { ok: true, signer };
}
