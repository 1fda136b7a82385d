/**
 * What the dashboard remembers about the requests it saw: the last hour in one-minute buckets
 * (cache results, bytes from the store, bytes fetched upstream), the repositories pulled most
 * (by manifest pulls and by bytes, since start; bounded), the last errors answered, and the
 * manifests served under a `warn` signature policy without a valid signature (bounded).
 *
 * In memory only: a restart starts an empty hour. The durable history is Prometheus's
 * (`/metrics`, config/grafana/stevedore.json); this is the glance at what the process is doing.
 */
import { LRUCache } from 'lru-cache';
import type { ServedUnverified } from '../../verify/signature-gate.js';

export const MINUTES = 60;
const MINUTE_MS = 60_000;
/** Repositories remembered for the top lists (least recently pulled forgotten first). */
const MAX_REPOSITORIES = 2_000;
const MAX_ERRORS = 50;
/** Manifests served unverified remembered (least recently served forgotten first). */
export const MAX_UNVERIFIED = 50;

export interface Bucket {
  /** Start of the minute (epoch ms). */
  at: number;
  /** Answered from the store: a hit, a tag revalidated, a stale answer served. */
  fromStore: number;
  /** Answered by fetching upstream. */
  fetched: number;
  /** Body bytes sent to clients from the store. */
  storeBytes: number;
  /** Blob bytes downloaded from upstreams. */
  upstreamBytes: number;
  requests: number;
  errors: number;
}

export interface RepositoryActivity {
  repository: string;
  /** Manifest GETs (an image pull asks for at least one). */
  pulls: number;
  /** Body bytes sent for it. */
  bytes: number;
  lastAt: number;
}

export interface RecentError {
  at: number;
  method: string;
  path: string;
  status: number;
  code: string;
  message: string;
  /** The canonical repository the request named, when it named one that resolved. */
  repository: string | null;
}

/** A manifest served under a `warn` policy without a valid signature: since when, how often. */
export interface UnverifiedImage extends ServedUnverified {
  firstAt: number;
  lastAt: number;
  /** Times it was served so (manifest GETs). */
  count: number;
}

/** One answered request, as the edge reports it. */
export interface AnsweredRequest {
  method: string;
  path: string;
  route: string;
  status: number;
  cache: string | undefined;
  bytes: number;
  repository: string | null;
  error: { code: string; message: string } | undefined;
  /** The request carried an Authorization header. */
  credentials: boolean;
}

const FROM_STORE = new Set(['hit', 'revalidated', 'stale']);
const NOT_COUNTED = new Set(['dashboard', 'metrics', 'healthz', 'readyz']);

export class Activity {
  private readonly buckets: Bucket[] = [];
  private readonly repositories = new LRUCache<string, RepositoryActivity>({ max: MAX_REPOSITORIES });
  private readonly errors: RecentError[] = [];
  private readonly unverified = new LRUCache<string, UnverifiedImage>({ max: MAX_UNVERIFIED });
  /** The fetched-bytes total last seen, so each bucket gets what arrived in its minute. */
  private lastFetchedTotal: number;

  constructor(
    private readonly now: () => number,
    /** Blob bytes downloaded from upstreams since start (all upstreams). */
    private readonly fetchedTotal: () => number,
  ) {
    this.lastFetchedTotal = fetchedTotal();
  }

  record(r: AnsweredRequest): void {
    const b = this.current();
    // Registry traffic only: not the dashboard's own polling, scrapes or probes.
    if (!NOT_COUNTED.has(r.route)) b.requests++;
    if (r.cache !== undefined) {
      if (FROM_STORE.has(r.cache)) {
        b.fromStore++;
        b.storeBytes += r.bytes;
      } else if (r.cache === 'miss') b.fetched++;
    }
    if (r.repository !== null && r.status < 400) {
      const key = r.repository;
      // get() marks it recently used as set() would: a known repository's entry is updated in place.
      let entry = this.repositories.get(key);
      if (!entry) {
        entry = { repository: key, pulls: 0, bytes: 0, lastAt: 0 };
        this.repositories.set(key, entry);
      }
      if (r.route === 'manifest' && r.method === 'GET') entry.pulls++;
      entry.bytes += r.bytes;
      entry.lastAt = this.now();
    }
    if (isShownError(r)) {
      b.errors++;
      this.errors.push({
        at: this.now(),
        method: r.method,
        // Without its query: a token request's scope may name a repository the viewer may not see.
        path: r.path.split('?')[0]!,
        status: r.status,
        code: r.error?.code ?? String(r.status),
        message: r.error?.message ?? '',
        repository: r.repository,
      });
      if (this.errors.length > MAX_ERRORS) this.errors.shift();
    }
  }

  /** A manifest served under a `warn` policy without a valid signature (SignatureGate reports each one). */
  recordUnverified(u: ServedUnverified): void {
    const key = unverifiedKey(u);
    const now = this.now();
    const known = this.unverified.get(key);
    if (known) {
      known.count++;
      known.lastAt = now;
      known.result = u.result;
      known.reason = u.reason;
    } else {
      this.unverified.set(key, { repository: u.repository, digest: u.digest, policy: u.policy, result: u.result, reason: u.reason, firstAt: now, lastAt: now, count: 1 });
    }
  }

  /** What was served unverified, last served first, without the repositories the viewer may not see. */
  unverifiedImages(visible: (repository: string) => boolean): UnverifiedImage[] {
    return [...this.unverified.values()]
      .filter((u) => visible(u.repository))
      .sort((a, b) => b.lastAt - a.lastAt)
      .map((u) => ({ ...u }));
  }

  /** The last hour, oldest minute first, with empty minutes filled in (MINUTES buckets). */
  history(): Bucket[] {
    this.current();
    const last = this.buckets.at(-1)!.at;
    const byStart = new Map(this.buckets.map((b) => [b.at, b]));
    const out: Bucket[] = [];
    for (let i = MINUTES - 1; i >= 0; i--) {
      const at = last - i * MINUTE_MS;
      out.push({ ...(byStart.get(at) ?? emptyBucket(at)) });
    }
    return out;
  }

  topRepositories(by: 'pulls' | 'bytes', n: number, visible: (repository: string) => boolean): RepositoryActivity[] {
    return topOf(this.repositories.values(), by, n, visible);
  }

  /** Every repository's activity (a worker's part of the host's dashboard). */
  repositoryList(): RepositoryActivity[] {
    return [...this.repositories.values()].map((r) => ({ ...r }));
  }

  /** The last errors, newest first, without those naming a repository the viewer may not see. */
  recentErrors(visible: (repository: string) => boolean): RecentError[] {
    return this.errors.filter((e) => e.repository === null || visible(e.repository)).reverse();
  }

  /** This minute's bucket (old ones dropped); fetched bytes that arrived since the last look land in it. */
  private current(): Bucket {
    const at = Math.floor(this.now() / MINUTE_MS) * MINUTE_MS;
    let b = this.buckets.at(-1);
    if (!b || b.at !== at) {
      b = emptyBucket(at);
      this.buckets.push(b);
      while (this.buckets.length > 0 && this.buckets[0]!.at <= at - MINUTES * MINUTE_MS) this.buckets.shift();
    }
    const total = this.fetchedTotal();
    b.upstreamBytes += Math.max(0, total - this.lastFetchedTotal);
    this.lastFetchedTotal = total;
    return b;
  }
}

/** The `n` repositories with the most `by` that `visible` lets the viewer see. */
export function topOf(repositories: Iterable<RepositoryActivity>, by: 'pulls' | 'bytes', n: number, visible: (repository: string) => boolean): RepositoryActivity[] {
  const all = [...repositories].filter((r) => r[by] > 0 && visible(r.repository));
  all.sort((a, b) => b[by] - a[by] || b.lastAt - a.lastAt);
  return all.slice(0, n).map((r) => ({ ...r }));
}

export function unverifiedKey(u: ServedUnverified): string {
  return `${u.policy}|${u.repository}|${u.digest}`;
}

export function emptyBucket(at: number): Bucket {
  return { at, fromStore: 0, fetched: 0, storeBytes: 0, upstreamBytes: 0, requests: 0, errors: 0 };
}

/**
 * Errors worth a person's look: every 5xx, and 4xx except the routine ones of the protocol: a 401
 * to a client that sent no credentials (the challenge that makes it log in), a HEAD finding
 * nothing (clients probe blobs before pushing). A client hanging up (499) is no registry error.
 */
function isShownError(r: AnsweredRequest): boolean {
  if (r.status < 400 || r.status === 499) return false;
  if (r.status >= 500) return true;
  if (r.status === 401) return r.credentials;
  return !(r.status === 404 && r.method === 'HEAD');
}
