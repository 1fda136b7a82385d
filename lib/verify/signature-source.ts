/**
 * Where a repository's signatures are read from: the same upstream through the pull-through
 * machinery (stored and linked by digest like anything else pulled, so they are there offline
 * and when the upstream fails), the hosted repository, or a bundle being imported (what it
 * carries, verified by digest and not yet stored). Signature blobs are small documents read
 * whole, capped.
 */
import type { Readable } from 'node:stream';
import type { ProxiedReferrers } from '../cache/referrers.js';
import type { PullThrough, Target } from '../cache/pull-through.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import type { ReferrerDescriptor } from '../oci/referrers.js';
import type { StagedBundle } from '../registry/oci-bundle.js';
import type { Registry } from '../registry/registry.js';
import type { RepoRef } from '../storage/repo-store.js';
import { UpstreamError } from '../upstream/errors.js';

/** A signature document larger than this is not read (a sigstore bundle is a few KiB). */
export const SIGNATURE_MAX_BYTES = 1024 * 1024;

export interface SignatureSource {
  /** The canonical repository name (`<upstream>/<name>`, or the hosted name). */
  readonly repository: string;
  referrers(subject: Digest): Promise<ReferrerDescriptor[]>;
  manifest(d: Digest): Promise<Buffer>;
  /** The manifest a tag names; null when the tag does not exist. */
  tagged(tag: string): Promise<Buffer | null>;
  blob(d: Digest): Promise<Buffer>;
}

async function readCapped(body: Readable, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > max) {
      body.destroy();
      throw new Error(`a signature document larger than ${max} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function notFound(err: unknown): boolean {
  return (err instanceof UpstreamError && err.kind === 'not_found') || (err instanceof OciError && err.code === 'MANIFEST_UNKNOWN');
}

/** A proxied repository: its upstream, through the pull-through cache; referrers pushed here (seeded) included. */
export function proxiedSource(deps: { pull: PullThrough; referrers: ProxiedReferrers; registry: Registry }, target: Target): SignatureSource {
  const repo: RepoRef = { upstream: target.client.name, name: target.name };
  return {
    repository: `${target.client.name}/${target.name}`,
    async referrers(subject) {
      const seeded = await deps.registry.referrers(repo, subject);
      return (await deps.referrers.get(target, subject, seeded)).descriptors;
    },
    async manifest(d) {
      return (await deps.pull.getManifestByDigest(target, d)).bytes;
    },
    async tagged(tag) {
      try {
        return (await deps.pull.getManifestByTag(target, tag)).bytes;
      } catch (err) {
        if (notFound(err)) return null;
        throw err;
      }
    },
    async blob(d) {
      const answer = await deps.pull.getBlob(target, d);
      if (answer.size !== null && answer.size > SIGNATURE_MAX_BYTES) {
        await answer.release();
        throw new Error(`a signature document of ${answer.size} bytes (more than ${SIGNATURE_MAX_BYTES})`);
      }
      return readCapped(answer.open(), SIGNATURE_MAX_BYTES);
    },
  };
}

/** A hosted repository: what was pushed here. */
export function hostedSource(registry: Registry, repo: RepoRef): SignatureSource {
  return {
    repository: repo.name,
    referrers: (subject) => registry.referrers(repo, subject),
    async manifest(d) {
      return (await registry.getManifest(repo, { kind: 'digest', digest: d })).bytes;
    },
    async tagged(tag) {
      try {
        return (await registry.getManifest(repo, { kind: 'tag', tag })).bytes;
      } catch (err) {
        if (notFound(err)) return null;
        throw err;
      }
    },
    async blob(d) {
      const body = await registry.openBlob(repo, d);
      if (body.size > SIGNATURE_MAX_BYTES) {
        await body.release();
        throw new Error(`a signature document of ${body.size} bytes (more than ${SIGNATURE_MAX_BYTES})`);
      }
      return readCapped(body.open(), SIGNATURE_MAX_BYTES);
    },
  };
}

/** A manifest read from a bundle is at most this (config cache.manifestMaxSize's default). */
const BUNDLE_MANIFEST_MAX_BYTES = 4 * 1024 * 1024;

/** A repository of a bundle being imported (`stevedore import`): the referrers and cosign tags it carries for it. */
export function bundleSource(bundle: StagedBundle, repo: RepoRef): SignatureSource {
  const manifest = async (d: Digest): Promise<Buffer> => {
    const bytes = await bundle.read(d.value, BUNDLE_MANIFEST_MAX_BYTES);
    if (!bytes) throw new OciError('MANIFEST_UNKNOWN', `manifest ${d.value} is not in the bundle`);
    return bytes;
  };
  return {
    repository: `${repo.upstream}/${repo.name}`,
    referrers: (subject) => Promise.resolve(bundle.referrers(repo, subject.value)),
    manifest,
    async tagged(tag) {
      const digest = bundle.tagged(repo, tag);
      return digest === null ? null : manifest(parseDigest(digest));
    },
    async blob(d) {
      const bytes = await bundle.read(d.value, SIGNATURE_MAX_BYTES);
      if (!bytes) throw new Error(`blob ${d.value} is not in the bundle, or larger than ${SIGNATURE_MAX_BYTES} bytes`);
      return bytes;
    },
  };
}
