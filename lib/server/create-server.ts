/**
 * The HTTP edge: request → route → domain call → response. `createServer(deps)` returns an
 * http.Server (an https.Server when `deps.tls` is given) that is not listening; `main` (lib/cli)
 * decides where it listens.
 */
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import http from '../util/node-http.js';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import { parseReadReference } from '../oci/name.js';
import type { PullThrough, CacheResult, Target } from '../cache/pull-through.js';
import type { UpstreamSources } from '../upstream/upstream-sources.js';
import type { NodePeers } from '../cluster/peers.js';
import { PEER_BLOB_PATH, type PeerEndpoint } from '../cluster/peer-endpoint.js';
import { matchRoute, type ResolvedRepo, type Route } from './route.js';
import type { IdleMemory } from './idle-memory.js';
import { ConnectionGuard } from './connection-guard.js';
import { ANONYMOUS_OWNER } from '../storage/upload-store.js';
import type { Metrics } from './metrics.js';
import { checkRangeSyntax, sentRange, sendBlob } from './blob-response.js';
import { API_VERSION_HEADER, isMappedError, sendError, sendJson, sendManifest, toOciError, upstreamAnswer } from './respond.js';
import type { Registry } from '../registry/registry.js';
import { hostedRepo } from '../registry/registry.js';
import type { HostedNames } from '../registry/hosted.js';
import type { ProxiedReferrers } from '../cache/referrers.js';
import type { SignatureGate } from '../verify/signature-gate.js';
import { hostedSource, proxiedSource } from '../verify/signature-source.js';
import { fetchAndPin } from '../cache/seed.js';
import { assertProxied, refusal } from '../cache/repository-filter.js';
import type { RepoRef } from '../storage/repo-store.js';
import { actionFor, allowedMethods, type Action } from './actions.js';
import { resolveTarget, TargetResolver } from './target.js';
import { clientGone } from './client-gone.js';
import { TOKEN_PATH, type Auth, type AuthContext } from './auth/auth.js';
import { authorizeRoute } from './auth/authorize-route.js';
import { crossSiteRefusal, guardedWrite } from './auth/cross-site.js';
import { loggedPath } from './log-path.js';
import type { Dashboard } from './dashboard/dashboard.js';
import type { PreheatEndpoint } from './preheat-endpoint.js';
import type { ActFields, Acts } from '../events/acts.js';
import { activeTracer, type SpanAttributes, type SpanHandle } from '../util/tracing.js';
import { HOSTED_NAMESPACE } from '../storage/paths.js';
import {
  handleBlobDelete,
  handleManifestDelete,
  handleManifestPut,
  handleUpload,
  sendReferrers,
  serveCatalog,
  serveHostedBlob,
  serveHostedManifest,
  serveHostedTags,
  type PushContext,
} from './registry-handlers.js';

export interface ServerDeps {
  config: Config;
  pull: PullThrough;
  upstreams: ReadonlyMap<string, UpstreamSources>;
  log: Logger;
  /** Hosted repositories and pushes (lib/registry). */
  registry: Registry;
  /** Which names are hosted (config registry.hosted). */
  hosted: HostedNames;
  /** Referrers of proxied repositories. */
  referrers: ProxiedReferrers;
  /** Signature policies (config verify): checked before a manifest is served; absent or null: none. */
  signatures?: SignatureGate | null;
  /** Client authentication and access rules (lib/server/auth). */
  auth: Auth;
  /** Readiness: false until the store is initialised, and again while draining. */
  isReady: () => boolean;
  /** Prometheus metrics at /metrics; absent: no /metrics. */
  metrics?: Metrics;
  /** Told of every request, to return memory once they stop (config server.idleMemoryReturn); absent or null: not. */
  idleMemory?: IdleMemory | null;
  /** Node mode: the peers, served on PEER_BLOB_PATH; absent or null: no peer endpoint. */
  peers?: NodePeers | null;
  /** Cluster mode on the S3 backend: the other replicas, served on PEER_BLOB_PATH (holder-stream.ts). */
  clusterPeers?: PeerEndpoint | null;
  /**
   * Where the peer endpoint is served: on this listener with everything else ('here', the
   * default), on a listener of its own (config peerListen: 'elsewhere' on the main one, 'only' on
   * that one, which answers nothing else).
   */
  peerRoute?: 'here' | 'elsewhere' | 'only';
  /** A plain HTTP server made by newHttpServer (already bound) to answer on, instead of a new one; tls must be null. */
  server?: HttpServer;
  /**
   * HTTPS with this certificate and key (PEM); absent or null: plain HTTP. With `clientCA` the
   * server asks every client for a certificate and verifies it against that bundle, but lets the
   * handshake finish either way: the auth layer answers a missing or refused one (client-certificate.ts).
   */
  tls?: { cert: Buffer; key: Buffer; clientCA?: Buffer | null } | null;
  /** The dashboard at `/` (config dashboard.enabled); absent or null: none. */
  dashboard?: Dashboard | null;
  /** Who did what (lib/events): the one emission point of the audit log and the webhooks; absent or null: none. */
  acts?: Acts | null;
  /** Warm marks at /_stevedore/preheat (a coordinator shared with a node group: metadata.redis); absent or null: none. */
  preheat?: PreheatEndpoint | null;
}

/** What the access log line says about one request, filled in as it is handled. */
interface Outcome {
  cache?: CacheResult;
  upstream?: string;
  bytes?: number;
  aborted?: boolean;
  /** The OCI error answered, if any. */
  error?: { code: string; message: string };
  /** A failure's cause, logged with its stack. */
  err?: unknown;
  /** Who asked (an htpasswd user); absent for anonymous clients. */
  user?: string;
  /** The route kind, for metrics. */
  route?: string;
  /** The connection guard cut the request: its body came too slowly. */
  slowBody?: boolean;
  /** The canonical repository the request named (when its name resolved), for the dashboard. */
  repository?: string;
  /** This request's act emitter (lib/events), when anything listens. */
  act?: (fields: ActFields) => void;
  /** A signature policy refused the manifest: the act said so (not again as access.denied). */
  signatureRefused?: boolean;
}

const STALE_WARNING = '110 - "Response is Stale"';

/** The Warning of a tag its upstream deleted, kept here (cache.gonePolicies: keep). */
function goneWarning(since: number): string {
  return `110 - "Response is Stale: deleted upstream since ${new Date(since).toISOString()}"`;
}
/** Logged (never sent) for a request whose client hung up before it was answered. */
const CLIENT_CLOSED_REQUEST = 499;
const REQUEST_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * Request ids are 8 random bytes in hex, cut from a pool filled REQUEST_ID_POOL bytes at a time:
 * one call into the CSPRNG per 512 requests instead of one per request (it was 6 % of a warm
 * manifest request's CPU).
 */
const REQUEST_ID_POOL = 4096;
let idPool = Buffer.alloc(0);
let idPoolAt = 0;

function newRequestId(): string {
  if (idPoolAt + 8 > idPool.length) {
    idPool = randomBytes(REQUEST_ID_POOL);
    idPoolAt = 0;
  }
  const id = idPool.toString('hex', idPoolAt, idPoolAt + 8);
  idPoolAt += 8;
  return id;
}

/** What every request of one server shares beside its deps. */
interface Edge {
  guard: ConnectionGuard;
  /**
   * The server's logger without redaction, for access lines that carry no `err`: such a line holds
   * only strings, numbers and `error: {code, message}`, which no redact path names, so it is written
   * byte for byte as the redacting logger would write it, without the redaction's per-key cost
   * (its wildcard path `*.password` runs on every key of every line).
   */
  accessLog: Logger;
  /** Names → targets and canonical names, memoized (target.ts). */
  targets: TargetResolver;
}

/** Node checks head timeouts on this interval (30 s by default): often enough for the one configured. */
function checkingInterval(config: Config): number {
  return Math.min(30_000, Math.max(250, Math.floor(config.server.headersTimeout / 4)));
}

/** A plain HTTP server with nothing to answer yet, for createServer's `server` (bound before the rest exists). */
export function newHttpServer(config: Config): HttpServer {
  return http.createServer({ connectionsCheckingInterval: checkingInterval(config) });
}

export function createServer(deps: ServerDeps): HttpServer {
  const guard = new ConnectionGuard(deps.config.server, deps.log, (reason) => deps.metrics?.connectionRefused(reason));
  const connectionsCheckingInterval = checkingInterval(deps.config);
  // handle() never rejects: its last resort catches everything (and `void` marks that on purpose).
  const edge: Edge = { guard, accessLog: deps.log.child({}, { redact: [] }), targets: new TargetResolver(deps.config, deps.hosted) };
  // With tracing on (config tracing) each request is a server span continuing the caller's trace.
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const tracer = activeTracer();
    void (tracer ? tracer.serve(req.method ?? 'GET', req.headers, serverSpanAttributes(req), (span) => handle(deps, edge, req, res, span)) : handle(deps, edge, req, res, null));
  };
  const clientCA = deps.tls?.clientCA ?? null;
  let server: HttpServer;
  if (deps.server) {
    // Made (and bound) beforehand by newHttpServer: its address had to be known first.
    server = deps.server;
    server.on('request', onRequest);
  } else {
    server = deps.tls
      ? https.createServer(
          { connectionsCheckingInterval, cert: deps.tls.cert, key: deps.tls.key, ...(clientCA ? { ca: clientCA, requestCert: true, rejectUnauthorized: false } : {}) },
          onRequest,
        )
      : http.createServer({ connectionsCheckingInterval }, onRequest);
  }
  guard.install(server);
  // Requests ride on the TLS socket over HTTPS ('connection' gives the TCP one under it).
  server.on(deps.tls ? 'secureConnection' : 'connection', (socket: Socket) => {
    socket.once('close', () => endQueuedAnswers(socket));
    // A connection's client certificate is its identity for every request on it (read once per
    // connection): no TLS 1.2 renegotiation may swap it underneath.
    if (clientCA) (socket as TLSSocket).disableRenegotiation();
  });
  return server;
}

/**
 * Answers to pipelined requests that wait for their turn on a connection. Node gives such an answer
 * the connection only when the one before it has finished; if the client hangs up first, the answer
 * never gets 'close' and its writes' callbacks never come, so a sender waiting on them would wait
 * for ever (holding a file and its buffers). The connection's end is theirs.
 */
const queuedAnswers = new WeakMap<Socket, Set<ServerResponse>>();

function endQueuedAnswers(socket: Socket): void {
  const queued = queuedAnswers.get(socket);
  if (!queued) return;
  queuedAnswers.delete(socket);
  for (const res of queued) {
    if (res.socket || res.destroyed) continue;
    res.destroy();
    res.emit('close');
  }
}

/** How long a connection closed with its request body unread still takes (and drops) that body. */
const LINGER_MS = 2_000;

/**
 * A request answered without its body read to the end (refused before the upload, a chunk over a
 * limit, a manifest too large): once the answer is out the connection is half-closed (FIN) and
 * closed for good LINGER_MS later, instead of Node reading the rest of a body nobody wants for
 * keep-alive, which a trickling client could stretch for as long as it likes. The linger (as
 * nginx's lingering_close) lets a client still sending read the answer: closing at once would
 * make its kernel answer the unread bytes with a reset, and the client would see only that.
 */
function closeIfBodyUnread(req: IncomingMessage, res: ServerResponse): void {
  // Node detaches the socket from a finished exchange: null then.
  const socket = req.socket as Socket | null;
  if (req.complete || !socket || socket.destroyed) return;
  const close = (): void => {
    req.resume(); // the rest of the body is read and dropped while the connection lingers
    socket.end();
    const timer = setTimeout(() => socket.destroy(), LINGER_MS).unref();
    socket.once('close', () => clearTimeout(timer));
  };
  if (res.writableFinished) close();
  else res.once('finish', close);
}

/** Tracks `res` while it waits for the connection; returns the function that stops tracking it. */
function trackQueued(req: IncomingMessage, res: ServerResponse): () => void {
  if (res.socket) return () => undefined;
  let queued = queuedAnswers.get(req.socket);
  if (!queued) queuedAnswers.set(req.socket, (queued = new Set()));
  queued.add(res);
  return () => queued.delete(res);
}

/** A server span's attributes known before routing (HTTP semantic conventions). */
function serverSpanAttributes(req: IncomingMessage): SpanAttributes {
  const attributes: SpanAttributes = {
    'http.request.method': req.method ?? 'GET',
    'url.path': loggedPath(req.url?.split('?', 1)[0]) ?? '/',
    'network.protocol.version': req.httpVersion,
  };
  const agent = req.headers['user-agent'];
  if (agent !== undefined) attributes['user_agent.original'] = agent.slice(0, 256);
  const peer = (req.socket as Socket | null)?.remoteAddress;
  if (peer !== undefined) attributes['network.peer.address'] = peer;
  return attributes;
}

/** The `http.route` of each route kind, for a server span's name (`GET /v2/{name}/manifests/{reference}`). */
const ROUTE_TEMPLATES: Readonly<Record<string, string>> = {
  base: '/v2/',
  manifest: '/v2/{name}/manifests/{reference}',
  blob: '/v2/{name}/blobs/{digest}',
  upload: '/v2/{name}/blobs/uploads/{session}',
  tags: '/v2/{name}/tags/list',
  referrers: '/v2/{name}/referrers/{digest}',
  catalog: '/v2/_catalog',
  healthz: '/healthz',
  readyz: '/readyz',
  token: TOKEN_PATH,
  metrics: '/metrics',
  peer_blob: `${PEER_BLOB_PATH}{digest}`,
};

/** What the answer said, on the request's server span. */
function endServerSpan(span: SpanHandle, req: IncomingMessage, res: ServerResponse, outcome: Outcome): void {
  const template = outcome.route === undefined ? undefined : ROUTE_TEMPLATES[outcome.route];
  if (template !== undefined) {
    span.set('http.route', template);
    span.rename(`${req.method ?? 'GET'} ${template}`);
  }
  span.set('http.response.status_code', res.statusCode);
  if (outcome.cache) span.set('stevedore.cache', outcome.cache);
  if (outcome.upstream) span.set('stevedore.upstream', outcome.upstream);
  if (outcome.repository) span.set('stevedore.repository', outcome.repository);
  if (outcome.aborted) span.set('stevedore.client_aborted', true);
  if (res.statusCode >= 500) span.failed(outcome.error ? `${outcome.error.code}: ${outcome.error.message}` : `answered ${res.statusCode}`);
}

async function handle(deps: ServerDeps, edge: Edge, req: IncomingMessage, res: ServerResponse, span: SpanHandle | null): Promise<void> {
  const { guard } = edge;
  const started = process.hrtime.bigint();
  const given = req.headers['x-request-id'];
  // With tracing on the request id is the trace id: the access line finds the trace, and the trace the line.
  const reqId = span ? span.traceId : typeof given === 'string' && REQUEST_ID_RE.test(given) ? given : newRequestId();
  const log = deps.log.child({ reqId });
  // An 'error' event with no listener would end the process. Whatever fails on either side of one
  // request (the client went away, a write after the answer ended) is that request's business.
  req.on('error', (err) => log.debug({ err }, 'request stream error'));
  res.on('error', (err) => log.debug({ err }, 'response stream error'));
  res.setHeader('X-Request-Id', reqId);
  const head = req.method === 'HEAD';
  deps.metrics?.requestStarted();
  deps.idleMemory?.requestStarted();
  const untrack = trackQueued(req, res);
  const outcome: Outcome = {};
  if (deps.acts?.active) outcome.act = deps.acts.forRequest(() => ({ user: outcome.user ?? null, address: deps.auth.addressOf(req), reqId }));
  const unwatch = guard.watchBody(req, () => (outcome.slowBody = true));
  try {
    await answer(deps, edge, req, res, outcome, log, reqId, started, head);
  } catch (err) {
    // The last resort (README, "When something fails unexpectedly"): a defect escaped the handlers
    // above. This request fails, logged with its id and counted; every other request goes on.
    deps.metrics?.internalError('request');
    log.error({ err, method: req.method, path: req.url?.slice(0, 256) }, 'request failed unexpectedly (a defect; serving goes on)');
    try {
      if (res.headersSent) res.destroy();
      else sendError(res, new OciError('UNKNOWN', 'internal error'), head);
    } catch {
      res.destroy();
    }
  } finally {
    try {
      closeIfBodyUnread(req, res);
    } catch (err) {
      log.error({ err }, 'closing a connection with an unread body failed');
    }
    unwatch();
    untrack();
    deps.metrics?.requestEnded();
    deps.idleMemory?.requestEnded(outcome.route);
    if (span) endServerSpan(span, req, res, outcome);
  }
}

async function answer(
  deps: ServerDeps,
  edge: Edge,
  req: IncomingMessage,
  res: ServerResponse,
  outcome: Outcome,
  log: Logger,
  reqId: string,
  started: bigint,
  head: boolean,
): Promise<void> {
  try {
    await route(deps, edge, req, res, outcome, log);
  } catch (err) {
    if (outcome.slowBody) {
      // Cut by the connection guard: the body came too slowly (server.requestBodyTimeout).
      outcome.error = { code: 'REQUEST_TIMEOUT', message: 'the request body came too slowly; the connection was closed' };
      res.statusCode = 408;
      res.destroy();
    } else if (!res.headersSent && (res.destroyed || (req.socket as Socket | null)?.destroyed !== false)) {
      // The client hung up before its answer (mid-upload, while the upstream was asked): nobody to
      // answer. Logged and counted as nginx does, 499 "client closed request", not as a failure of ours.
      outcome.aborted = true;
      res.statusCode = CLIENT_CLOSED_REQUEST;
      res.destroy();
    } else {
      // An upstream's failure is answered, and logged, as the OCI error it maps to for this request.
      const failure = upstreamAnswer(err, outcome.route) ?? err;
      const oci = toOciError(failure);
      // Causes of server-side failures go to the log with their stack; client errors as code + message,
      // and so does a full disk (507): its cause is logged once per episode (storage/space-watch.ts).
      if (!isMappedError(failure) || (oci.status >= 500 && oci.status !== 507)) outcome.err = failure;
      outcome.error = { code: oci.code, message: oci.message };
      if (oci.code === 'DENIED' && !outcome.signatureRefused) outcome.act?.({ type: 'access.denied', repository: outcome.repository, reason: oci.message });
      sendError(res, oci, head);
    }
  }
  // After route() returned, every byte of the answer has been handed over (or the transfer failed).
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const path = loggedPath(req.url);
  // The access line, its keys in this order (reqId first when written through edge.accessLog: it is
  // then where the per-request logger's binding would be).
  const line: Record<string, unknown> = outcome.err ? {} : { reqId };
  line.method = req.method;
  line.path = path;
  line.status = res.statusCode;
  line.bytes = outcome.bytes ?? 0;
  line.ms = Math.round(ms * 10) / 10;
  if (outcome.cache) line.cache = outcome.cache;
  if (outcome.upstream) line.upstream = outcome.upstream;
  if (outcome.user) line.user = outcome.user;
  if (outcome.aborted) line.aborted = true;
  if (outcome.error) line.error = outcome.error;
  if (outcome.err) line.err = outcome.err;
  const to = outcome.err ? log : edge.accessLog;
  if (res.statusCode >= 500 || outcome.aborted) to.warn(line, 'request');
  else to.info(line, 'request');
  deps.metrics?.observe(outcome.route ?? 'other', req.method ?? 'GET', res.statusCode, outcome.cache, outcome.bytes ?? 0, ms / 1000);
  deps.dashboard?.activity.record({
    method: req.method ?? 'GET',
    path: path ?? '',
    route: outcome.route ?? 'other',
    status: res.statusCode,
    cache: outcome.cache,
    bytes: outcome.bytes ?? 0,
    repository: outcome.repository ?? null,
    error: outcome.error,
    credentials: req.headers.authorization !== undefined,
  });
}

function parseUrl(req: IncomingMessage): { pathname: string; query: URLSearchParams } {
  const raw = req.url ?? '/';
  const q = raw.indexOf('?');
  return {
    pathname: q === -1 ? raw : raw.slice(0, q),
    query: new URLSearchParams(q === -1 ? '' : raw.slice(q + 1)),
  };
}

async function route(deps: ServerDeps, edge: Edge, req: IncomingMessage, res: ServerResponse, outcome: Outcome, log: Logger): Promise<void> {
  const { guard } = edge;
  const { pathname, query } = parseUrl(req);
  if (deps.peerRoute === 'only' && !pathname.startsWith(PEER_BLOB_PATH)) {
    throw new OciError('NOT_FOUND', `no endpoint at ${pathname.slice(0, 200)} (this listener, peerListen, serves the peer endpoint only)`);
  }
  // ---- auth (lib/server/auth): stevedore's own token endpoint.
  const authContext: AuthContext = {
    log,
    identified: (who) => {
      if (who.user !== null) outcome.user = who.user;
    },
    ...(outcome.act ? { act: outcome.act } : {}),
  };
  // A browser's write for another site (cross-site.ts): refused before any password is checked.
  const guarded = guardedWrite(req.method, pathname, TOKEN_PATH);
  if (guarded) {
    const refused = crossSiteRefusal(req, deps.auth.ownOrigins(req), guarded);
    if (refused) {
      log.warn({ method: req.method, path: loggedPath(req.url), ...refused.signs }, 'cross-site write refused');
      throw new OciError('DENIED', refused.why);
    }
  }
  if (pathname === TOKEN_PATH) {
    outcome.route = 'token';
    await deps.auth.handleToken(req, res, query, authContext);
    return;
  }
  if (pathname === '/metrics' && deps.metrics && (req.method === 'GET' || req.method === 'HEAD')) {
    outcome.route = 'metrics';
    await deps.auth.authorizeMetrics(req, authContext);
    return deps.metrics.send(res, req.method === 'HEAD');
  }
  if (deps.dashboard?.handles(pathname)) {
    outcome.route = 'dashboard';
    return deps.dashboard.serve(deps.auth, pathname, req, res, authContext);
  }
  if (deps.preheat?.handles(pathname)) {
    outcome.route = 'preheat';
    return deps.preheat.serve(deps.auth, pathname, query, req, res, authContext);
  }
  const peerEndpoint = deps.peerRoute === 'elsewhere' ? null : (deps.peers ?? deps.clusterPeers);
  if (pathname.startsWith(PEER_BLOB_PATH) && peerEndpoint) {
    outcome.route = 'peer_blob';
    guard.armIdle(res);
    return servePeerBlob(deps.pull, peerEndpoint, pathname.slice(PEER_BLOB_PATH.length), req, res, outcome);
  }
  const r = matchRoute(pathname);
  if (!r) throw new OciError('NOT_FOUND', `no endpoint at ${pathname.slice(0, 200)}`);
  outcome.route = r.kind;
  // A blob's body outlasts the socket's buffers: a client that stops reading it is cut (server.idleTimeout).
  if (r.kind === 'blob' && req.method === 'GET') guard.armIdle(res);
  const head = req.method === 'HEAD';
  // The one place a request's action is decided: an access-rule check plugs in here.
  const action = actionFor(r, req.method);
  if (action === null) {
    throw new OciError('UNSUPPORTED', `${req.method} is not supported on this endpoint`, { headers: { Allow: allowedMethods(r) } });
  }
  // ---- auth (lib/server/auth): who is asking, and may they take this action here (401 / 403).
  // The request's own repository is resolved once: for the dashboard's record here, for the access
  // rules in authorizeRoute (which resolves other names itself, a mount's source).
  const ownNs = query.get('ns');
  if ('name' in r) {
    try {
      outcome.repository = edge.targets.canonical(r.name, ownNs);
    } catch {
      // A name that does not resolve: authorizeRoute answers it.
    }
  }
  const canonical = (name: string, ns: string | null): string =>
    outcome.repository !== undefined && 'name' in r && name === r.name && ns === ownNs ? outcome.repository : edge.targets.canonical(name, ns);
  const who = await authorizeRoute(deps.auth, canonical, r, action, req, query, authContext);
  switch (r.kind) {
    case 'healthz':
      return sendJson(res, 200, { status: 'ok' }, {}, head);
    case 'readyz':
      return deps.isReady() ? sendJson(res, 200, { status: 'ready' }, {}, head) : sendJson(res, 503, { status: 'not ready' }, {}, head);
    case 'base':
      return sendJson(res, 200, {}, {}, head);
    case 'catalog':
      return serveCatalog(deps.registry, query, res, head, (name) => deps.auth.mayPull(who.user, name));
    default:
      return repoRoute(deps, edge.targets, r, action, query, req, res, outcome);
  }
}

type RepoRoute = Exclude<Route, { kind: 'base' | 'healthz' | 'readyz' | 'catalog' }>;

/** Upstream failures that leave a blob's existence unknown: a push client is told "not here" instead. */
const UNANSWERED = new Set(['UPSTREAM_UNAVAILABLE', 'UPSTREAM_TIMEOUT', 'OFFLINE', 'TOOMANYREQUESTS']);

async function repoRoute(
  deps: ServerDeps,
  targets: TargetResolver,
  r: RepoRoute,
  action: Action,
  query: URLSearchParams,
  req: IncomingMessage,
  res: ServerResponse,
  outcome: Outcome,
): Promise<void> {
  const ns = query.get('ns');
  const resolved = targets.resolve(r.name, ns);
  const headers: Record<string, string> = { ...API_VERSION_HEADER };
  if (ns !== null) headers['OCI-Namespace'] = ns;
  const head = req.method === 'HEAD';
  if (resolved.kind === 'hosted') {
    const repo = hostedRepo(resolved.name);
    if (action === 'push' || action === 'delete') {
      return writeRoute(deps, r, action, pushContext(deps, repo, resolved.clientName, ns, headers, outcome.user), query, req, res, outcome);
    }
    switch (r.kind) {
      case 'manifest':
        return serveHostedManifest(deps.registry, repo, r.reference, req, res, headers, outcome, head, head ? undefined : signatureGate(deps, () => hostedSource(deps.registry, repo), repo.name, outcome));
      case 'blob':
        return serveHostedBlob(deps.registry, repo, r.digest, req, res, headers, outcome, head);
      case 'tags':
        return serveHostedTags(deps.registry, repo, resolved.clientName, query, res, headers, head);
      case 'referrers':
        return sendReferrers(res, await deps.registry.referrers(repo, parseDigest(r.digest)), query, headers, head);
      default:
        throw new OciError('UNSUPPORTED', `${req.method} is not supported on this endpoint`);
    }
  }
  const repo = resolved.repo;
  // upstreams.<name>.allow / deny: refused (403 DENIED) for every endpoint and action, before the
  // store or the upstream is asked, so nothing cached under the name is served either.
  assertProxied(repo.upstream, repo.name);
  const client = deps.upstreams.get(repo.upstream.name)!;
  const target: Target = { client, name: repo.name };
  outcome.upstream = client.name;
  if (action === 'push' || action === 'delete') {
    if (!resolved.explicit) {
      throw new OciError(
        'UNSUPPORTED',
        `${repo.clientName} is proxied from ${client.name}: push to /v2/${client.name}/${repo.name} (or with ?ns=${client.name}) to seed the mirror, or list it in registry.hosted`,
        { headers: { Allow: allowedMethods(r, ['push', 'delete']) } },
      );
    }
    const ctx = pushContext(deps, { upstream: client.name, name: repo.name }, repo.clientName, ns, headers, outcome.user);
    return writeRoute(deps, r, action, ctx, query, req, res, outcome, target);
  }
  switch (r.kind) {
    case 'manifest':
      return serveManifest(deps, target, r.reference, req, res, headers, outcome, head);
    case 'blob':
      try {
        return await serveBlob(deps, target, r.digest, req, res, headers, outcome, head);
      } catch (err) {
        // A push client asks with HEAD whether to upload; with the upstream out of reach the answer
        // is "not here", so seeding works air-gapped. GETs keep the upstream's failure.
        const failure = upstreamAnswer(err, r.kind) ?? err;
        if (head && resolved.explicit && failure instanceof OciError && UNANSWERED.has(failure.code)) {
          throw new OciError('BLOB_UNKNOWN', `blob not stored here, and ${failure.reason}`);
        }
        throw err;
      }
    case 'tags':
      return serveTags(deps, target, repo, query, res, headers, outcome, head);
    case 'referrers': {
      const subject = parseDigest(r.digest);
      const seeded = await deps.registry.referrers({ upstream: client.name, name: repo.name }, subject);
      const answer = await deps.referrers.get(target, subject, seeded);
      outcome.cache = answer.cache;
      if (answer.staleReason) headers.Warning = STALE_WARNING;
      return sendReferrers(res, answer.descriptors, query, { ...headers, 'X-Cache': answer.cache }, head);
    }
    default:
      throw new OciError('UNSUPPORTED', `${req.method} is not supported on this endpoint`);
  }
}

function pushContext(
  deps: ServerDeps,
  repo: RepoRef,
  clientName: string,
  ns: string | null,
  headers: Record<string, string>,
  user: string | undefined,
): PushContext {
  return {
    owner: user ?? ANONYMOUS_OWNER,
    registry: deps.registry,
    repo,
    base: `/v2/${clientName}`,
    nsQuery: ns !== null ? `?${new URLSearchParams({ ns }).toString()}` : '',
    headers,
    manifestMaxSize: deps.config.cache.manifestMaxSize,
    resolveFrom(name: string): RepoRef | null {
      try {
        const from = resolveTarget(name, ns, deps.config, deps.hosted);
        if (from.kind === 'hosted') return hostedRepo(from.name);
        // A refused repository is no mount source: its stored blobs would be served under another name.
        return refusal(from.repo.upstream, from.repo.name) ? null : { upstream: from.repo.upstream.name, name: from.repo.name };
      } catch {
        return null;
      }
    },
  };
}

/**
 * Pushes and deletes, for hosted repositories and seeded upstream namespaces alike. `seeded` is the
 * upstream target when the repository is an upstream's: a pushed tag replaces what the pull path
 * memoized for it, and a blob the client did not push because the upstream has it is accepted.
 */
async function writeRoute(
  deps: ServerDeps,
  r: RepoRoute,
  action: 'push' | 'delete',
  ctx: PushContext,
  query: URLSearchParams,
  req: IncomingMessage,
  res: ServerResponse,
  outcome: Outcome,
  seeded?: Target,
): Promise<void> {
  if (action === 'delete' && !deps.config.registry.delete) {
    throw new OciError('UNSUPPORTED', 'deleting is disabled on this registry (registry.delete: false)', {
      headers: { Allow: allowedMethods(r, ['delete']) },
    });
  }
  const method = req.method ?? '';
  const repository = canonicalOf(ctx.repo);
  switch (r.kind) {
    case 'upload': {
      const mount = await handleUpload(ctx, r.session, method, query, req, res);
      if (mount) outcome.act?.({ type: 'mount', repository, digest: mount.mounted, from: canonicalOf(mount.from) });
      return;
    }
    case 'manifest': {
      // A tag a push moved (or a delete removed) in a seeded namespace is forgotten by the pull
      // path here and on every other worker and replica before the client is answered: its next
      // request, wherever it lands, is answered from the store.
      const forget = seeded ? async (tags: string[]): Promise<void> => void (await Promise.all(tags.map((tag) => deps.pull.forgetTag(seeded.client.name, seeded.name, tag)))) : undefined;
      if (method === 'PUT') {
        const known = seeded ? upstreamHas(deps, seeded) : undefined;
        const { fromElsewhere, tag, digest, previousDigest } = await handleManifestPut({ ...ctx, ...(known ? { isKnown: known } : {}) }, r.reference, req, res, forget);
        outcome.act?.({ type: 'push', repository, digest, ...(tag !== null ? { tag, previousDigest } : {}) });
        // What the client skipped because the upstream has it is fetched now and pinned, in the background.
        if (seeded && fromElsewhere.length) void fetchAndPin(deps.pull, deps.registry.store, seeded, fromElsewhere, deps.log);
        return;
      }
      // Every tag the delete removed (by digest: each tag that named the manifest) is forgotten by
      // the pull path too: none is answered from memory afterwards.
      const tags = await handleManifestDelete(ctx, r.reference, res, forget);
      const byDigest = r.reference.includes(':');
      outcome.act?.(byDigest ? { type: 'delete', target: 'manifest', repository, digest: r.reference, tags } : { type: 'delete', target: 'tag', repository, tag: r.reference });
      return;
    }
    case 'blob':
      await handleBlobDelete(ctx, r.digest, res);
      outcome.act?.({ type: 'delete', target: 'blob', repository, digest: r.digest });
      return;
    default:
      throw new OciError('UNSUPPORTED', `${method} is not supported on this endpoint`);
  }
}

/** The name access rules and acts use for a repository of the store: `<upstream>/<name>`, or the hosted name. */
function canonicalOf(repo: RepoRef): string {
  return repo.upstream === HOSTED_NAMESPACE ? repo.name : `${repo.upstream}/${repo.name}`;
}

/** For a seeded namespace: whether the upstream has content the push did not upload (the client skipped it). */
function upstreamHas(deps: ServerDeps, target: Target): (d: Digest, isManifest: boolean) => Promise<boolean> {
  return async (d, isManifest) => {
    try {
      if (isManifest) await deps.pull.getManifestByDigest(target, d);
      else await deps.pull.statBlob(target, d);
      return true;
    } catch {
      return false;
    }
  };
}

/** The signature check of a repository's manifests, when a policy covers it (lib/verify); else undefined. */
function signatureGate(
  deps: ServerDeps,
  source: () => ReturnType<typeof proxiedSource>,
  repository: string,
  outcome: Outcome,
): ((m: { digest: string; bytes: Buffer }) => Promise<void>) | undefined {
  const gate = deps.signatures;
  if (!gate?.applies(repository)) return undefined;
  return async (m) => {
    try {
      await gate.check(source(), m);
    } catch (err) {
      // The policy's refusal (403 DENIED): an act of its own (audit log, webhooks).
      if (err instanceof OciError && err.code === 'DENIED') {
        outcome.signatureRefused = true;
        outcome.act?.({ type: 'signature.refused', repository, digest: m.digest, reason: err.message });
      }
      throw err;
    }
  };
}

function cacheSpanAttributes(target: Target, reference: string): SpanAttributes {
  return { 'stevedore.upstream': target.client.name, 'stevedore.repository': target.name, 'stevedore.reference': reference };
}

/**
 * The cache decision (hit, miss, revalidated, stale) as a span when tracing is on: the upstream
 * requests it made are its children. With tracing off, just the call.
 */
function cacheDecision<T extends { cache: string }>(name: string, target: Target, reference: string, decide: () => Promise<T>): Promise<T> {
  const tracer = activeTracer();
  if (!tracer) return decide();
  return tracer.span(name, cacheSpanAttributes(target, reference), async (span) => {
    const answer = await decide();
    span.set('stevedore.cache', answer.cache);
    return answer;
  });
}

async function serveManifest(
  deps: ServerDeps,
  target: Target,
  reference: string,
  req: IncomingMessage,
  res: ServerResponse,
  headers: Record<string, string>,
  outcome: Outcome,
  head: boolean,
): Promise<void> {
  const ref = parseReadReference(reference);
  const m = await cacheDecision(ref.kind === 'tag' ? 'cache.manifest_by_tag' : 'cache.manifest_by_digest', target, reference, () =>
    ref.kind === 'tag' ? deps.pull.getManifestByTag(target, ref.tag) : deps.pull.getManifestByDigest(target, ref.digest),
  );
  // The signature policy, a step of its own before any content is produced (a refusal is 403
  // DENIED). A HEAD answer carries no content (digest and size only): signers HEAD an image
  // before they attach its signature, so it is not checked.
  if (!head) await signatureGate(deps, () => proxiedSource(deps, target), `${target.client.name}/${target.name}`, outcome)?.(m);
  outcome.cache = m.cache;
  headers['X-Cache'] = m.cache;
  if (m.staleReason) headers.Warning = m.goneSince !== undefined ? goneWarning(m.goneSince) : STALE_WARNING;
  outcome.bytes = sendManifest(res, req.headers['if-none-match'], headers, m, head);
}

async function serveBlob(
  deps: ServerDeps,
  target: Target,
  digestText: string,
  req: IncomingMessage,
  res: ServerResponse,
  headers: Record<string, string>,
  outcome: Outcome,
  head: boolean,
): Promise<void> {
  const digest = parseDigest(digestText);
  Object.assign(headers, {
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': digest.value,
    ETag: `"${digest.value}"`,
    'Accept-Ranges': 'bytes',
  });
  if (head) {
    const st = await cacheDecision('cache.blob_stat', target, digest.value, () => deps.pull.statBlob(target, digest));
    outcome.cache = st.cache;
    if (st.size !== null) headers['Content-Length'] = String(st.size);
    headers['X-Cache'] = st.cache;
    res.writeHead(200, headers);
    res.end();
    return;
  }
  checkRangeSyntax(req.headers.range);
  // The span ends when the answer is decided (stored, joined, downloading); the transfer is the request's.
  // The client's range as sent, for a cold blob's early ranged GET; which ends if the client leaves.
  const range = sentRange(req.headers.range);
  const gone = range ? clientGone(res) : undefined;
  const blob = await cacheDecision('cache.blob', target, digest.value, () => deps.pull.getBlob(target, digest, range, gone));
  outcome.cache = blob.cache;
  headers['X-Cache'] = blob.cache;
  await sendBlob(res, req.headers.range, headers, blob, outcome);
}

/**
 * A blob for another node instance (node mode) or replica (cluster mode on S3): only to a request
 * signed with the shared secret for this instance (cluster/peer-auth.ts), only what is
 * stored or being downloaded here (never fetched for a peer), by digest alone — the asking peer
 * checks the repository and verifies the bytes.
 */
async function servePeerBlob(pull: PullThrough, peers: PeerEndpoint, digestText: string, req: IncomingMessage, res: ServerResponse, outcome: Outcome): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') throw new OciError('UNSUPPORTED', `${req.method} is not supported on this endpoint`, { headers: { Allow: 'GET, HEAD' } });
  const refused = peers.refusal(req.method, `${PEER_BLOB_PATH}${digestText}`, req.headers.authorization);
  if (refused !== null) throw new OciError('UNAUTHORIZED', `the peer endpoint: ${refused}`);
  const digest = parseDigest(digestText);
  checkRangeSyntax(req.headers.range);
  const blob = await pull.peerBlob(digest);
  if (!blob) throw new OciError('BLOB_UNKNOWN', `${digest.value} is not held here`);
  const headers: Record<string, string> = {
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': digest.value,
    'Accept-Ranges': 'bytes',
    'X-Cache': blob.cache,
  };
  outcome.cache = blob.cache;
  if (req.method === 'HEAD') {
    await blob.release();
    if (blob.size !== null) headers['Content-Length'] = String(blob.size);
    res.writeHead(200, headers);
    res.end();
    return;
  }
  peers.served();
  // A peer is sent the bytes, never a redirect (it fetches with the shared token, not a URL).
  await sendBlob(res, req.headers.range, headers, { size: blob.size, sendTo: (dest, r) => blob.sendTo(dest, r), release: () => blob.release() }, outcome);
}

async function serveTags(
  deps: ServerDeps,
  target: Target,
  repo: ResolvedRepo,
  query: URLSearchParams,
  res: ServerResponse,
  headers: Record<string, string>,
  outcome: Outcome,
  head: boolean,
): Promise<void> {
  const nText = query.get('n');
  const last = query.get('last');
  let n: number | null = null;
  if (nText !== null) {
    if (!/^\d{1,9}$/.test(nText)) throw new OciError('PAGINATION_NUMBER_INVALID', `invalid n=${JSON.stringify(nText.slice(0, 50))}`);
    n = Number(nText);
  }
  const list = await deps.pull.listTags(target, clientGone(res));
  outcome.cache = list.cache;
  if (list.staleReason) headers.Warning = STALE_WARNING;
  let tags = [...new Set(list.tags)].sort();
  if (last !== null) tags = tags.filter((t) => t > last);
  if (n === 0) tags = [];
  if (n !== null && n > 0 && tags.length > n) {
    tags = tags.slice(0, n);
    const next = new URLSearchParams({ n: String(n), last: tags[tags.length - 1] ?? '' });
    const ns = query.get('ns');
    if (ns !== null) next.set('ns', ns);
    headers.Link = `</v2/${repo.clientName}/tags/list?${next.toString()}>; rel="next"`;
  }
  headers['X-Cache'] = list.cache;
  sendJson(res, 200, { name: repo.clientName, tags }, headers, head);
}
