/**
 * Prometheus metrics at `/metrics` (prom-client, one registry per app so tests do not share
 * counters). Labels are bounded: route kind, method, status, cache result, upstream name — never a
 * repository name or a digest.
 */
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ServerResponse } from 'node:http';
import type { BlobStore } from '../storage/blob-store.js';
import { sendBufferStats } from '../storage/send-buffers.js';
import type { PullThrough } from '../cache/pull-through.js';
import { RANGE_OUTCOMES } from '../cache/upstream-ranges.js';
import type { UpstreamSources } from '../upstream/upstream-sources.js';
import type { RefusalReason } from './connection-guard.js';
import type { ClusterCoordinator } from '../cluster/coordinator.js';
import type { SharedIndex } from '../cluster/shared-index.js';
import type { NodePeers, PeerEvent } from '../cluster/peers.js';

const PEER_EVENTS: readonly PeerEvent[] = ['fetched', 'not_found', 'failed', 'marked_bad', 'served'];

export const CLUSTER_EVENTS = ['remote_follow', 'takeover', 'alone'] as const;
export type ClusterEvent = (typeof CLUSTER_EVENTS)[number];

export const INTERNAL_ERROR_KINDS = ['request', 'unhandled_rejection', 'uncaught_exception'] as const;
export type InternalErrorKind = (typeof INTERNAL_ERROR_KINDS)[number];

export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'route' | 'method' | 'status' | 'cache'>;
  private readonly bytes: Counter<'route' | 'cache'>;
  private readonly duration: Histogram<'route'>;
  private readonly internalErrors: Counter<'kind'>;
  /** Requests being handled now (a handler that never ends would show here). */
  private readonly inFlight: Gauge;
  private readonly refused: Counter<'reason'>;
  private readonly memoryReturns: Counter<'reason'>;
  private readonly memoryReturned: Counter;
  private readonly signatures: Counter<'result'>;
  private readonly webhooks: Counter<'outcome'>;
  private readonly auditLines: Counter<'outcome'>;
  private readonly cluster: Counter<'event'> | null = null;
  private readonly worker: { id: string; host: () => Promise<string> } | null;
  private readonly workerRequests: Counter<'worker'> | null = null;

  constructor(deps: {
    store: BlobStore;
    pull: PullThrough;
    upstreams: ReadonlyMap<string, UpstreamSources>;
    cluster?: { coordinator: ClusterCoordinator; index: SharedIndex } | null;
    peers?: NodePeers | null;
    /**
     * One of the host's workers (server.workers above 1): its slot, the `worker` label of its own
     * figures, and how the host's figures are had (the supervisor sums every worker's).
     */
    worker?: { id: string; host: () => Promise<string> } | null;
  }) {
    const registers = [this.registry];
    this.worker = deps.worker ?? null;
    collectDefaultMetrics({ register: this.registry, prefix: 'stevedore_' });
    this.requests = new Counter({
      name: 'stevedore_http_requests_total',
      help: 'Requests answered, by route kind, method, status and cache result',
      labelNames: ['route', 'method', 'status', 'cache'],
      registers,
    });
    this.bytes = new Counter({
      name: 'stevedore_http_response_bytes_total',
      help: 'Body bytes sent to clients, by route kind and cache result',
      labelNames: ['route', 'cache'],
      registers,
    });
    this.duration = new Histogram({
      name: 'stevedore_http_request_duration_seconds',
      help: 'Time from request to the last byte of the answer',
      labelNames: ['route'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      registers,
    });
    this.internalErrors = new Counter({
      name: 'stevedore_internal_errors_total',
      help: 'Defects caught by the last-resort handlers (a request that failed unexpectedly, an unhandled rejection, an uncaught exception); anything above 0 is a bug to report',
      labelNames: ['kind'],
      registers,
    });
    for (const kind of INTERNAL_ERROR_KINDS) this.internalErrors.inc({ kind }, 0);
    this.signatures = new Counter({
      name: 'stevedore_signature_verifications_total',
      help: 'Signature checks of manifests under a verify policy (cached verdicts not counted): verified, unsigned, invalid, error (signatures could not be read)',
      labelNames: ['result'],
      registers,
    });
    for (const result of ['verified', 'unsigned', 'invalid', 'error']) this.signatures.inc({ result }, 0);
    this.webhooks = new Counter({
      name: 'stevedore_webhook_deliveries_total',
      help: 'Webhook deliveries (lib/events/webhooks.ts): delivered, retried (an attempt failed, another follows), failed (retries exhausted), dropped (the queue was full), skipped (another replica of the cluster sends it)',
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of ['delivered', 'retried', 'failed', 'dropped', 'skipped']) this.webhooks.inc({ outcome }, 0);
    this.auditLines = new Counter({
      name: 'stevedore_audit_lines_total',
      help: 'Audit log lines (lib/events/audit-log.ts): written, or dropped (the sink fell behind or cannot be written)',
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of ['written', 'dropped']) this.auditLines.inc({ outcome }, 0);
    this.refused = new Counter({
      name: 'stevedore_connections_refused_total',
      help: 'Client connections refused or cut by the server limits: max_connections, per_address (server.maxConnectionsPerAddress), slow_body (server.requestBodyTimeout)',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of ['max_connections', 'per_address', 'slow_body']) this.refused.inc({ reason }, 0);
    this.memoryReturns = new Counter({
      name: 'stevedore_memory_returns_total',
      help: 'Memory-reducing garbage collections run while idle (server.idleMemoryReturn): start-up, idle (after a busy spell)',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of ['start-up', 'idle']) this.memoryReturns.inc({ reason }, 0);
    this.memoryReturned = new Counter({
      name: 'stevedore_memory_returned_bytes_total',
      help: 'Resident memory given back by those collections (RSS before less after, when it shrank)',
      registers,
    });
    this.inFlight = new Gauge({
      name: 'stevedore_http_requests_in_flight',
      help: 'Requests being handled now, the one asking for /metrics included',
      registers,
    });
    new Gauge({
      name: 'stevedore_store_bytes',
      // The store's, whichever worker tells it: not summed over the workers.
      aggregator: 'max',
      help: 'Bytes in the store: cached (evictable) and pinned',
      labelNames: ['kind'],
      registers,
      collect() {
        const s = deps.store.stats();
        this.set({ kind: 'cached' }, s.cachedBytes);
        this.set({ kind: 'pinned' }, s.pinnedBytes);
      },
    });
    new Gauge({
      name: 'stevedore_store_blobs',
      // The store's, whichever worker tells it: not summed over the workers.
      aggregator: 'max',
      help: 'Blobs and manifests in the store: cached (evictable) and pinned',
      labelNames: ['kind'],
      registers,
      collect() {
        const s = deps.store.stats();
        this.set({ kind: 'cached' }, s.cachedCount);
        this.set({ kind: 'pinned' }, s.pinnedCount);
      },
    });
    new Gauge({
      name: 'stevedore_gone_tags',
      // The store's records, whichever worker tells it: not summed over the workers.
      aggregator: 'max',
      help: 'Cached tags their upstream deleted (404), kept and served from the store (cache.gonePolicies: keep); stevedore ls --gone lists them',
      registers,
      async collect() {
        this.set(await deps.pull.gone.count());
      },
    });
    new Gauge({
      name: 'stevedore_store_evictions_total',
      help: 'Blobs evicted to stay under storage.maxSize since start',
      registers,
      collect() {
        this.set(deps.store.evictions);
      },
    });
    // Counters kept by the store (storage/space-watch.ts), collected the way evictions are.
    new Gauge({
      name: 'stevedore_store_write_errors_total',
      help: 'Writes into the store refused since start, by reason: no_space (the disk full: a download or a push failed)',
      labelNames: ['reason'],
      registers,
      collect() {
        this.set({ reason: 'no_space' }, deps.store.space.noSpaceErrors);
      },
    });
    new Gauge({
      name: 'stevedore_store_disk_full',
      help: "1 while the store's disk is full (a write was refused for want of space and none has succeeded since), else 0",
      registers,
      collect() {
        this.set(deps.store.space.full ? 1 : 0);
      },
    });
    new Gauge({
      name: 'stevedore_downloads_in_flight',
      help: 'Upstream blob downloads in progress (each serves every client asking for that digest)',
      registers,
      collect() {
        this.set(deps.pull.downloadsInFlight());
      },
    });
    new Gauge({
      name: 'stevedore_upstream_blob_bytes_total',
      help: 'Blob bytes downloaded into the store for each upstream (from its sources and, in node mode, peers), counted when each download ends',
      labelNames: ['upstream'],
      registers,
      collect() {
        for (const name of deps.upstreams.keys()) this.set({ upstream: name }, deps.pull.fetchedBytes.get(name) ?? 0);
      },
    });
    new Gauge({
      name: 'stevedore_send_buffer_bytes',
      help: 'Memory of the buffers blob answers are sent through: in_use by transfers and by the latest bytes of downloads kept for their followers, pooled for reuse (released after 10 s unused)',
      labelNames: ['state'],
      registers,
      collect() {
        const s = sendBufferStats();
        this.set({ state: 'in_use' }, s.inUse);
        this.set({ state: 'pooled' }, s.pooled);
      },
    });
    const readAhead = deps.store.backend.readAheadStats?.bind(deps.store.backend);
    if (readAhead) {
      new Gauge({
        name: 'stevedore_s3_read_ahead_bytes',
        help: 'S3 backend: memory held by parts of large blobs read ahead of their clients (in_use), and its limit for the process (limit: storage.s3.readMemory)',
        labelNames: ['state'],
        registers,
        collect() {
          const s = readAhead();
          this.set({ state: 'in_use' }, s.inUse);
          this.set({ state: 'limit' }, s.limit);
        },
      });
    }
    const cluster = deps.cluster;
    if (cluster) {
      this.cluster = new Counter({
        name: 'stevedore_cluster_downloads_total',
        help: 'Cluster mode: blob misses followed from another replica (remote_follow), downloads taken over from a replica that died (takeover), downloads started without coordination because Redis was unreachable (alone)',
        labelNames: ['event'],
        registers,
      });
      for (const event of CLUSTER_EVENTS) this.cluster.inc({ event }, 0);
      // Workers coordinated by their supervisor (no Redis) have no Redis to report on.
      if (cluster.coordinator.name !== 'ipc') new Gauge({
        name: 'stevedore_redis_up',
        // With workers, each its own replica: 1 only while every worker reaches Redis.
        aggregator: 'min',
        help: 'Cluster mode: 1 while Redis answers, 0 while this replica (any of its workers) serves without it',
        registers,
        collect() {
          this.set(cluster.coordinator.available() ? 1 : 0);
        },
      });
      new Gauge({
        name: 'stevedore_cluster_store_bytes',
      // The store's, whichever worker tells it: not summed over the workers.
      aggregator: 'max',
        help: 'Cluster mode: bytes of cached (evictable) content in the shared store, as the cluster records them',
        registers,
        async collect() {
          if (cluster.coordinator.available()) this.set(await cluster.index.total().catch(() => 0));
        },
      });
      new Gauge({
        name: 'stevedore_cluster_evictions_total',
        help: 'Cluster mode: files this replica evicted for the cluster (while it held the eviction lease)',
        registers,
        collect() {
          this.set(cluster.index.evictions);
        },
      });
    }
    const peers = deps.peers;
    if (peers) {
      new Gauge({
        name: 'stevedore_peer_transfers_total',
        help: 'Node mode: blob transfers between node instances: fetched from a peer, not_found at the peer asked, failed (gone, refused, bad answer), marked_bad (a peer failed a transfer: gone, stalled, wrong bytes), served to a peer',
        labelNames: ['event'],
        registers,
        collect() {
          for (const event of PEER_EVENTS) this.set({ event }, peers.counts.get(event) ?? 0);
        },
      });
    }
    new Gauge({
      name: 'stevedore_source_requests_total',
      help: 'Requests sent to each source of each upstream (upstreams.*.sources; the registry itself when there is one source), by method and status (0: no answer)',
      labelNames: ['upstream', 'source', 'method', 'status'],
      registers,
      collect() {
        for (const client of deps.upstreams.values()) {
          for (const source of client.sources) {
            for (const [key, n] of source.requestCounts) {
              const [method, status] = key.split(' ') as [string, string];
              this.set({ upstream: client.name, source: source.sourceName, method, status }, n);
            }
          }
        }
      },
    });
    new Gauge({
      name: 'stevedore_source_credential_fetches_total',
      help: 'Credentials fetched for each source with a credential source (upstreams.*.credentials, passwordFile): the helper run, the cloud asked, the file read; result ok or failed',
      labelNames: ['upstream', 'source', 'type', 'result'],
      registers,
      collect() {
        for (const client of deps.upstreams.values()) {
          for (const source of client.sources) {
            const p = source.credentialProvider;
            const type = source.config.credentialSource?.type;
            if (!p || !type) continue;
            this.set({ upstream: client.name, source: source.sourceName, type, result: 'ok' }, p.fetches - p.failures);
            this.set({ upstream: client.name, source: source.sourceName, type, result: 'failed' }, p.failures);
          }
        }
      },
    });
    new Gauge({
      name: 'stevedore_tag_refreshes_ahead_total',
      help: 'Hot tags revalidated in the background before their TTL ended (cache.refreshAhead); skipped when the upstream cools down, its breaker is open or its quota is low',
      registers,
      collect() {
        this.set(deps.pull.refreshAhead?.started ?? 0);
      },
    });
    new Gauge({
      name: 'stevedore_upstream_requests_total',
      help: 'Requests sent to each upstream, by method and status (0: no answer)',
      labelNames: ['upstream', 'method', 'status'],
      registers,
      collect() {
        for (const client of deps.upstreams.values()) {
          for (const [key, n] of client.requestCounts) {
            const [method, status] = key.split(' ') as [string, string];
            this.set({ upstream: client.name, method, status }, n);
          }
        }
      },
    });
    new Gauge({
      name: 'stevedore_upstream_range_requests_total',
      help: 'Client ranges of blobs being downloaded that the download could not answer yet (lazy pulling), for each upstream, by outcome: served by a ranged upstream GET; else the range followed the download: over_bound (no ranged GET sent), ignored (the upstream answered 200), bad_range (a 206 for another range or length: the answer was cut), error',
      labelNames: ['upstream', 'outcome'],
      registers,
      collect() {
        for (const name of deps.upstreams.keys()) {
          const counts = deps.pull.ranges.outcomes(name);
          for (const outcome of RANGE_OUTCOMES) this.set({ upstream: name, outcome }, counts[outcome]);
        }
      },
    });
    const worker = this.worker;
    if (worker) {
      // The supervisor asks each worker for its figures (prom-client's cluster aggregation).
      AggregatorRegistry.setRegistries([this.registry]);
      new AggregatorRegistry();
      const labels = { worker: worker.id };
      this.workerRequests = new Counter({ name: 'stevedore_worker_http_requests_total', help: 'Requests answered by each worker (server.workers)', labelNames: ['worker'], registers });
      this.workerRequests.inc(labels, 0);
      new Gauge({
        name: 'stevedore_worker_resident_memory_bytes',
        help: 'Resident memory of each worker (server.workers)',
        labelNames: ['worker'],
        registers,
        collect() {
          this.set(labels, process.memoryUsage.rss());
        },
      });
      new Gauge({
        name: 'stevedore_worker_heap_used_bytes',
        help: 'V8 heap used by each worker (server.workers)',
        labelNames: ['worker'],
        registers,
        collect() {
          this.set(labels, process.memoryUsage().heapUsed);
        },
      });
      const inFlight = this.inFlight;
      new Gauge({
        name: 'stevedore_worker_requests_in_flight',
        help: 'Requests being handled now by each worker (server.workers)',
        labelNames: ['worker'],
        registers,
        async collect() {
          const v = (await inFlight.get()).values[0]?.value ?? 0;
          this.set(labels, v);
        },
      });
    }
  }

  clusterEvent(event: ClusterEvent): void {
    this.cluster?.inc({ event });
  }

  /** One signature check of a manifest (lib/verify/signature-gate.ts) and its result. */
  signatureVerification(result: 'verified' | 'unsigned' | 'invalid' | 'error'): void {
    this.signatures.inc({ result });
  }

  /** One webhook delivery's step (lib/events/webhooks.ts). */
  webhookDelivery(outcome: 'delivered' | 'retried' | 'failed' | 'dropped' | 'skipped'): void {
    this.webhooks.inc({ outcome });
  }

  /** One audit line written or dropped (lib/events/audit-log.ts). */
  auditLine(outcome: 'written' | 'dropped'): void {
    this.auditLines.inc({ outcome });
  }

  connectionRefused(reason: RefusalReason): void {
    this.refused.inc({ reason });
  }

  requestStarted(): void {
    this.inFlight.inc();
  }

  /** One collection of server.idleMemoryReturn (lib/server/idle-memory.ts). */
  returnedMemory(reason: 'start-up' | 'idle', rssBefore: number, rssAfter: number): void {
    this.memoryReturns.inc({ reason });
    if (rssBefore > rssAfter) this.memoryReturned.inc(rssBefore - rssAfter);
  }

  requestEnded(): void {
    this.inFlight.dec();
  }

  observe(route: string, method: string, status: number, cache: string | undefined, bytes: number, seconds: number): void {
    this.requests.inc({ route, method, status: String(status), cache: cache ?? 'none' });
    if (this.worker) this.workerRequests?.inc({ worker: this.worker.id });
    if (bytes > 0) this.bytes.inc({ route, cache: cache ?? 'none' }, bytes);
    this.duration.observe({ route }, seconds);
  }

  /** Counts a defect caught by a last-resort handler (lib/server/last-resort.ts). */
  internalError(kind: InternalErrorKind): void {
    this.internalErrors.inc({ kind });
  }

  /** The figures /metrics answers: this process's, or (a worker) the host's, every worker's summed. */
  async render(): Promise<string> {
    if (this.worker) return this.worker.host();
    return this.registry.metrics();
  }

  async send(res: ServerResponse, head: boolean): Promise<void> {
    const body = Buffer.from(await this.render());
    res.writeHead(200, { 'Content-Type': this.registry.contentType, 'Content-Length': String(body.length) });
    res.end(head ? undefined : body);
  }
}
