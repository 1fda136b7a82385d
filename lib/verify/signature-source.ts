/**
 * Where a repository's signatures are read from: the same upstream through the pull-through
 * machinery (stored and linked by digest like anything else pulled, so they are there offline
 * and when the upstream fails), or the hosted repository. Signature blobs are small documents
 * read whole, capped.
 */
import type { Readable } from 'node:stream';
import type { ProxiedReferrers } from '../cache/referrers.js';
import type { PullThrough, Target } from '../cache/pull-through.js';
import type { Digest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import type { ReferrerDescriptor } from '../oci/referrers.js';
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
