/**
 * Referrers of proxied repositories: asked of the upstream's referrers API, cached per subject,
 * and served from that cache when the upstream cannot answer. A registry without the API (404)
 * is asked for the referrers tag schema (`sha256-<hex>`, an index pushed by clients), and no such
 * tag means no referrers. Referrers pushed into the upstream's namespace here (seeded) are added.
 */
import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.js';
import { referrersTag, sanitizeDescriptors, type ReferrerDescriptor } from '../oci/referrers.js';
import type { Store } from '../storage/store.js';
import { isTransient, UpstreamError } from '../upstream/errors.js';
import type { CacheResult, Clock, Target } from './pull-types.js';

export interface ReferrersAnswer {
  descriptors: ReferrerDescriptor[];
  cache: CacheResult;
  staleReason?: string;
}

export class ProxiedReferrers {
  private readonly store: Store;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly manifestMaxSize: number;

  constructor(deps: { store: Store; log: Logger; clock?: Clock; manifestMaxSize: number }) {
    this.store = deps.store;
    this.log = deps.log;
    this.clock = deps.clock ?? { now: () => Date.now() };
    this.manifestMaxSize = deps.manifestMaxSize;
  }

  /** `seeded`: descriptors of referrers pushed into this repository here, merged into the answer. */
  async get(t: Target, subject: Digest, seeded: ReferrerDescriptor[]): Promise<ReferrersAnswer> {
    const repo = { upstream: t.client.name, name: t.name };
    try {
      const descriptors = await this.fromUpstream(t, subject);
      await this.store.repos.setCachedReferrers(repo, subject, descriptors, this.clock.now());
      return { descriptors: [...descriptors, ...seeded], cache: 'miss' };
    } catch (err) {
      // Upstream failures reach the HTTP edge as they are: it answers them (error-answers.ts, toOciError).
      if (!isTransient(err)) throw err;
      const stored = await this.store.repos.getCachedReferrers(repo, subject);
      if (!stored && seeded.length === 0) throw err;
      this.log.warn({ upstream: t.client.name, repo: t.name, subject: subject.value, reason: err.message }, 'upstream failing; serving stored referrers');
      return { descriptors: [...sanitizeDescriptors(stored?.manifests), ...seeded], cache: 'stale', staleReason: err.message };
    }
  }

  private async fromUpstream(t: Target, subject: Digest): Promise<ReferrerDescriptor[]> {
    const list = await t.client.getReferrers(t.name, subject.value, { maxBytes: this.manifestMaxSize });
    if (list !== null) return sanitizeDescriptors(list);
    // No referrers API: the tag schema, where clients keep the list themselves.
    try {
      const m = await t.client.getManifest(t.name, referrersTag(subject), this.manifestMaxSize);
      const doc = JSON.parse(m.bytes.toString('utf8')) as { manifests?: unknown };
      return sanitizeDescriptors(doc.manifests);
    } catch (err) {
      if (err instanceof UpstreamError && err.kind === 'not_found') return [];
      if (err instanceof SyntaxError) return [];
      throw err;
    }
  }
}
