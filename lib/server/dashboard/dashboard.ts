/**
 * The dashboard at `/`: one HTML page, a script and a style sheet (assets/dashboard, plain files
 * a browser runs as they are: no build step), and `/ui/api/state`, the JSON the page polls every
 * two seconds.
 *
 * The state is built per viewer: who may look is who may read /metrics (Auth.authorizeDashboard),
 * and no repository a viewer may not pull is named: top lists, downloads, errors and images served
 * without a valid signature are filtered by the access rules. Upstream names and health are configuration, shown to every viewer.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from '../../config/config.js';
import type { PullThrough, DownloadState } from '../../cache/pull-through.js';
import type { GoneTag } from '../../cache/gone-tags.js';
import type { UpstreamSources } from '../../upstream/upstream-sources.js';
import type { HealthSnapshot, UpstreamHealth } from '../../metadata/upstream-health.js';
import type { BlobStore } from '../../storage/blob-store.js';
import type { NodePeers, PeerEvent } from '../../cluster/peers.js';
import type { ClusterCoordinator } from '../../cluster/coordinator.js';
import type { SharedIndex } from '../../cluster/shared-index.js';
import { OciError } from '../../oci/errors.js';
import type { Auth, AuthContext } from '../auth/auth.js';
import { sendJson } from '../respond.js';
import { Activity, emptyBucket, MAX_UNVERIFIED, topOf, unverifiedKey, type Bucket, type RecentError, type RepositoryActivity, type UnverifiedImage } from './activity.js';
import { answerCollections } from '../../cluster/ipc/coordinator.js';

/** One worker's per-process figures (server.workers above 1), merged into the host's dashboard. */
export interface WorkerPart {
  worker: string;
  pid: number;
  startedAt: number;
  rssBytes: number;
  heapUsedBytes: number;
  buckets: Bucket[];
  repositories: RepositoryActivity[];
  errors: RecentError[];
  downloads: DownloadState[];
  unverified: UnverifiedImage[];
}

/** What the host's dashboard shows of each worker. */
export interface WorkerRow {
  worker: string;
  pid: number;
  startedAt: number;
  rssBytes: number;
  heapUsedBytes: number;
  /** Requests it answered in the last hour. */
  requests: number;
  downloads: number;
}

const DASHBOARD_STATE_PATH = '/ui/api/state';
const TOP = 10;
/** Tags deleted upstream shown at most (the oldest first; stevedore ls --gone lists them all). */
const GONE_SHOWN = 100;
/** What the dashboard says of a failing credential source: the cause is the operator's, in the log. */
const CREDENTIALS_FAILED = "the credential source failed; the cause is in stevedore's log";

interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

/** The page's files, by the path they are served at. */
const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/ui/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/ui/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};

/** Headers of every dashboard answer: the page runs only its own script and talks only to this server. */
const PAGE_HEADERS = {
  'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
};

export interface DashboardDeps {
  config: Config;
  store: BlobStore;
  pull: PullThrough;
  upstreams: ReadonlyMap<string, UpstreamSources>;
  health: UpstreamHealth;
  cluster: { coordinator: ClusterCoordinator; index: SharedIndex; replicaId: string; storeId: string } | null;
  peers: NodePeers | null;
  version: string;
  now: () => number;
  /** Whether a signature policy in force is in `warn` mode (config verify): the list of what was served unverified is shown then. */
  verifyWarns?: () => boolean;
  /** One of the host's workers: its slot, and how every worker's part is had (through the supervisor). */
  worker?: { id: string; collect: () => Promise<unknown[]> } | null;
}

export interface DashboardState {
  now: number;
  startedAt: number;
  version: string;
  viewer: string | null;
  mode: 'single' | 'cluster' | 'node';
  store: {
    cachedBytes: number;
    pinnedBytes: number;
    cachedCount: number;
    pinnedCount: number;
    maxSize: number | null;
    evictions: number;
    /** Cluster mode: cached bytes of the shared store as the cluster records them. */
    clusterBytes: number | null;
  };
  hour: {
    buckets: Bucket[];
    /** Answers from the store / answers with a cache result; null before any. */
    hitRatio: number | null;
    storeBytes: number;
    upstreamBytes: number;
    requests: number;
    errors: number;
  };
  upstreams: Array<{
    name: string;
    offline: boolean;
    sources: Array<{
      name: string;
      url: string;
      state: 'ok' | 'offline' | 'cooling down' | 'breaker open';
      health: HealthSnapshot;
      /**
       * Where its credentials come from (upstreams.*.credentials, passwordFile: the kind, no path or
       * identity), and how fetching them goes; lastError only says that the last fetch failed (the
       * cause is in the log: a helper's output, paths, ARNs are not for every viewer). null: none or static.
       */
      credentials: { type: string; source: string; fetches: number; failures: number; lastError: string | null } | null;
    }>;
  }>;
  downloads: DownloadState[];
  /** Cached tags their upstream deleted, kept and served from the store (cache.gonePolicies), oldest first. */
  gone: GoneTag[];
  topByPulls: RepositoryActivity[];
  topByBytes: RepositoryActivity[];
  errors: RecentError[];
  /**
   * Manifests served under a `warn` signature policy (config verify) without a valid signature:
   * repository, digest, policy, result and reason, first and last served, how often; last served
   * first, at most MAX_UNVERIFIED. null: no policy in force is in warn mode, and nothing was listed.
   */
  unverified: UnverifiedImage[] | null;
  /** `coordinator`: redis, or ipc (server.workers without Redis: the workers' supervisor). */
  cluster: { replicaId: string; storeId: string; redisUp: boolean; coordinator: string } | null;
  peers: { group: string; self: string; transfers: Partial<Record<PeerEvent, number>> } | null;
  /** server.workers above 1: each worker (the figures above are the host's, every worker's merged). */
  workers: WorkerRow[] | null;
}

export class Dashboard {
  readonly activity: Activity;
  private readonly startedAt: number;

  private constructor(
    private readonly deps: DashboardDeps,
    private readonly assets: Map<string, Asset>,
  ) {
    this.startedAt = deps.now();
    this.activity = new Activity(deps.now, () => {
      let n = 0;
      for (const bytes of deps.pull.fetchedBytes.values()) n += bytes;
      return n;
    });
  }

  /** Reads the page's files (assets/dashboard, beside lib/ and dist/). */
  static async create(deps: DashboardDeps): Promise<Dashboard> {
    const dir = new URL('../../../assets/dashboard/', import.meta.url);
    const assets = new Map<string, Asset>();
    for (const [path, { file, type }] of Object.entries(ASSETS)) {
      const body = await readFile(new URL(file, dir));
      assets.set(path, { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` });
    }
    const dashboard = new Dashboard(deps, assets);
    const worker = deps.worker;
    if (worker) answerCollections('dashboard', async () => dashboard.part(worker.id));
    return dashboard;
  }

  /** This worker's per-process figures, unfiltered (the answering worker filters for its viewer). */
  private part(id: string): WorkerPart {
    const mem = process.memoryUsage();
    return {
      worker: id,
      pid: process.pid,
      startedAt: this.startedAt,
      rssBytes: mem.rss,
      heapUsedBytes: mem.heapUsed,
      buckets: this.activity.history(),
      repositories: this.activity.repositoryList(),
      errors: this.activity.recentErrors(() => true),
      downloads: this.deps.pull.downloadsSnapshot(),
      unverified: this.activity.unverifiedImages(() => true),
    };
  }

  /** Every worker's part, or only this process's when the supervisor does not answer. */
  private async parts(): Promise<WorkerPart[] | null> {
    const worker = this.deps.worker;
    if (!worker) return null;
    const collected: unknown[] = await worker.collect().catch(() => []);
    const got = collected.filter((p): p is WorkerPart => typeof p === 'object' && p !== null && Array.isArray((p as WorkerPart).buckets));
    return got.length > 0 ? got : [this.part(worker.id)];
  }

  /** Whether `pathname` is one of the dashboard's. */
  handles(pathname: string): boolean {
    return pathname === '/' || pathname === '/ui' || pathname.startsWith('/ui/');
  }

  async serve(auth: Auth, pathname: string, req: IncomingMessage, res: ServerResponse, ctx: AuthContext): Promise<void> {
    const head = req.method === 'HEAD';
    if (req.method !== 'GET' && !head) {
      throw new OciError('UNSUPPORTED', `${req.method} is not supported on the dashboard`, { headers: { Allow: 'GET, HEAD' } });
    }
    if (pathname === '/ui' || pathname === '/ui/') {
      res.writeHead(308, { ...PAGE_HEADERS, Location: '/', 'Content-Length': '0' });
      res.end();
      return;
    }
    const asset = this.assets.get(pathname);
    if (!asset && pathname !== DASHBOARD_STATE_PATH) throw new OciError('NOT_FOUND', `no endpoint at ${pathname.slice(0, 200)}`);
    const who = await auth.authorizeDashboard(req, ctx);
    if (!asset) {
      const state = await this.state(who.user, (repository) => auth.mayPull(who.user, repository));
      return sendJson(res, 200, state, { ...PAGE_HEADERS, 'Cache-Control': 'no-store' }, head);
    }
    const headers = { ...PAGE_HEADERS, 'Content-Type': asset.type, ETag: asset.etag, 'Cache-Control': 'no-cache' };
    if (req.headers['if-none-match'] === asset.etag) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Length': String(asset.body.length) });
    res.end(head ? undefined : asset.body);
  }

  /** What `viewer` (null: anonymous) sees; `visible` says which repositories it may be shown. */
  async state(viewer: string | null, visible: (repository: string) => boolean): Promise<DashboardState> {
    const { config, store, pull, cluster, peers } = this.deps;
    const parts = await this.parts();
    const merged = parts ? mergeParts(parts) : null;
    const buckets = merged ? merged.buckets : this.activity.history();
    const sum = (k: keyof Bucket): number => buckets.reduce((n, b) => n + b[k], 0);
    const answered = sum('fromStore') + sum('fetched');
    const s = store.stats();
    return {
      now: this.deps.now(),
      startedAt: this.startedAt,
      version: this.deps.version,
      viewer,
      mode: cluster ? 'cluster' : config.node.central ? 'node' : 'single',
      store: {
        ...s,
        maxSize: config.storage.maxSize,
        evictions: store.evictions,
        clusterBytes: cluster && cluster.coordinator.available() ? await cluster.index.total().catch(() => null) : null,
      },
      hour: {
        buckets,
        hitRatio: answered === 0 ? null : sum('fromStore') / answered,
        storeBytes: sum('storeBytes'),
        upstreamBytes: sum('upstreamBytes'),
        requests: sum('requests'),
        errors: sum('errors'),
      },
      upstreams: await this.upstreamStates(),
      downloads: (merged ? merged.downloads : pull.downloadsSnapshot()).filter((d) => visible(d.repository)),
      gone: (await pull.gone.list()).filter((g) => visible(g.repository)).slice(0, GONE_SHOWN),
      topByPulls: merged ? topOf(merged.repositories, 'pulls', TOP, visible) : this.activity.topRepositories('pulls', TOP, visible),
      topByBytes: merged ? topOf(merged.repositories, 'bytes', TOP, visible) : this.activity.topRepositories('bytes', TOP, visible),
      errors: merged ? merged.errors.filter((e) => e.repository === null || visible(e.repository)) : this.activity.recentErrors(visible),
      unverified: this.unverifiedState(merged ? merged.unverified : this.activity.unverifiedImages(() => true), visible),
      cluster: cluster ? { replicaId: cluster.replicaId, storeId: cluster.storeId, redisUp: cluster.coordinator.available(), coordinator: cluster.coordinator.name } : null,
      peers: peers && config.node.peers ? { group: config.node.peers.group, self: config.node.peers.advertise, transfers: Object.fromEntries(peers.counts) } : null,
      workers: merged ? merged.workers : null,
    };
  }

  private unverifiedState(all: UnverifiedImage[], visible: (repository: string) => boolean): UnverifiedImage[] | null {
    if (all.length === 0 && !this.deps.verifyWarns?.()) return null;
    return all.filter((u) => visible(u.repository));
  }

  private async upstreamStates(): Promise<DashboardState['upstreams']> {
    const out: DashboardState['upstreams'] = [];
    for (const u of this.deps.upstreams.values()) {
      const sources = await Promise.all(
        u.sources.map(async (s) => {
          const health = await this.deps.health.snapshot(s.healthKey);
          const state = u.offline ? 'offline' : health.coolDown ? 'cooling down' : health.breaker.openUntil !== null ? 'breaker open' : 'ok';
          const p = s.credentialProvider;
          const credentials = p
            ? { type: s.config.credentialSource?.type ?? 'basic', source: p.kind, fetches: p.fetches, failures: p.failures, lastError: p.failing ? CREDENTIALS_FAILED : null }
            : null;
          return { name: s.sourceName, url: s.config.url, state, health, credentials } as const;
        }),
      );
      out.push({ name: u.name, offline: u.offline, sources });
    }
    return out;
  }
}

/** The host's figures from every worker's: minutes summed, repositories added up, errors and downloads together. */
function mergeParts(parts: WorkerPart[]): {
  buckets: Bucket[];
  repositories: RepositoryActivity[];
  errors: RecentError[];
  downloads: DownloadState[];
  unverified: UnverifiedImage[];
  workers: WorkerRow[];
} {
  const minutes = new Map<number, Bucket>();
  for (const p of parts) {
    for (const b of p.buckets) {
      const m = minutes.get(b.at) ?? emptyBucket(b.at);
      m.fromStore += b.fromStore;
      m.fetched += b.fetched;
      m.storeBytes += b.storeBytes;
      m.upstreamBytes += b.upstreamBytes;
      m.requests += b.requests;
      m.errors += b.errors;
      minutes.set(b.at, m);
    }
  }
  const buckets = [...minutes.values()].sort((a, b) => a.at - b.at).slice(-Math.max(...parts.map((p) => p.buckets.length)));
  const repositories = new Map<string, RepositoryActivity>();
  for (const p of parts) {
    for (const r of p.repositories) {
      const m = repositories.get(r.repository);
      repositories.set(r.repository, m ? { repository: r.repository, pulls: m.pulls + r.pulls, bytes: m.bytes + r.bytes, lastAt: Math.max(m.lastAt, r.lastAt) } : { ...r });
    }
  }
  const errors = parts.flatMap((p) => p.errors).sort((a, b) => b.at - a.at).slice(0, 50);
  // A download a worker holds and another follows is one download.
  const downloads = new Map<string, DownloadState>();
  for (const d of parts.flatMap((p) => p.downloads)) {
    const m = downloads.get(d.digest);
    downloads.set(
      d.digest,
      m
        ? { ...m, written: Math.max(m.written, d.written), size: m.size ?? d.size, followers: m.followers + d.followers, attempts: Math.max(m.attempts, d.attempts), startedAt: Math.min(m.startedAt, d.startedAt) }
        : { ...d },
    );
  }
  // One manifest served unverified by several workers: its counts added, its first and last times.
  const unverified = new Map<string, UnverifiedImage>();
  for (const u of parts.flatMap((p) => p.unverified)) {
    const key = unverifiedKey(u);
    const m = unverified.get(key);
    unverified.set(
      key,
      m ? { ...(u.lastAt > m.lastAt ? u : m), firstAt: Math.min(m.firstAt, u.firstAt), lastAt: Math.max(m.lastAt, u.lastAt), count: m.count + u.count } : { ...u },
    );
  }
  const workers = parts
    .map((p) => ({ worker: p.worker, pid: p.pid, startedAt: p.startedAt, rssBytes: p.rssBytes, heapUsedBytes: p.heapUsedBytes, requests: p.buckets.reduce((n, b) => n + b.requests, 0), downloads: p.downloads.length }))
    .sort((a, b) => Number(a.worker) - Number(b.worker));
  return {
    buckets,
    repositories: [...repositories.values()],
    errors,
    downloads: [...downloads.values()],
    unverified: [...unverified.values()].sort((a, b) => b.lastAt - a.lastAt).slice(0, MAX_UNVERIFIED),
    workers,
  };
}
