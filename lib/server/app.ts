/**
 * Builds every dependency from a Config and wires them into a server that is not yet listening.
 * Used by `stevedore serve` and by the tests (which listen on port 0).
 */
import type http from 'node:http';
import type https from 'node:https';
import type { AddressInfo, ListenOptions } from 'node:net';
import type { Logger } from 'pino';
import { createLogger } from './logger.js';
import { ConfigError, type Config } from '../config/config.js';
import type { Store } from '../storage/store.js';
import { openStore } from '../storage/open-store.js';
import { LeaseHolderClient } from '../cluster/holder-stream.js';
import { Metadata } from '../metadata/metadata.js';
import { UpstreamSources } from '../upstream/upstream-sources.js';
import { PullThrough, type Clock } from '../cache/pull-through.js';
import { UpstreamHealth } from '../metadata/upstream-health.js';
import { createServer, newHttpServer } from './create-server.js';
import { Metrics } from './metrics.js';
import { Auth } from './auth/auth.js';
import { canonicalRepository } from './auth/authorize-route.js';
import { Registry } from '../registry/registry.js';
import { HostedNames } from '../registry/hosted.js';
import { ProxiedReferrers } from '../cache/referrers.js';
import { SignaturePolicies } from '../verify/policies.js';
import { SignatureGate } from '../verify/signature-gate.js';
import { hostname } from 'node:os';
import type { ClusterCoordinator, CoordinationScope } from '../cluster/coordinator.js';
import { configuredCoordinator, openCoordinator } from '../cluster/coordinators.js';
import { callPrimary, workerSlot } from '../cluster/ipc/coordinator.js';

import { SharedIndex } from '../cluster/shared-index.js';
import { ClusterSessionLocks } from '../cluster/session-locks.js';
import { NodePeers } from '../cluster/peers.js';
import { isTagMoved } from '../cluster/coordinator.js';
import { NodePreheat } from '../cache/preheat.js';
import { PreheatEndpoint } from './preheat-endpoint.js';
import { PeerRequestAuth } from '../cluster/peer-auth.js';
import { PeerNetworks } from '../cluster/peer-networks.js';
import type { Dashboard } from './dashboard/dashboard.js';
import { closingReserve, ShutdownDeadline } from './shutdown.js';
import { IdleMemory, returnMemory } from './idle-memory.js';
import { readFile } from 'node:fs/promises';
import { ClientCertificates, type ClientAuthMode } from './auth/client-certificate.js';
import { CertificateReloader, readTlsPair, TlsFileError, warnIfOutOfDate, type TlsPair } from './tls-certificate.js';
import pino from 'pino';
import { Acts, stableActId } from '../events/acts.js';
import { AuditLog } from '../events/audit-log.js';
import { WebhookDispatcher } from '../events/webhooks.js';
import { setTracer } from '../util/tracing.js';

/** How often a worker's followers look at a download another worker of the host holds (the IPC coordinator). */
const IPC_POLL_MS = 20;

const SNAPSHOT_INTERVAL_MS = 5 * 60_000;
/** Cluster mode: temp files untouched this long are another replica's leftovers (swept at start-up). */
const SHARED_TEMP_MAX_AGE_MS = 3_600_000;

export interface App {
  server: http.Server;
  store: Store;
  metadata: Metadata;
  pull: PullThrough;
  /** Hosted repositories and pushes. */
  registry: Registry;
  /** Referrers of proxied repositories, cached per subject. */
  referrers: ProxiedReferrers;
  upstreams: ReadonlyMap<string, UpstreamSources>;
  log: Logger;
  metrics: Metrics;
  /** What this process coordinates with: the configured coordinator (Redis), else this process alone. */
  coordinator: ClusterCoordinator;
  /** Cluster mode (a shared coordinator, no node.peers): the coordination this replica takes part in; null alone. */
  cluster: { coordinator: ClusterCoordinator; scope: CoordinationScope; index: SharedIndex; replicaId: string; storeId: string; prefix: string } | null;
  /** Node mode with peers (node.peers): the directory and transfers between node instances; else null. */
  peers: NodePeers | null;
  /** Node mode with peers: this node's side of pre-heat (warm marks), started by `listen`; else null. */
  preheat: NodePreheat | null;
  /** Warm marks can be made here (a Redis coordinator: metadata.redis); else null. */
  preheatMarks: PreheatEndpoint | null;
  /** `https` when config `tls` is set (the server is then an https.Server), else `http`. */
  scheme: 'http' | 'https';
  /** HTTPS: the certificate served and its reloading; null over plain HTTP. */
  tls: CertificateReloader | null;
  /** Signature policies (config verify), checked before manifests are served. */
  signatures: SignatureGate;
  /** Who did what (lib/events): the audit log and the webhooks listen here. */
  acts: Acts;
  /**
   * Reads a `verify` section again (SIGHUP in `serve`): its key files and trusted roots are read,
   * and on success it replaces the policies in force; on a ConfigError the old ones stay.
   */
  reloadSignaturePolicies(verify: Config['verify']): Promise<void>;
  /** Listens (and on config peerListen, when set); resolves with the main bound address. */
  listen(port?: number, host?: string): Promise<AddressInfo>;
  /** Where the peer endpoint listens on its own (config peerListen), once listening; else null. */
  peerAddress(): AddressInfo | null;
  /** Stops accepting, lets answers in flight and downloads finish, closes everything: resolves within `graceMs` whatever is down (rule 11, server/shutdown.ts). */
  close(graceMs?: number): Promise<void>;
}

// The logger lives in logger.ts (the supervisor of workers uses it without loading the app).
export { createLogger, logDestination } from './logger.js';

/**
 * `sweepTemp: false` is for CLI commands that work on the store beside a running server: they
 * must not delete its downloads in progress.
 */
export async function buildApp(config: Config, opts: { log?: Logger; clock?: Clock; sweepTemp?: boolean } = {}): Promise<App> {
  const log = opts.log ?? createLogger(config.log.level);
  const clock = opts.clock ?? { now: () => Date.now() };
  const hosted = new HostedNames(config.registry.hosted);
  // First, so that an unreadable htpasswd or key file stops start-up before anything is opened.
  // Token scopes carry no ns: a name resolves as a request path without ?ns= would.
  const canonicalName = (name: string): string | null => {
    try {
      return canonicalRepository(name, null, config, hosted);
    } catch {
      return null;
    }
  };
  // Client certificates as identities (tls.clientCA): on the main listener only; peerListen asks for none.
  const clientAuth = config.tls !== null && config.tls.clientAuth !== 'off' ? config.tls : null;
  const certificates = clientAuth ? new ClientCertificates(clientAuth.clientAuth as ClientAuthMode, clientAuth.clientIdentity) : null;
  const auth = await Auth.create({ config: config.auth, log, clock, canonicalName, upstreams: [...config.upstreams.keys()], certificates });
  // The files read (and re-read): the client CA bundle only when client certificates are asked for.
  const tlsFiles = config.tls ? { ...config.tls, clientCA: clientAuth ? config.tls.clientCA : null } : null;
  const tlsPair = tlsFiles ? await loadTls(tlsFiles, log) : null;
  // Signature policies: an unreadable key or trusted root stops start-up here, naming its key.
  const signaturePolicies = await SignaturePolicies.load(config.verify);
  // Node mode: Redis is the peers' directory, and each node's store is its own (never shared by
  // replicas), so the store is not coordinated as a cluster's.
  const nodePeers = config.node.peers;
  // Cluster mode: a coordinator other processes share (Redis: metadata.redis) and no node tier.
  const shared = configuredCoordinator(config);
  const clustered = shared !== null && nodePeers === null;
  // In cluster mode eviction is decided for the whole store by one replica (SharedIndex), never by
  // each replica's partial index.
  const store = await openStore(config.storage, { maxSize: clustered ? null : config.storage.maxSize, log });
  // Replicas whose backend shares no temp files (a bucket) share no disk: a download in progress
  // is streamed from its holder.
  const holdersStream = clustered && !store.blobs.sharesDownloads;
  // The workers of one host on such a backend (server.workers, no Redis): each serves the downloads
  // it holds to the others on a loopback port of its own, requests signed with a secret the
  // supervisor made; cluster.advertise (one address for every worker, behind which the port hands
  // connections out round-robin) would reach the holder only by chance.
  const workerHolders = holdersStream && shared?.name === 'ipc' ? await loopbackPeerEndpoint(config) : null;
  if (workerHolders) log.info({ peerEndpoint: workerHolders.url }, 'workers: the downloads this worker holds are streamed to the other workers from a loopback port of its own (the backend shares no temp files)');
  if (holdersStream && !workerHolders && (config.cluster.advertise === null || config.cluster.token === null)) {
    await store.blobs.close().catch(() => undefined);
    throw new ConfigError(
      ['cluster mode on the S3 backend needs cluster.advertise (this replica\'s URL, e.g. http://${POD_IP}:5000) and cluster.token (a secret shared by the replicas): replicas share no disk, so the clients of one stream a download in progress from the replica holding it'],
      'configuration',
    );
  }
  if (config.peerListen !== null && nodePeers === null && !holdersStream) {
    await store.blobs.close().catch(() => undefined);
    throw new ConfigError(['peerListen: there is no peer endpoint to serve (it needs node.peers, or cluster mode on the S3 backend)'], 'configuration');
  }
  const recovered = await store.init({
    sweep: opts.sweepTemp !== false,
    ...(clustered ? { sweepOlderThanMs: SHARED_TEMP_MAX_AGE_MS } : {}),
    // Between reading the index snapshot and listing the store: memory given back (not counted
    // in the metrics' returns: the start-up return after it is).
    ...(config.server.idleMemoryReturn !== null ? { settle: settleMemory } : {}),
  });
  if (recovered.sweptTempFiles) log.info({ sweptTempFiles: recovered.sweptTempFiles }, 'removed temp files of interrupted downloads');
  log.info({ blobs: recovered.blobs, bytes: recovered.bytes, ms: recovered.ms, ...store.blobs.stats() }, 'store index rebuilt');
  if (config.storage.maxSize === null && opts.sweepTemp !== false) log.warn('storage.maxSize is not set: the store grows without bound');
  let cluster: App['cluster'] = null;
  // server.workers above 1: this process is one of the host's workers (its slot), else null.
  const slot = workerSlot();
  const coordinator = await openCoordinator(config, log);
  if (shared !== null && !clustered) {
    log.info({ redis: coordinator.target, group: nodePeers?.group, advertise: nodePeers?.advertise, redisUp: coordinator.available() }, 'node mode: finding peers through Redis');
  }
  if (clustered) {
    const storeId = await store.blobs.storeId();
    const prefix = `stevedore:${storeId}:`;
    const scope = coordinator.scope(prefix);
    // Each worker of a host is a replica of its own (a configured replicaId gets the worker's slot).
    const replicaId = config.cluster.replicaId === null ? `${hostname()}-${process.pid}` : slot === null ? config.cluster.replicaId : `${config.cluster.replicaId}-w${slot}`;
    const index = new SharedIndex(scope.index, scope.leases, store.blobs, log, {
      maxSize: config.storage.maxSize,
      recencyFlushMs: config.cluster.recencyFlush,
      evictionIntervalMs: config.cluster.evictionInterval,
      leaseTtlMs: config.cluster.leaseTTL,
    });
    store.blobs.observer = index;
    index.start();
    // A backend may ask whether a replica holds a digest's lease (S3: orphan sweeps leave those uploads alone).
    store.blobs.coordinate({ downloadingElsewhere: async (digest) => (await scope.leases.read(`blob:${digest}`)) !== null });
    cluster = { coordinator, scope, index, replicaId, storeId, prefix };
    if (coordinator.name === 'ipc') log.info({ coordinator: coordinator.target, storeId, replicaId, worker: slot }, 'workers: coordinating with the other workers on this store through the supervisor');
    else log.info({ redis: coordinator.target, storeId, replicaId, redisUp: coordinator.available() }, 'cluster mode: coordinating with the replicas on this store through Redis');
  }
  const metadata = new Metadata(coordinator.values);
  // Traces (config tracing): the OpenTelemetry SDK is loaded only when they are on (rule 12).
  const tracer = config.tracing.enabled ? new (await import('./otel-tracer.js')).OtelTracer(config.tracing, await packageVersion()) : null;
  if (tracer) {
    setTracer(tracer);
    // The endpoint, not the headers: they may carry a collector's API key.
    log.info({ endpoint: config.tracing.endpoint, serviceName: config.tracing.serviceName, sampleRatio: config.tracing.sampleRatio }, 'tracing: exporting spans over OTLP/HTTP');
  }
  // Who did what (lib/events): one emission point; the audit log and the webhooks subscribe below.
  const acts = new Acts(log, () => clock.now());
  const p = config.upstreamPolicy;
  const health = new UpstreamHealth(
    metadata,
    {
      retryAfterDefaultMs: p.retryAfterDefault,
      breakerFailures: p.breakerFailures,
      breakerOpenMs: p.breakerOpenFor,
      quotaLowWatermark: p.quotaLowWatermark,
    },
    () => clock.now(),
  );
  const upstreams = new Map<string, UpstreamSources>();
  for (const u of config.upstreams.values()) upstreams.set(u.name, new UpstreamSources(u, log, health));
  let peers: NodePeers | null = null;
  if (nodePeers && shared !== null) {
    peers = new NodePeers(
      coordinator,
      {
        self: nodePeers.advertise,
        auth: new PeerRequestAuth(nodePeers.token, nodePeers.advertise, 'node.peers.token'),
        networks: new PeerNetworks(nodePeers.allowedNetworks, 'node.peers.allowedNetworks', log),
        group: nodePeers.group,
        ttlMs: nodePeers.ttl,
        badForMs: nodePeers.badFor,
        timeouts: nodePeers.timeouts,
        downloading: (digest) => pull.isDownloading(digest),
        stored: () => storedDigests(store),
      },
      log.child({ peers: nodePeers.group }),
    );
    store.blobs.observer = peers;
    for (const u of upstreams.values()) u.usePeers(peers);
    // What this node already holds (from before a restart) is findable at once.
    await peers.announce([...storedDigests(store)]).catch((err: unknown) => log.warn({ err }, 'could not announce stored blobs to the peers'));
  }
  // Who this replica's peer requests are signed as and which addresses it asks: the workers' own
  // loopback endpoints, or cluster.advertise / cluster.token / cluster.allowedNetworks.
  const holderPeers = workerHolders
    ? { secret: workerHolders.secret, self: workerHolders.url, setting: 'the supervisor\'s secret for its workers', networks: ['127.0.0.1/32'], networksSetting: 'the workers\' loopback addresses' }
    : holdersStream
      ? { secret: config.cluster.token!, self: config.cluster.advertise!, setting: 'cluster.token', networks: config.cluster.allowedNetworks, networksSetting: 'cluster.allowedNetworks' }
      : null;
  const leaseHolders = holderPeers
    ? new LeaseHolderClient(
        new PeerRequestAuth(holderPeers.secret, holderPeers.self, holderPeers.setting),
        new PeerNetworks(holderPeers.networks, holderPeers.networksSetting, log),
        { connectTimeoutMs: config.timeouts.connect, idleTimeoutMs: Math.max(config.timeouts.firstByte, config.timeouts.stall) },
        log,
      )
    : null;
  const pull = new PullThrough({
    store,
    metadata,
    log,
    manifestMaxSize: config.cache.manifestMaxSize,
    download: { finishAbandoned: config.cache.finishAbandonedDownloads, maxResumes: config.cache.downloadResumes },
    health,
    quotaTTLMultiplier: p.quotaTTLMultiplier,
    limits: config.cache,
    refreshAhead: config.cache.refreshAhead,
    clock,
    // Upstream facts as acts (webhooks). An upstream fact several replicas may each see gets an id
    // that names the fact, so the cluster sends its event once (lib/events/webhooks.ts).
    events: {
      tagMoved: (upstream, name, tag, from, to) =>
        acts.emit({ id: stableActId('tag.moved', upstream, name, tag, from, to), type: 'tag.moved', repository: `${upstream}/${name}`, tag, digest: to, previousDigest: from }),
      gone: (upstream, name, ref, reason) =>
        acts.emit({ id: stableActId('image.gone', upstream, name, ref.tag ?? '', ref.digest ?? ''), type: 'image.gone', repository: `${upstream}/${name}`, ...ref, reason }),
      verificationFailed: (upstream, name, digest, reason) => acts.emit({ type: 'download.verification-failed', repository: `${upstream}/${name}`, digest, reason }),
    },
    cluster: cluster
      ? {
          coordinator: cluster.scope.leases,
          replicaId: cluster.replicaId,
          leaseTtlMs: config.cluster.leaseTTL,
          // The workers of one host ask the supervisor over IPC (microseconds, no Redis round trip):
          // their followers look more often, so that a client on another worker than the download's
          // gets its first byte within a few tens of milliseconds of the bytes reaching the disk.
          pollMs: cluster.coordinator.name === 'ipc' ? Math.min(config.cluster.pollInterval, IPC_POLL_MS) : config.cluster.pollInterval,
          // Longer than a holder may legitimately wait for the upstream's first byte or a resume.
          noProgressMs: Math.max(config.timeouts.firstByte, config.timeouts.stall) + 2 * config.cluster.leaseTTL,
          onEvent: (what) => metrics.clusterEvent(what),
          onTagMoved: (upstream, name, tag) => cluster!.scope.bus.publish({ from: cluster!.replicaId, upstream, name, tag }),
          ...(leaseHolders ? { holders: leaseHolders } : {}),
        }
      : null,
  });
  if (cluster) {
    await cluster.scope.bus.subscribe((m) => {
      // Its own message: this replica already forgot the tag. (Warm marks are the node tier's.)
      if (!isTagMoved(m) || m.from === cluster!.replicaId) return;
      void pull.forgetTag(m.upstream, m.name, m.tag, { fromPeer: true });
    });
  }
  const registry = new Registry(store, {
    manifestMaxSize: config.cache.manifestMaxSize,
    manifestMaxReferences: config.cache.manifestMaxReferences,
    pushUpstreamChecks: config.registry.pushUpstreamChecks,
    uploadMaxAge: config.registry.uploadMaxAge,
    uploadLimits: {
      maxSize: config.registry.uploadMaxSize,
      maxSessions: config.registry.maxUploadSessions,
      maxSessionsPerOwner: config.registry.maxUploadSessionsPerUser,
      quotaPerOwner: config.registry.uploadQuotaPerUser,
    },
    log,
    now: () => clock.now(),
    sessionLocks: cluster ? new ClusterSessionLocks(cluster.scope.leases, { leaseTtlMs: config.cluster.leaseTTL, waitMs: 30_000, pollMs: 50 }) : null,
  });
  await registry.start();
  const referrers = new ProxiedReferrers({ store, log, clock, manifestMaxSize: config.cache.manifestMaxSize });
  // The index snapshot makes the next start fast; kept fresh while serving, written again at close.
  const snapshotTimer = setInterval(() => {
    store.blobs.saveSnapshot().catch((err: unknown) => log.warn({ err }, 'could not save the index snapshot'));
  }, SNAPSHOT_INTERVAL_MS);
  snapshotTimer.unref();
  let ready = true;
  // A worker's /metrics answers for the host: the supervisor sums every worker's.
  const metrics = new Metrics({ store: store.blobs, pull, upstreams, cluster, peers, worker: slot === null ? null : { id: slot, host: () => callPrimary<string>('metrics.host') } });
  // The audit log: a file of its own (one per worker), or the log's own destination (stdout) with "log":"audit".
  const audit = config.audit.enabled
    ? new AuditLog({
        file: config.audit.file === null ? null : slot === null ? config.audit.file : `${config.audit.file}-w${slot}`,
        maxSize: config.audit.maxSize,
        maxFiles: config.audit.maxFiles,
        log,
        onLine: (outcome) => metrics.auditLine(outcome),
        stdout: logStream(log),
      })
    : null;
  if (audit) acts.subscribe(audit.consume);
  const webhooks = config.webhooks.endpoints.length
    ? new WebhookDispatcher({
        config: config.webhooks,
        log,
        // A delivery is claimed through what the processes share: the cluster's scope (replicas,
        // workers), or in node mode the Redis the node instances share (an upstream fact several
        // instances see alike is then sent once too); alone, nothing to claim.
        leases: cluster ? cluster.scope.leases : shared !== null ? coordinator.scope('stevedore:webhooks:').leases : null,
        onDelivery: (outcome) => metrics.webhookDelivery(outcome),
      })
    : null;
  if (webhooks) acts.subscribe(webhooks.consume);
  let dashboard: Dashboard | null = null;
  const signatures = new SignatureGate({
    policies: signaturePolicies,
    log,
    onVerdict: (result) => metrics.signatureVerification(result),
    onServedUnverified: (served) => dashboard?.activity.recordUnverified(served),
  });
  if (config.dashboard.enabled) {
    // Loaded only when enabled (docs/ARCHITECTURE.md: a module a configuration does not use is not loaded).
    const { Dashboard } = await import('./dashboard/dashboard.js');
    try {
      dashboard = await Dashboard.create({
        config,
        store: store.blobs,
        pull,
        upstreams,
        health,
        cluster,
        peers,
        version: await packageVersion(),
        now: () => clock.now(),
        verifyWarns: () => signatures.warns(),
        // A worker's dashboard shows the host: every worker's figures, merged.
        worker: slot === null ? null : { id: slot, collect: () => callPrimary<unknown[]>('collect', ['dashboard']) },
      });
    } catch (err) {
      // A packaging mistake (assets/ not shipped beside dist/): the registry serves on without its page.
      log.error({ err }, 'the dashboard is off: its files (assets/dashboard) are missing beside the code; reinstall or rebuild the image');
    }
  }
  // Pre-heat (lib/cache/preheat.ts): marks are made wherever the node group's Redis is configured;
  // a node instance warms what they name once it listens.
  const preheatMarks =
    shared !== null
      ? new PreheatEndpoint({
          scope: (group) => coordinator.scope(`stevedore:peers:${group}:`),
          available: () => coordinator.available(),
          defaultGroup: nodePeers?.group ?? 'default',
          pull,
          upstreams,
          log,
        })
      : null;
  const preheat =
    peers && nodePeers
      ? new NodePreheat({
          scope: coordinator.scope(`stevedore:peers:${nodePeers.group}:`),
          available: () => coordinator.available(),
          self: nodePeers.advertise,
          pull,
          upstreams,
          blobs: store.blobs,
          log: log.child({ preheat: nodePeers.group }),
        })
      : null;
  // Memory given back after start-up and busy spells (config server.idleMemoryReturn).
  const idleMemory =
    config.server.idleMemoryReturn !== null
      ? new IdleMemory({
          quietMs: config.server.idleMemoryReturn,
          busy: () => pull.downloadsInFlight() > 0,
          log,
          onReturn: (r) => metrics.returnedMemory(r.reason, r.rss[0], r.rss[1]),
        })
      : null;
  const serverDeps = { idleMemory, config, pull, registry, hosted, referrers, signatures, upstreams, log, auth, metrics, peers, clusterPeers: leaseHolders, dashboard, acts, preheat: preheatMarks, isReady: () => ready };
  // config peerListen: the peer endpoint on a listener of its own, and only there (its requests are
  // signed: it asks for no client certificate).
  const peerServer = config.peerListen !== null ? createServer({ ...serverDeps, tls: tlsPair ? { cert: tlsPair.cert, key: tlsPair.key } : null, peerRoute: 'only' }) : null;
  const server = createServer({ ...serverDeps, tls: tlsPair, peerRoute: peerServer || workerHolders ? 'elsewhere' : 'here' });
  // The workers' loopback peer endpoint (bound above, before its address was published): plain
  // HTTP on 127.0.0.1, every request signed.
  if (workerHolders) createServer({ ...serverDeps, tls: null, peerRoute: 'only', server: workerHolders.server });
  let tls: CertificateReloader | null = null;
  let peerTls: CertificateReloader | null = null;
  if (tlsFiles && tlsPair) {
    tls = new CertificateReloader(server as https.Server, tlsFiles, tlsPair, log, tlsFiles.reloadInterval);
    tls.start();
    if (peerServer) {
      peerTls = new CertificateReloader(peerServer as https.Server, tlsFiles, tlsPair, log, tlsFiles.reloadInterval);
      peerTls.start();
    }
  }
  // Every listener, for closing.
  const servers = [server, ...(peerServer ? [peerServer] : []), ...(workerHolders ? [workerHolders.server] : [])];
  let peerAddress: AddressInfo | null = null;
  return {
    scheme: tls ? 'https' : 'http',
    tls,
    server,
    store,
    metadata,
    pull,
    registry,
    referrers,
    upstreams,
    log,
    metrics,
    coordinator,
    cluster,
    peers,
    preheat,
    preheatMarks,
    signatures,
    acts,
    async reloadSignaturePolicies(verify) {
      signatures.reload(await SignaturePolicies.load(verify));
      acts.emit({ type: 'config.reloaded', reason: 'signature policies (verify) read again' });
    },
    async listen(port = config.listen.port, host = config.listen.host) {
      // Start-up's garbage collected and the heap shrunk before the first request can wait for it.
      idleMemory?.start();
      const addr = await listenOn(server, { port, host });
      if (peerServer && config.peerListen) peerAddress = await listenOn(peerServer, { port: config.peerListen.port, host: config.peerListen.host });
      // A node instance that serves warms what the marks name (a CLI command on the store does not).
      preheat?.start();
      return addr;
    },
    peerAddress: () => peerAddress,
    async close(graceMs = 10_000) {
      // Rule 11: every step below is bounded by the grace period (lib/server/shutdown.ts).
      const deadline = new ShutdownDeadline(graceMs, log);
      ready = false;
      clearInterval(snapshotTimer);
      idleMemory?.stop();
      tls?.stop();
      peerTls?.stop();
      registry.stop();
      const closed = Promise.all(servers.map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))));
      // A keep-alive connection goes as soon as its answer in flight is done (not at the end of the
      // grace period): the process exits once nothing is left to finish.
      const closeIdle = (): void => {
        for (const srv of servers) srv.closeIdleConnections();
      };
      closeIdle();
      const idleSweep = setInterval(closeIdle, 100);
      const drained = await ShutdownDeadline.within(Promise.all([closed, pull.drain()]), graceMs - closingReserve(graceMs));
      clearInterval(idleSweep);
      if (!drained) log.warn({ graceMs, downloads: pull.downloadsInFlight() }, 'shutdown: answers or downloads still running at the end of the grace period are cut');
      for (const srv of servers) srv.closeAllConnections();
      // Cluster mode: what this replica still downloads is left for another to resume.
      await deadline.step('hand downloads over', () => pull.handOver());
      // Upstream work still running past the grace period (a stalled download, a tag list) is
      // aborted, and the downloads it cut are let settle (their temp files removed).
      await deadline.step('close upstream connections', () => Promise.all([...upstreams.values()].map((u) => u.close().catch(() => undefined))));
      await deadline.step('let cut downloads settle', () => pull.drain(), 2_000);
      await deadline.step('flush the shared index', () => cluster?.index.stop().catch(() => undefined) ?? Promise.resolve());
      await deadline.step('stop pre-heat', () => preheat?.close().catch(() => undefined) ?? Promise.resolve());
      await deadline.step('close peer connections', () => peers?.close().catch(() => undefined) ?? Promise.resolve());
      await deadline.step('close lease holders', () => leaseHolders?.close() ?? Promise.resolve());
      await deadline.step('close the coordinator', () => coordinator.close().catch(() => undefined));
      await deadline.step('close auth', () => auth.close());
      await deadline.step('close webhooks', () => webhooks?.close() ?? Promise.resolve());
      await deadline.step('flush the audit log', () => audit?.close() ?? Promise.resolve());
      // Best effort, and bounded: a collector that is down (the exporter retries) costs 2 s at most.
      await deadline.step(
        'export the last spans',
        async () => {
          if (!tracer) return;
          setTracer(null);
          await tracer.shutdown().catch((err: unknown) => log.warn({ err }, 'tracing: exporting the last spans failed'));
        },
        2_000,
      );
      await deadline.step('save the index snapshot', () => store.blobs.saveSnapshot().catch((err: unknown) => log.warn({ err }, 'could not save the index snapshot')));
      await deadline.step('close the store', () => store.blobs.close().catch((err: unknown) => log.warn({ err }, 'closing the store failed')));
      if (!drained || deadline.undone.length) log.warn({ graceMs, undone: deadline.undone, drained }, 'shutdown: not everything was drained or closed within the grace period (see above)');
    },
  };
}

/** The certificate and key of config `tls`, checked; a bad file stops start-up (exit 2, naming its key). */
async function loadTls(files: NonNullable<Config['tls']>, log: Logger): Promise<TlsPair> {
  try {
    const pair = await readTlsPair(files);
    const clients = pair.clientCA ? { clientAuth: files.clientAuth, clientIdentity: files.clientIdentity, clientCAs: pair.clientCAs } : {};
    log.info({ tls: pair.info, reloadInterval: files.reloadInterval, ...clients }, 'TLS certificate loaded');
    warnIfOutOfDate(pair, log);
    return pair;
  } catch (err) {
    const errors = err instanceof AggregateError ? (err.errors as Error[]) : [err as Error];
    if (errors.every((e) => e instanceof TlsFileError)) throw new ConfigError(errors.map((e) => e.message), 'tls files');
    throw err;
  }
}

/** stevedore's version, from its package.json (beside lib/ and dist/). */
async function packageVersion(): Promise<string> {
  try {
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

/** The destination the logger writes to (pino's stream), for audit lines beside the access log. */
function logStream(log: Logger): NodeJS.WritableStream | undefined {
  const stream = (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as { write?: unknown } | undefined;
  return stream && typeof stream.write === 'function' ? (stream as NodeJS.WritableStream) : undefined;
}

/** The digests in the store's index (what a node instance holds and announces). */
function* storedDigests(store: Store): Generator<string> {
  yield* store.blobs.digests();
}

/**
 * A worker's own peer endpoint on a backend whose downloads are not shared files (S3): a plain
 * HTTP server bound to 127.0.0.1 on a port of its own (`exclusive`: not the port node:cluster hands
 * out), and the secret every worker signs with, asked from the supervisor.
 */
async function loopbackPeerEndpoint(config: Config): Promise<{ server: http.Server; url: string; secret: string }> {
  const secret = await callPrimary<string>('workers.peerSecret');
  if (typeof secret !== 'string' || secret.length < 32) throw new Error('the supervisor gave no secret for the workers\' peer endpoint');
  const server = newHttpServer(config);
  const { port } = await listenOn(server, { host: '127.0.0.1', port: 0, exclusive: true });
  return { server, url: `http://127.0.0.1:${port}`, secret };
}

function listenOn(srv: http.Server, options: ListenOptions): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(options, () => {
      srv.off('error', reject);
      resolve(srv.address() as AddressInfo);
    });
  });
}

/**
 * Memory given back during the store's start-up (BlobStore.init's settle). A runtime without V8's
 * gc options returns nothing here; IdleMemory says so when it starts.
 */
function settleMemory(): void {
  try {
    returnMemory('start-up');
  } catch {
    // IdleMemory.start warns.
  }
}
