/**
 * The check a manifest passes before it is served (docs/ARCHITECTURE.md, 3.7): the repository's
 * policy (policies.ts) decides whether it is checked; its signatures are found the two ways
 * clients publish them — OCI referrers whose artifactType is a sigstore bundle, and the cosign
 * tag `sha256-<hex>.sig` — read through a SignatureSource, and verified (check-bundle.ts,
 * check-simple-signing.ts). One valid signature is enough.
 *
 * Verdicts are kept in this process per (policy version, repository, digest): a verified one
 * until evicted (LRU) or the policy changes; a refusal for NEGATIVE_TTL_MS (a signature may be
 * pushed meanwhile); a failure to read signatures (upstream down, nothing stored) is never kept.
 * They are not shared with other replicas through Redis on purpose: a verdict record would let
 * whoever can write to Redis mark any image as signed (rule 10: another process is trusted for
 * nothing but bytes that verify), so each replica verifies once itself.
 *
 * An index that verifies covers its platform manifests: their digests are remembered as
 * verified under the same key, so a client that resolved the index (by tag) then fetches a
 * platform manifest by digest is served. A platform manifest asked for on its own, before its
 * index, needs a signature of its own.
 *
 * Signature artifacts themselves (cosign `.sig` / attestation manifests, sigstore bundle
 * manifests, SBOMs: isSignatureArtifact) are not checked: no runtime runs them, and clients that
 * verify signatures read them through the mirror. A runnable image is checked whatever it says
 * about itself (a `subject` field does not make it an artifact).
 */
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { parseDigest, tryParseDigest, type Digest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import type { SignatureCheck } from './check-bundle.js';
import { SIMPLE_SIGNING, simpleSignatures } from './cosign-signatures.js';
import type { SignaturePolicies, SignaturePolicy } from './policies.js';
import type { SignatureSource } from './signature-source.js';

export type VerificationResult = 'verified' | 'unsigned' | 'invalid' | 'error';

export interface Verdict {
  result: VerificationResult;
  /** What was found missing or wrong (or who signed, when verified). */
  reason: string;
}

/** The artifactTypes / media types of sigstore bundles (v0.3, as @sigstore/oci and cosign 3 write them, and the older spelling). */
export const BUNDLE_TYPES: ReadonlySet<string> = new Set([
  'application/vnd.dev.sigstore.bundle.v0.3+json',
  'application/vnd.dev.sigstore.bundle+json;version=0.3',
  'application/vnd.dev.sigstore.bundle+json;version=0.2',
]);
/** The artifactType of a Notary Project (notation) signature referrer. */
export const NOTATION_TYPE = 'application/vnd.cncf.notary.signature';
const NOT_RUNNABLE_LAYERS: ReadonlySet<string> = new Set([SIMPLE_SIGNING, 'application/vnd.dsse.envelope.v1+json', ...BUNDLE_TYPES]);
const NEGATIVE_TTL_MS = 10_000;
const MAX_VERDICTS = 20_000;
/** Signature referrers / `.sig` layers looked at per manifest at most. */
const MAX_CANDIDATES = 16;

export interface ManifestToCheck {
  digest: string;
  bytes: Buffer;
}

/** A manifest served under a `warn` policy without a valid signature (for the dashboard's list). */
export interface ServedUnverified {
  repository: string;
  digest: string;
  /** The policy, as messages name it: `verify.policies[<i>] (<pattern>)`. */
  policy: string;
  result: Exclude<VerificationResult, 'verified'>;
  reason: string;
}

export class SignatureGate {
  private policies: SignaturePolicies;
  private readonly log: Logger;
  private readonly onVerdict: (result: VerificationResult) => void;
  private readonly onServedUnverified: (served: ServedUnverified) => void;
  private readonly verdicts = new LRUCache<string, Verdict>({ max: MAX_VERDICTS });
  private readonly inFlight = new Map<string, Promise<Verdict>>();

  constructor(deps: {
    policies: SignaturePolicies;
    log: Logger;
    onVerdict?: (result: VerificationResult) => void;
    /** Each time a manifest is served under `warn` without a valid signature (a cached verdict too). */
    onServedUnverified?: (served: ServedUnverified) => void;
  }) {
    this.policies = deps.policies;
    this.log = deps.log;
    this.onVerdict = deps.onVerdict ?? (() => undefined);
    this.onServedUnverified = deps.onServedUnverified ?? (() => undefined);
  }

  /** Whether a policy in force is in `warn` mode (the dashboard then lists what it served unverified). */
  warns(): boolean {
    return this.policies.policies.some((p) => p.mode === 'warn');
  }

  /** New policies (a configuration reload): verdicts of a policy whose version changed are never used again. */
  reload(policies: SignaturePolicies): void {
    this.policies = policies;
    this.log.info({ policies: policies.policies.map((p) => ({ repository: p.repository, mode: p.mode, version: p.version })) }, 'signature policies loaded');
  }

  /** Whether any policy could apply to this repository (a cheap test for callers). */
  applies(repository: string): boolean {
    return this.policies.match(repository) !== null;
  }

  /**
   * Resolves when the manifest may be served; under `require`, throws 403 DENIED naming the
   * policy and the reason when it is not validly signed.
   */
  async check(source: SignatureSource, manifest: ManifestToCheck): Promise<void> {
    const decided = await this.verdict(source, manifest);
    if (!decided) return;
    const { policy, verdict } = decided;
    if (verdict.result === 'verified') return;
    if (policy.mode === 'warn') {
      this.onServedUnverified({ repository: source.repository, digest: manifest.digest, policy: policy.name, result: verdict.result, reason: verdict.reason });
      return;
    }
    throw refusal(policy, source.repository, manifest.digest, verdict);
  }

  /**
   * The policy covering the repository and its verdict on the manifest, refusing nothing (the
   * caller decides: `check` for serving, `stevedore prefetch` and `import` report it); null when
   * no policy covers the repository (or it is off). Logged and counted as `check` is.
   */
  async verdict(source: SignatureSource, manifest: ManifestToCheck): Promise<{ policy: SignaturePolicy; verdict: Verdict } | null> {
    const policy = this.policies.match(source.repository);
    if (!policy) return null;
    const key = `${policy.index}:${policy.version}|${source.repository}|${manifest.digest}`;
    // A warm manifest costs this lookup only.
    let verdict = this.verdicts.get(key);
    if (!verdict && isSignatureArtifact(manifest.bytes)) {
      verdict = { result: 'verified', reason: 'a signature artifact (not itself checked)' };
      this.verdicts.set(key, verdict);
    }
    if (!verdict) {
      let pending = this.inFlight.get(key);
      if (!pending) {
        pending = this.evaluate(policy, source, manifest, key).finally(() => this.inFlight.delete(key));
        this.inFlight.set(key, pending);
      }
      verdict = await pending;
    }
    return { policy, verdict };
  }

  private async evaluate(policy: SignaturePolicy, source: SignatureSource, manifest: ManifestToCheck, key: string): Promise<Verdict> {
    const subject = parseDigest(manifest.digest);
    const verdict = await findValidSignature(policy, source, subject, manifest.bytes);
    this.onVerdict(verdict.result);
    const fields = { policy: policy.name, mode: policy.mode, repository: source.repository, digest: manifest.digest, result: verdict.result, reason: verdict.reason };
    if (verdict.result === 'verified') {
      this.verdicts.set(key, verdict);
      this.log.info(fields, 'signature verified');
      for (const child of indexChildren(manifest.bytes)) {
        this.verdicts.set(`${policy.index}:${policy.version}|${source.repository}|${child}`, { result: 'verified', reason: `covered by the signed index ${manifest.digest}` });
      }
    } else {
      if (verdict.result !== 'error') this.verdicts.set(key, verdict, { ttl: NEGATIVE_TTL_MS });
      this.log.warn(fields, policy.mode === 'require' ? 'signature check failed: refused' : 'signature check failed: served (policy mode warn)');
    }
    return verdict;
  }
}

/** The 403 DENIED of a manifest `policy` refuses: the policy, the repository and digest, and the reason. */
export function refusal(policy: SignaturePolicy, repository: string, digest: string, verdict: Verdict): OciError {
  return new OciError('DENIED', `${policy.name} requires a valid signature: ${repository}@${digest}: ${verdict.reason}`, {
    detail: { policy: policy.index, repository: policy.repository, digest, result: verdict.result, reason: verdict.reason },
  });
}

let checks: Promise<[typeof import('./check-bundle.js'), typeof import('./check-simple-signing.js')]> | null = null;

/**
 * The checks, with sigstore's libraries under them, loaded when a policy first checks a manifest:
 * a process without policies never loads them (about 5 MiB of heap and pages; issue 28).
 */
function signatureChecks(): Promise<[typeof import('./check-bundle.js'), typeof import('./check-simple-signing.js')]> {
  checks ??= Promise.all([import('./check-bundle.js'), import('./check-simple-signing.js')]).catch((err: unknown) => {
    checks = null; // loaded again by the next check
    throw err;
  });
  return checks;
}

/** Looks at every signature found; the first valid one wins. */
async function findValidSignature(policy: SignaturePolicy, source: SignatureSource, subject: Digest, bytes: Buffer): Promise<Verdict> {
  let loaded: Awaited<ReturnType<typeof signatureChecks>>;
  try {
    loaded = await signatureChecks();
  } catch (err) {
    // Like signatures that cannot be read: an error verdict (refused under require, served under warn).
    return { result: 'error', reason: `the signature checks could not be loaded (${(err as Error).message})` };
  }
  const [{ checkBundle }, { checkSimpleSigning }] = loaded;
  const failures: string[] = [];
  const errors: string[] = [];
  let found = 0;
  const consider = (c: SignatureCheck): Verdict | null => {
    found++;
    if (c.ok) return { result: 'verified', reason: `signed by ${c.signer}` };
    failures.push(c.reason);
    return null;
  };
  // Notary Project (notation) signatures are seen, not verified (README, "Signature policy": no
  // maintained JavaScript implementation): a refusal says they were there.
  let notation = 0;
  // 1. OCI referrers: sigstore bundles.
  try {
    const all = await source.referrers(subject);
    notation = all.filter((r) => r.artifactType === NOTATION_TYPE).length;
    const referrers = all.filter((r) => r.artifactType !== undefined && BUNDLE_TYPES.has(r.artifactType)).slice(0, MAX_CANDIDATES);
    for (const r of referrers) {
      try {
        const doc = JSON.parse((await source.manifest(parseDigest(r.digest))).toString('utf8')) as { layers?: Array<{ mediaType?: unknown; digest?: unknown }> };
        const layer = (doc.layers ?? []).find((l) => typeof l.mediaType === 'string' && BUNDLE_TYPES.has(l.mediaType) && typeof l.digest === 'string' && tryParseDigest(l.digest));
        if (!layer) {
          found++;
          failures.push(`a bundle referrer ${r.digest} without a bundle layer`);
          continue;
        }
        const bundle = JSON.parse((await source.blob(parseDigest(layer.digest as string))).toString('utf8')) as unknown;
        const v = consider(checkBundle(bundle, subject, bytes, policy));
        if (v) return v;
      } catch (err) {
        errors.push(`referrer ${r.digest}: ${(err as Error).message}`);
      }
    }
  } catch (err) {
    errors.push(`referrers: ${(err as Error).message}`);
  }
  // 2. The cosign tag scheme: sha256-<hex>.sig, simple-signing payloads.
  try {
    const sigManifest = subject.algorithm === 'sha256' ? await source.tagged(`sha256-${subject.hex}.sig`) : null;
    if (sigManifest) {
      const sigs = simpleSignatures(JSON.parse(sigManifest.toString('utf8'))).slice(0, MAX_CANDIDATES);
      for (const s of sigs) {
        const d = tryParseDigest(s.payloadDigest);
        if (!d) continue;
        const v = consider(checkSimpleSigning(s, await source.blob(d), subject, policy));
        if (v) return v;
      }
    }
  } catch (err) {
    errors.push(`cosign .sig tag: ${(err as Error).message}`);
  }
  if (errors.length) {
    return { result: 'error', reason: `signatures could not be read (${errors.join('; ')})${failures.length ? `; and ${failures.join('; ')}` : ''}` };
  }
  const unverifiable = notation > 0 ? `; ${notation === 1 ? 'a Notary Project (notation) signature was found' : `${notation} Notary Project (notation) signatures were found`}: stevedore does not verify those` : '';
  if (found === 0) return { result: 'unsigned', reason: `no signature (no sigstore bundle referrer, no cosign tag sha256-${subject.hex}.sig)${unverifiable}` };
  return { result: 'invalid', reason: `${[...new Set(failures)].join('; ')}${unverifiable}` };
}

function parseJson(bytes: Buffer): Record<string, unknown> | null {
  try {
    const doc = JSON.parse(bytes.toString('utf8')) as unknown;
    return typeof doc === 'object' && doc !== null && !Array.isArray(doc) ? (doc as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** The config media types of a runnable image (OCI, Docker schema 2): what a runtime unpacks and runs. */
const IMAGE_CONFIG_TYPES: ReadonlySet<string> = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']);

/**
 * A signature, attestation or other artifact about another manifest, which no runtime runs: not
 * itself checked. What the manifest says about itself (a `subject`, an `artifactType`) decides
 * nothing — anyone can add them to a runnable image — only what a runtime would unpack does: an
 * image manifest whose config is not an image config (a sigstore bundle's empty config, an SBOM's),
 * or whose every layer is a signature document (a cosign `.sig` or attestation manifest). An index
 * is always checked (its platform manifests run).
 */
export function isSignatureArtifact(bytes: Buffer): boolean {
  const doc = parseJson(bytes);
  if (!doc || Array.isArray(doc.manifests)) return false;
  const config = doc.config as { mediaType?: unknown } | null | undefined;
  if (typeof config !== 'object' || config === null || typeof config.mediaType !== 'string') return false;
  if (!IMAGE_CONFIG_TYPES.has(config.mediaType)) return true;
  const layers = doc.layers;
  return Array.isArray(layers) && layers.length > 0 && layers.every((l) => typeof (l as { mediaType?: unknown } | null)?.mediaType === 'string' && NOT_RUNNABLE_LAYERS.has((l as { mediaType: string }).mediaType));
}

/** The digests of an index's manifests ([] for an image manifest). */
function indexChildren(bytes: Buffer): string[] {
  const manifests = parseJson(bytes)?.manifests;
  if (!Array.isArray(manifests)) return [];
  return manifests.map((m) => (m as { digest?: unknown } | null)?.digest).filter((d): d is string => typeof d === 'string' && tryParseDigest(d) !== null);
}
