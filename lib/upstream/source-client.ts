/**
 * One upstream registry, spoken to with undici (one Agent, so one keep-alive pool per origin).
 * Handles the token dance driven by `WWW-Authenticate`, Basic credentials, redirects, timeouts, and
 * maps every failure to an UpstreamError.
 *
 * What a hostile or broken upstream can cost is bounded here:
 *   - every request other than a blob body has an overall deadline (timeouts.request), and every
 *     body a minimum progress (timeouts.stall / minProgress; blob bodies are watched by the
 *     download, which resumes them);
 *   - a tag list is capped in tags and bytes over all its pages, and stops when its caller's
 *     signal aborts (the client left) or the client is closed (shutdown);
 *   - redirects are followed for blob GETs only (or every GET/HEAD with `redirects: all`), to
 *     http(s), never to link-local or multicast addresses, to loopback/private ones only when the
 *     upstream is on one (outbound-policy.ts), and never with `Authorization` to another origin;
 *   - the configured credentials go to a token realm only over https or on the upstream's origin;
 *     credentials from a file, a helper or a cloud (credentials.ts) follow the same rule, and a
 *     401 with them asks their source anew once per request (never a loop of refreshes).
 */
import type { Dispatcher } from 'undici';
import { LazyAgent } from '../util/lazy-undici.js';
import { setMaxListeners } from 'node:events';
import type { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { NamespaceMode, SourceConfig } from '../config/config.js';
import { OCI_ERRORS, type OciErrorCode } from '../oci/errors.js';
import { MANIFEST_ACCEPT, normalizeContentType } from '../oci/media-types.js';
import { parseWwwAuthenticate, type Challenge } from './www-authenticate.js';
import { BAD_CONTENT_RANGE, mapTransportError, offlineMessage, UpstreamError } from './errors.js';
import type { UpstreamHealth } from '../metadata/upstream-health.js';
import { LinkedSignal } from './linked-signal.js';
import { ProgressWatch } from '../util/progress.js';
import { checkAddressLiteral, guardedLookup, isLocalHost, mayReceiveCredentials } from './outbound-policy.js';
import { credentialProvider, CredentialError, type Credential, type CredentialProvider } from './credentials/index.js';
import { discard, header } from '../util/http-body.js';
import { activeTracer, tracedRequest } from '../util/tracing.js';

const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const ERROR_BODY_LIMIT = 64 * 1024;
/** Pages of a paginated list (tags, referrers) followed at most, whatever their size. */
const MAX_PAGES = 1000;
/** How long whether the upstream is on a loopback/private address is trusted before resolving again. */
const LOCALITY_TTL_MS = 60_000;
/** Docker's token spec: a token without expires_in lasts 60 s. Refresh a little early. */
const DEFAULT_TOKEN_SECONDS = 60;
const TOKEN_MARGIN_MS = 5_000;

type Headers = Record<string, string>;

interface RequestOptions {
  method: 'GET' | 'HEAD';
  path: string;
  scope: string;
  headers?: Headers;
  signal?: AbortSignal;
  /** What is asked for, in words, for error messages. */
  what: string;
  /** Follow redirects (blob GETs; every request of an upstream with `redirects: all`). */
  follow?: boolean;
}

/** Limits of a tag list, over all its pages. */
export interface TagsListLimits {
  maxTags: number;
  maxBytes: number;
}

export interface UpstreamResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
}

export interface ManifestHead {
  digest: string | null;
  mediaType: string;
  size: number | null;
  /** The source answered from a stale cache (`Warning: 110`, another stevedore): its text. */
  stale?: string;
}

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  /** Docker-Content-Digest as the upstream sent it, if it did. */
  digest: string | null;
  /** The source answered from a stale cache (`Warning: 110`, another stevedore): its text. */
  stale?: string;
}


/**
 * Reads a small body (an error document, a manifest, a tags page) into memory, up to `limit`
 * bytes (null past it). With `watch`, a body making less progress than the rule is destroyed with
 * the error `watch.stalled` makes.
 */
async function readLimited(
  body: Readable,
  limit: number,
  watch?: { rule: { windowMs: number; minBytes: number }; stalled: (bytes: number) => Error },
): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let n = 0;
  const progress = watch ? new ProgressWatch(watch.rule, (bytes) => body.destroy(watch.stalled(bytes))) : null;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      progress?.add(chunk.length);
      n += chunk.length;
      if (n > limit) {
        discard(body);
        return null;
      }
      chunks.push(chunk);
    }
  } finally {
    progress?.stop();
  }
  return Buffer.concat(chunks);
}

/** What one source client is: which upstream it serves, where, and how its health is kept. */
export interface SourceClientOptions {
  /** The upstream (registry host name) this source serves: errors carry it. */
  upstream: string;
  source: SourceConfig;
  /** Offline mode: never contacted. */
  offline: boolean;
  /** Its key in the health records: the upstream's name for the registry itself, else `<upstream>@<source>`. */
  healthKey: string;
  /**
   * A source with another behind it: one failure opens its breaker (the next source answers
   * meanwhile), instead of upstreamPolicy.breakerFailures.
   */
  fastFail: boolean;
  /** How it is named in messages: `upstream docker.io`, `source central of docker.io`. */
  label: string;
}

/**
 * One source of an upstream (its registry, a mirror, a central stevedore), spoken to over HTTP.
 * UpstreamSources (upstream-sources.ts) asks its sources in order.
 */
export class SourceClient {
  readonly config: SourceConfig;
  /** The upstream's name (errors carry it). */
  readonly name: string;
  /** The source's name (logs, metrics). */
  readonly sourceName: string;
  readonly label: string;
  readonly healthKey: string;
  private readonly fastFail: boolean;
  /** Until when the breaker's opening was last logged (said once per opening). */
  private saidOpenUntil = 0;
  private readonly namespace: NamespaceMode;
  /** Connections to the upstream's own origin. */
  private readonly agent: LazyAgent;
  /** Connections to origins the upstream named (redirect targets, token realms): addresses checked. */
  private readonly outbound: LazyAgent;
  private readonly origin: string;
  /** Aborted by close(): every operation in flight stops. */
  private readonly closing = new AbortController();
  /** Whether the upstream is on a loopback/private address (then origins it names may be too). */
  private local = false;
  private localCheckedAt = -Infinity;
  private localCheck: Promise<void> | null = null;
  private warnedRealm = false;
  /** Credentials from a file, a helper or a cloud (credentialSource); null: static or none. */
  readonly credentialProvider: CredentialProvider | null;
  /** Whether the last attempt to get credentials failed (said once per failing streak). */
  private credentialsFailing = false;
  private readonly log: Logger;
  /** Bearer tokens per scope; fetch() makes concurrent requests for one scope share one token request. */
  private readonly tokens: LRUCache<string, string, Challenge>;
  /** The last Bearer challenge seen: lets requests for new scopes fetch a token up front. */
  private bearerChallenge: Challenge | null = null;
  private basicChallenged = false;
  private readonly health: UpstreamHealth | null;
  /** Offline mode: this upstream is never contacted. */
  readonly offline: boolean;
  /** Requests sent, by `METHOD STATUS` (status 0: no answer) — for metrics. */
  readonly requestCounts = new Map<string, number>();

  constructor(opts: SourceClientOptions, log: Logger, health: UpstreamHealth | null = null) {
    const config = opts.source;
    this.config = config;
    this.name = opts.upstream;
    this.sourceName = config.name;
    this.label = opts.label;
    this.healthKey = opts.healthKey;
    this.fastFail = opts.fastFail;
    this.namespace = config.namespace;
    this.health = health;
    this.offline = opts.offline;
    this.log = opts.healthKey === opts.upstream ? log.child({ upstream: opts.upstream }) : log.child({ upstream: opts.upstream, source: config.name });
    // Every operation in flight listens on it (removed when it ends): no listener limit applies.
    setMaxListeners(0, this.closing.signal);
    this.origin = new URL(config.url).origin;
    this.credentialProvider = config.credentialSource ? credentialProvider(config.credentialSource, this.origin) : null;
    const agentOptions = {
      headersTimeout: config.timeouts.firstByte,
      bodyTimeout: config.timeouts.idle,
      keepAliveTimeout: 30_000,
      connections: 64,
      // HTTP/1.1 only (undici 8 would take HTTP/2 from any TLS upstream that offers it): one
      // download a connection, so a slow blob never shares a TCP window with another, and the
      // stall detection and Range resumes work as built and measured.
      allowH2: false,
    };
    // Created (and undici loaded) on the first request: lazy-undici.ts.
    this.agent = new LazyAgent({ ...agentOptions, connect: { timeout: config.timeouts.connect } });
    this.outbound = new LazyAgent({ ...agentOptions, connect: { timeout: config.timeouts.connect, lookup: guardedLookup(() => this.local) } });
    this.tokens = new LRUCache<string, string, Challenge>({
      max: 1000,
      ttlAutopurge: false,
      fetchMethod: async (scope, _stale, { options, context }) => {
        const { token, ttlMs } = await this.fetchToken(context, scope);
        options.ttl = Math.max(1_000, ttlMs - TOKEN_MARGIN_MS);
        return token;
      },
    });
  }

  /**
   * Aborts every operation in flight (tag lists, manifests, blob downloads, token requests) and
   * closes the connections. Used at shutdown, once the grace period for answers in flight is over.
   */
  async close(): Promise<void> {
    this.closing.abort(new DOMException(`stevedore is shutting down; ${this.label} is no longer asked`, 'AbortError'));
    const agents = [this.agent, this.outbound];
    const closed = Promise.all(agents.map((a) => a.close().catch(() => undefined)));
    const late = await Promise.race([closed.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 1_000).unref())]);
    if (late) await Promise.all(agents.map((a) => a.destroy().catch(() => undefined)));
  }

  /**
   * Runs one operation other than a blob body under a signal that follows the caller's, the
   * client's closing, and the overall deadline (timeouts.request). When the signal aborted, its
   * reason is what is thrown (the deadline's UPSTREAM_TIMEOUT, or the caller's abort).
   */
  private async withDeadline<T>(what: string, signal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const op = new LinkedSignal([signal, this.closing.signal], { ms: this.config.timeouts.request, reason: () => this.deadlineError(what) });
    try {
      return await fn(op.signal);
    } catch (err) {
      if (op.signal.aborted) throw op.signal.reason;
      throw err;
    } finally {
      op.dispose();
    }
  }

  private deadlineError(what: string): UpstreamError {
    const within = `within ${formatMs(this.config.timeouts.request)} (timeouts.request)`;
    return new UpstreamError('timeout', this.name, `${this.label} did not complete ${what} ${within}`, { failure: `did not complete a request ${within}` });
  }

  /** The stall rule of bodies other than blobs, with the error a stalled one is destroyed with. */
  private bodyWatch(what: string): { rule: { windowMs: number; minBytes: number }; stalled: (bytes: number) => Error } {
    const t = this.config.timeouts;
    return {
      rule: { windowMs: t.stall, minBytes: t.minProgress },
      stalled: (bytes) =>
        new UpstreamError('timeout', this.name, `${this.label} stalled on ${what}: ${bytes} bytes in ${formatMs(t.stall)}, less than timeouts.minProgress (${t.minProgress}) per timeouts.stall`, {
          failure: 'stalled (timeouts.stall)',
        }),
    };
  }

  /** Finds out (again, once a minute) whether the upstream itself is on a loopback/private address. */
  private async checkLocality(): Promise<void> {
    if (Date.now() - this.localCheckedAt < LOCALITY_TTL_MS) return;
    this.localCheck ??= isLocalHost(new URL(this.config.url).hostname).then((local) => {
      this.local = local;
      this.localCheckedAt = Date.now();
      this.localCheck = null;
    });
    await this.localCheck;
  }

  /**
   * One HTTP request, on the upstream's own connections or, for another origin (one the upstream
   * named), on connections whose addresses are checked first (outbound-policy.ts).
   */
  private dispatch(url: URL, opts: { method: 'GET' | 'HEAD' | 'POST'; headers: Headers; body?: string; signal: AbortSignal | null }): Promise<Dispatcher.ResponseData> {
    const tracer = activeTracer();
    if (!tracer) return this.dispatchNow(url, opts);
    // A client span per request, its context sent as `traceparent`: a stevedore upstream (a
    // node's central one) continues this trace.
    const headers = { ...opts.headers };
    return tracedRequest(tracer, opts.method, url, { 'stevedore.upstream': this.name }, headers, () => this.dispatchNow(url, { ...opts, headers }));
  }

  private async dispatchNow(url: URL, opts: { method: 'GET' | 'HEAD' | 'POST'; headers: Headers; body?: string; signal: AbortSignal | null }): Promise<Dispatcher.ResponseData> {
    let lazy = this.agent;
    if (url.origin !== this.origin) {
      await this.checkLocality();
      checkAddressLiteral(url.hostname, this.local);
      lazy = this.outbound;
    }
    const agent = await lazy.get();
    return agent.request({
      origin: url.origin,
      path: url.pathname + url.search,
      method: opts.method,
      headers: opts.headers,
      ...(opts.body !== undefined ? { body: opts.body } : {}),
      signal: opts.signal,
    });
  }

  /** Whether credentials are configured (static, or a credential source). */
  get hasCredentials(): boolean {
    return this.config.credentials !== null || this.credentialProvider !== null;
  }

  /**
   * The credential to present: the configured username/password, or what the credential source
   * gives now (cached by it, renewed before it expires). A failing source is an `unavailable`
   * error naming the upstream; its cause (never a secret, but a helper's output, file paths, role
   * ARNs, tenant ids: the operator's business) is said in the log only, once per streak.
   */
  private async credential(): Promise<Credential | null> {
    const c = this.config.credentials;
    if (c) return { kind: 'basic', username: c.username, password: c.password };
    const p = this.credentialProvider;
    if (!p) return null;
    try {
      const got = await p.get();
      if (this.credentialsFailing) {
        this.credentialsFailing = false;
        this.log.info(`credentials for ${this.label} are available again (${p.description})`);
      }
      return got;
    } catch (err) {
      const cause = err instanceof CredentialError ? err.message : `${p.description} failed`;
      if (!this.credentialsFailing) {
        this.credentialsFailing = true;
        this.log.warn({ cause, credentials: p.description }, `cannot get credentials for ${this.label}`);
      }
      throw new UpstreamError('unavailable', this.name, `cannot get credentials for ${this.label} (its credential source failed; the cause is in stevedore's log)`, {
        failure: 'had no credentials (its credential source failed)',
      });
    }
  }

  /** The registry refused `used` (a 401 with it): a credential source fetches anew on the next use. */
  private refused(used: Credential | null): boolean {
    if (!used || !this.credentialProvider) return false;
    this.credentialProvider.invalidate(used);
    return true;
  }

  private static basicHeader(c: Credential | null): string | null {
    return c?.kind === 'basic' ? `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}` : null;
  }

  private async fetchToken(challenge: Challenge, scope: string): Promise<{ token: string; ttlMs: number }> {
    // Not tied to one caller: a token serves every request of its scope. Shutdown and the deadline stop it.
    return this.withDeadline('a token request', undefined, async (signal) => {
      try {
        return await this.requestToken(challenge, scope, signal);
      } catch (err) {
        // The token service refused what a credential source gave (expired, revoked): fetched anew, asked once more.
        if (err instanceof RefusedCredential && this.refused(err.used)) return this.requestToken(challenge, scope, signal).catch((e: unknown) => {
          throw e instanceof RefusedCredential ? e.error : e;
        });
        throw err instanceof RefusedCredential ? err.error : err;
      }
    });
  }

  private async requestToken(challenge: Challenge, scope: string, signal: AbortSignal): Promise<{ token: string; ttlMs: number }> {
    const realm = challenge.params.realm;
    if (!realm) throw new UpstreamError('bad_response', this.name, `${this.label} sent a Bearer challenge without realm`);
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new UpstreamError('bad_response', this.name, `${this.label} sent an invalid token realm`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new UpstreamError('bad_response', this.name, `${this.label} sent a token realm that is not http(s)`);
    }
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    if (scope) url.searchParams.set('scope', scope);
    const headers: Headers = { accept: 'application/json', 'user-agent': 'stevedore' };
    let cred = this.hasCredentials ? await this.credential() : null;
    if (cred && !mayReceiveCredentials(url, this.origin)) {
      // Plain http to an origin the upstream named: the password would cross the network in the clear.
      cred = null;
      if (!this.warnedRealm) {
        this.warnedRealm = true;
        this.log.warn({ realm: url.origin }, 'the token realm is neither https nor the upstream\'s own origin: asking it anonymously, without the configured credentials');
      }
    }
    let res: Dispatcher.ResponseData;
    let body: Buffer | null;
    try {
      if (cred?.kind === 'refresh_token') {
        // An identity token (ACR's refresh token): OAuth2 refresh_token grant, POSTed to the realm.
        const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: cred.refreshToken });
        if (challenge.params.service) form.set('service', challenge.params.service);
        if (scope) form.set('scope', scope);
        url.search = '';
        res = await this.dispatch(url, { method: 'POST', headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString(), signal });
      } else {
        const basic = SourceClient.basicHeader(cred);
        res = await this.dispatch(url, { method: 'GET', headers: basic ? { ...headers, authorization: basic } : headers, signal });
      }
      body = await readLimited(res.body, ERROR_BODY_LIMIT, this.bodyWatch('a token request'));
    } catch (err) {
      throw mapTransportError(err, this.name, 'token request', undefined, this.label);
    }
    if (res.statusCode === 401 || res.statusCode === 403) {
      const error = new UpstreamError('denied', this.name, `${this.label} token service refused ${cred ? 'the configured credentials' : 'anonymous access'} for ${scope || 'its API'}`, {
        status: res.statusCode,
      });
      throw cred ? new RefusedCredential(cred, error) : error;
    }
    if (res.statusCode === 429) {
      throw new UpstreamError('rate_limited', this.name, `${this.label} token service is rate-limiting`, { status: 429 });
    }
    if (res.statusCode !== 200 || !body) {
      throw new UpstreamError(res.statusCode >= 500 ? 'unavailable' : 'bad_response', this.name, `${this.label} token service answered ${res.statusCode}`, {
        status: res.statusCode,
      });
    }
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      doc = JSON.parse(body.toString('utf8')) as typeof doc;
    } catch {
      throw new UpstreamError('bad_response', this.name, `${this.label} token service sent invalid JSON`);
    }
    const token = typeof doc.token === 'string' ? doc.token : typeof doc.access_token === 'string' ? doc.access_token : null;
    if (!token) throw new UpstreamError('bad_response', this.name, `${this.label} token service sent no token`);
    const seconds = typeof doc.expires_in === 'number' && doc.expires_in > 0 ? doc.expires_in : DEFAULT_TOKEN_SECONDS;
    return { token, ttlMs: seconds * 1000 };
  }

  /** The Authorization for a request of `scope`, and the credential it was made with (Basic). */
  private async authorization(scope: string, forceRefresh = false): Promise<{ header: string | null; basic: Credential | null }> {
    if (this.bearerChallenge) {
      const token = await this.tokens.fetch(scope, { context: this.bearerChallenge, forceRefresh });
      return { header: token ? `Bearer ${token}` : null, basic: null };
    }
    if (this.basicChallenged) {
      const cred = await this.credential();
      return { header: SourceClient.basicHeader(cred), basic: cred };
    }
    return { header: null, basic: null };
  }

  /**
   * Sends one request, authenticating as the upstream asks (at most one retry after a 401) and
   * following redirects for GET/HEAD. Non-2xx answers are returned, not thrown; their body is the
   * caller's to consume or dump.
   */
  async request(opts: RequestOptions): Promise<UpstreamResponse> {
    if (this.offline) {
      throw new UpstreamError('offline', this.name, offlineMessage(this.name, opts.what));
    }
    if (this.health) {
      const gate = await this.health.gate(this.healthKey);
      if (!gate.open) {
        throw new UpstreamError(gate.kind, this.name, `${this.label} not contacted for ${opts.what}: ${gate.reason}, retry in ${gate.retryAfterSec} s`, {
          retryAfter: gate.retryAfterSec,
        });
      }
    }
    let res: UpstreamResponse;
    try {
      res = await this.authenticated(opts);
    } catch (err) {
      this.count(opts.method, 0);
      // A request its caller stopped (a client that left) says nothing of the upstream's health;
      // the deadline's abort (an UpstreamError) does.
      const stopped = opts.signal?.aborted === true && !(opts.signal.reason instanceof UpstreamError);
      if (!stopped && err instanceof UpstreamError && (err.kind === 'unavailable' || err.kind === 'timeout')) await this.failed(`${this.label} ${err.failure}`, err.message);
      throw err;
    }
    this.count(opts.method, res.status);
    await this.observe(res);
    return res;
  }

  private count(method: string, status: number): void {
    const key = `${method} ${status}`;
    this.requestCounts.set(key, (this.requestCounts.get(key) ?? 0) + 1);
  }

  /** Feeds an answer to the health record: quota headers, 429 cool-down, 5xx failures. */
  private async observe(res: UpstreamResponse): Promise<void> {
    if (!this.health) return;
    const remaining = parseQuota(header(res.headers, 'ratelimit-remaining'));
    if (remaining) {
      const limit = parseQuota(header(res.headers, 'ratelimit-limit'));
      await this.health.quota(this.healthKey, remaining.value, limit?.value ?? null, remaining.window ?? limit?.window ?? null);
    }
    if (res.status === 429) {
      const secs = await this.health.rateLimited(this.healthKey, parseRetryAfter(header(res.headers, 'retry-after')));
      this.log.warn({ retryAfterSec: secs }, 'upstream rate-limited us; cooling down');
    } else if (res.status >= 500) {
      const cause = `${this.label} answered ${res.status}`;
      await this.failed(cause, cause);
    } else if (await this.health.succeeded(this.healthKey)) {
      this.log.info(`${this.label} answers again`);
    }
  }

  /**
   * Records a failure; says so in the log once, when it opens the breaker (then this source is
   * skipped until the breaker lets a request through), not once per request. `failure`: its
   * class, which the breaker keeps and every client of the upstream is then told; `detail`: the
   * whole message (what was asked), for the log only.
   */
  private async failed(failure: string, detail: string): Promise<void> {
    if (!this.health) return;
    const opened = await this.health.failed(this.healthKey, this.fastFail ? 1 : undefined, failure);
    // Requests that failed together may each see themselves open it: said once.
    if (opened && Date.now() >= this.saidOpenUntil) {
      this.saidOpenUntil = Date.now() + opened;
      this.log.warn({ cause: detail, skippedForSec: Math.ceil(opened / 1000) }, `${this.label} is failing; not asked until its circuit breaker lets a request through`);
    }
  }

  /** `/v2/<name>/<rest>` as this source is asked for the upstream's repository `name`. */
  private apiPath(name: string, rest: string): string {
    if (this.namespace === 'path') return `/v2/${this.name}/${name}/${rest}`;
    if (this.namespace === 'ns') return `/v2/${name}/${rest}?ns=${encodeURIComponent(this.name)}`;
    return `/v2/${name}/${rest}`;
  }

  /** The token scope for `name`: a stevedore names proxied repositories `<upstream>/<name>`. */
  private scope(name: string): string {
    return `repository:${this.namespace === 'none' ? name : `${this.name}/${name}`}:pull`;
  }

  /** A next-page path keeps the namespace (a stevedore's Link may leave `ns` out). */
  private withNamespace(next: string | null): string | null {
    if (!next || this.namespace !== 'ns' || /[?&]ns=/.test(next)) return next;
    return `${next}${next.includes('?') ? '&' : '?'}ns=${encodeURIComponent(this.name)}`;
  }

  /**
   * Sends a request with the Authorization the upstream asked for. A 401 is answered once: with a
   * token for the challenge (fetched anew), or with Basic credentials; when the Basic credentials
   * sent were a credential source's, the source is asked anew first (they expired or were revoked).
   */
  private async authenticated(opts: RequestOptions): Promise<UpstreamResponse> {
    let auth = await this.authorization(opts.scope);
    // Whether a credential source was asked anew for this request (once at most).
    let renewed = false;
    for (let attempt = 0; ; attempt++) {
      const res = await this.send(opts, auth.header);
      if (res.status !== 401) return res;
      // Answered once already; again only when Basic credentials from a source were refused and not yet renewed.
      if (attempt > 0 && (renewed || !auth.basic || !this.credentialProvider)) return res;
      const challenge = parseWwwAuthenticate(header(res.headers, 'www-authenticate'));
      res.body.resume();
      if (challenge?.scheme === 'bearer' && attempt === 0) {
        this.bearerChallenge = challenge;
        auth = await this.authorization(opts.scope, true);
      } else if (challenge?.scheme === 'basic' && this.hasCredentials) {
        this.basicChallenged = true;
        if (this.refused(auth.basic)) renewed = true;
        const cred = await this.credential();
        if (cred?.kind !== 'basic') {
          throw new UpstreamError('denied', this.name, `${this.label} asks for Basic authentication, but its credential source gives a token`, { status: 401 });
        }
        auth = { header: SourceClient.basicHeader(cred), basic: cred };
      } else {
        throw new UpstreamError('denied', this.name, `${this.label} requires authentication for ${opts.what}${this.hasCredentials ? '' : ' (no credentials configured)'}`, {
          status: 401,
        });
      }
    }
  }

  private async send(
    opts: { method: 'GET' | 'HEAD'; path: string; headers?: Headers; signal?: AbortSignal; what: string; follow?: boolean },
    auth: string | null,
  ): Promise<UpstreamResponse> {
    let url = new URL(opts.path, this.config.url);
    for (let hop = 0; ; hop++) {
      const headers: Headers = { 'user-agent': 'stevedore', ...opts.headers };
      // Authorization goes only to the upstream's own origin, never along a redirect to a CDN.
      if (auth && url.origin === this.origin) headers.authorization = auth;
      let res: Dispatcher.ResponseData;
      try {
        res = await this.dispatch(url, { method: opts.method, headers, signal: opts.signal ?? null });
      } catch (err) {
        throw mapTransportError(err, this.name, opts.what, hop > 0 ? url.host : undefined, this.label);
      }
      const location = header(res.headers, 'location');
      // Not followed: the caller maps the 3xx like any other answer it cannot use.
      if (REDIRECT_STATUSES.has(res.statusCode) && location && opts.follow) {
        res.body.resume();
        if (hop >= MAX_REDIRECTS) {
          throw new UpstreamError('bad_response', this.name, `${this.label} redirected more than ${MAX_REDIRECTS} times on ${opts.what}`);
        }
        const next = new URL(location, url);
        if (next.protocol !== 'https:' && next.protocol !== 'http:') {
          throw new UpstreamError('bad_response', this.name, `${this.label} redirected to a non-http URL on ${opts.what}`);
        }
        url = next;
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body };
    }
  }

  /** Reads an error answer (bounded) and throws the matching UpstreamError. */
  private async fail(res: UpstreamResponse, what: string): Promise<never> {
    const body = await readLimited(res.body, ERROR_BODY_LIMIT).catch(() => null);
    let upstreamCode: OciErrorCode | undefined;
    let upstreamMessage = '';
    if (body && body.length) {
      try {
        const doc = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: unknown; message?: unknown }> };
        const first = doc.errors?.[0];
        if (first && typeof first.code === 'string' && first.code in OCI_ERRORS) upstreamCode = first.code as OciErrorCode;
        if (first && typeof first.message === 'string') upstreamMessage = first.message.slice(0, 200);
      } catch {
        // not JSON: ignore the body, the status says enough
      }
    }
    const s = res.status;
    // Said the same whether the upstream answered a GET (with a body) or a HEAD (without): a digest
    // stored here that the repository does not link is checked with a HEAD, one stored nowhere is
    // fetched with a GET, and the two answers must not tell them apart (docs/ARCHITECTURE.md rule 9).
    if (s === 404) throw new UpstreamError('not_found', this.name, `${what} not found at ${this.label}`, { status: s, ...(upstreamCode ? { upstreamCode } : {}) });
    if (s === 401 || s === 403) {
      throw new UpstreamError('denied', this.name, `${this.label} denied access to ${what} (it does not exist or needs credentials)`, { status: s });
    }
    if (s === 429) {
      const ra = header(res.headers, 'retry-after');
      const retryAfter = parseRetryAfter(ra);
      throw new UpstreamError('rate_limited', this.name, `${this.label} is rate-limiting (429) on ${what}`, {
        status: s,
        ...(retryAfter !== undefined ? { retryAfter } : {}),
      });
    }
    if (s >= 500) throw new UpstreamError('unavailable', this.name, `${this.label} answered ${s} on ${what}`, { status: s });
    // Its code, not its text: the message may reach a status line (see UpstreamError.upstreamMessage).
    throw new UpstreamError('bad_response', this.name, `${this.label} answered ${s} on ${what}${upstreamCode ? ` (${upstreamCode})` : ''}`, {
      status: s,
      ...(upstreamCode ? { upstreamCode } : {}),
      ...(upstreamMessage ? { upstreamMessage } : {}),
    });
  }

  /** Whether redirects are followed on requests other than blob GETs. */
  private get followAll(): boolean {
    return this.config.redirects === 'all';
  }

  /** A manifest request, always with every manifest media type in Accept (see MANIFEST_ACCEPT). */
  private manifestRequest(method: 'GET' | 'HEAD', name: string, ref: string, what: string, signal: AbortSignal): Promise<UpstreamResponse> {
    return this.request({
      method,
      path: this.apiPath(name, `manifests/${ref}`),
      scope: this.scope(name),
      headers: { accept: MANIFEST_ACCEPT },
      what,
      signal,
      follow: this.followAll,
    });
  }

  async headManifest(name: string, ref: string, signal?: AbortSignal): Promise<ManifestHead> {
    const what = `manifest ${name}:${ref}`;
    return this.withDeadline(what, signal, async (op) => {
      const res = await this.manifestRequest('HEAD', name, ref, what, op);
      if (res.status !== 200) {
        // A HEAD answer has no body; map the status alone.
        res.body.resume();
        return this.fail({ ...res, body: emptyBody(res.body) }, what);
      }
      res.body.resume();
      const len = header(res.headers, 'content-length');
      const stale = staleWarning(res.headers);
      return {
        digest: header(res.headers, 'docker-content-digest') ?? null,
        mediaType: normalizeContentType(header(res.headers, 'content-type') ?? ''),
        size: len !== undefined && /^\d+$/.test(len) ? Number(len) : null,
        ...(stale ? { stale: `${this.label}: ${stale}` } : {}),
      };
    });
  }

  async getManifest(name: string, ref: string, maxSize: number, signal?: AbortSignal): Promise<FetchedManifest> {
    const what = `manifest ${name}:${ref}`;
    return this.withDeadline(what, signal, async (op) => {
      const res = await this.manifestRequest('GET', name, ref, what, op);
      if (res.status !== 200) return this.fail(res, what);
      const len = header(res.headers, 'content-length');
      if (len !== undefined && Number(len) > maxSize) {
        discard(res.body);
        throw new UpstreamError('bad_response', this.name, `${this.label} sent a manifest of ${len} bytes for ${name}:${ref}, above the limit of ${maxSize} (cache.manifestMaxSize)`, {
          upstreamCode: 'MANIFEST_INVALID',
        });
      }
      let bytes: Buffer | null;
      try {
        bytes = await readLimited(res.body, maxSize, this.bodyWatch(what));
      } catch (err) {
        throw mapTransportError(err, this.name, what, undefined, this.label);
      }
      if (!bytes) {
        throw new UpstreamError('bad_response', this.name, `${this.label} sent a manifest above the limit of ${maxSize} bytes for ${name}:${ref} (cache.manifestMaxSize)`, {
          upstreamCode: 'MANIFEST_INVALID',
        });
      }
      const stale = staleWarning(res.headers);
      return {
        bytes,
        mediaType: normalizeContentType(header(res.headers, 'content-type') ?? ''),
        digest: header(res.headers, 'docker-content-digest') ?? null,
        ...(stale ? { stale: `${this.label}: ${stale}` } : {}),
      };
    });
  }

  /**
   * Size of a blob upstream (HEAD). A redirect answer (to a CDN, not followed unless `redirects:
   * all`) says the upstream has the blob: its size is then unknown.
   */
  async headBlob(name: string, digest: string, signal?: AbortSignal): Promise<{ size: number | null }> {
    const what = `blob ${name}@${digest}`;
    return this.withDeadline(what, signal, async (op) => {
      const res = await this.request({
        method: 'HEAD',
        path: this.apiPath(name, `blobs/${digest}`),
        scope: this.scope(name),
        what,
        signal: op,
        follow: this.followAll,
      });
      res.body.resume();
      if (REDIRECT_STATUSES.has(res.status) && header(res.headers, 'location')) return { size: null };
      if (res.status !== 200) return this.fail({ ...res, body: emptyBody(res.body) }, what);
      const len = header(res.headers, 'content-length');
      return { size: len !== undefined && /^\d+$/.test(len) ? Number(len) : null };
    });
  }

  /**
   * Starts a blob download. Resolves with the streaming body once headers arrived; the caller
   * consumes it. `start` asks for the bytes from that offset on (Range), e.g. to resume; `end` (a
   * client's range, lib/cache/upstream-ranges.ts) up to that byte; `suffix` the last that many
   * bytes (`bytes=-N`: a client's suffix range). A 206 whose Content-Range is not what was asked is
   * refused (bad_response); for a suffix, it must say the blob's size and hold exactly its last N
   * bytes (or all of a shorter blob). `partial` says the answer is a 206; `end` is its last byte.
   */
  async getBlob(
    name: string,
    digest: string,
    opts: { start?: number; end?: number; suffix?: number; signal?: AbortSignal } = {},
  ): Promise<{ size: number | null; start: number; end: number | null; body: Readable; partial: boolean }> {
    const what = `blob ${name}@${digest}`;
    const headers: Headers = {};
    if (opts.suffix !== undefined) headers.range = `bytes=-${opts.suffix}`;
    else if (opts.end !== undefined) headers.range = `bytes=${opts.start ?? 0}-${opts.end}`;
    else if (opts.start) headers.range = `bytes=${opts.start}-`;
    // The deadline covers the answer's head; the body has none (a 10 GiB layer on a slow link is
    // fine): its progress is watched by the download. The caller's signal and shutdown still end it.
    const op = new LinkedSignal([opts.signal, this.closing.signal], { ms: this.config.timeouts.request, reason: () => this.deadlineError(what) });
    let res: UpstreamResponse;
    try {
      res = await this.request({
        method: 'GET',
        path: this.apiPath(name, `blobs/${digest}`),
        scope: this.scope(name),
        headers,
        what,
        signal: op.signal,
        follow: true,
      });
    } catch (err) {
      op.dispose();
      throw op.signal.aborted ? op.signal.reason : err;
    }
    res.body.once('close', () => op.dispose());
    // An error answer's body is read under the deadline still; a blob's body is not.
    if (res.status !== 200 && res.status !== 206) return this.fail(res, what);
    op.endDeadline();
    const len = header(res.headers, 'content-length');
    const length = len !== undefined && /^\d+$/.test(len) ? Number(len) : null;
    if (res.status === 206) {
      // Content-Range: bytes START-END/TOTAL
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header(res.headers, 'content-range') ?? '');
      const [start, end, total] = m ? [Number(m[1]), Number(m[2]), m[3] === '*' ? null : Number(m[3])] : [NaN, NaN, null];
      const usable =
        m !== null &&
        start <= end &&
        (opts.suffix !== undefined
          ? // The last N bytes of a blob of a said size: nothing else is that suffix.
            total !== null && end === total - 1 && end - start + 1 === Math.min(opts.suffix, total)
          : start === (opts.start ?? 0) && (opts.end === undefined || end === opts.end));
      if (!usable) {
        discard(res.body);
        throw new UpstreamError('bad_response', this.name, `${this.label} answered a range request for ${what} with an unusable Content-Range`, { failure: BAD_CONTENT_RANGE });
      }
      return { size: total, start, end, body: res.body, partial: true };
    }
    // 200: the whole blob, from byte 0, whatever was asked.
    return { size: length, start: 0, end: length === null ? null : length - 1, body: res.body, partial: false };
  }

  /**
   * One page of a paged JSON answer (tags list, referrers), read within `budget` bytes: past it
   * `tooLarge`, unparseable `invalid`, both as bad_response errors. Returns the document and its size.
   */
  private async readJsonPage<T>(res: UpstreamResponse, budget: number, what: string, tooLarge: string, invalid: string): Promise<{ doc: T; bytes: number }> {
    let body: Buffer | null;
    try {
      body = await readLimited(res.body, budget, this.bodyWatch(what));
    } catch (err) {
      throw mapTransportError(err, this.name, what, undefined, this.label);
    }
    if (!body) throw new UpstreamError('bad_response', this.name, tooLarge);
    try {
      return { doc: JSON.parse(body.toString('utf8')) as T, bytes: body.length };
    } catch {
      throw new UpstreamError('bad_response', this.name, invalid);
    }
  }

  /**
   * The referrers of `digest` (distribution-spec 1.1 referrers API), every page followed: the
   * `manifests` of the index the upstream answers with. Null when the upstream answers 404 (a
   * registry without the API; the caller falls back to the referrers tag schema).
   */
  async getReferrers(name: string, digest: string, opts: { maxBytes: number; signal?: AbortSignal }): Promise<unknown[] | null> {
    const what = `referrers of ${name}@${digest}`;
    return this.withDeadline(what, opts.signal, async (signal) => {
      const manifests: unknown[] = [];
      let read = 0;
      let path: string | null = this.apiPath(name, `referrers/${digest}`);
      for (let page = 0; path && page < 100; page++) {
        const res: UpstreamResponse = await this.request({
          method: 'GET',
          path,
          scope: this.scope(name),
          headers: { accept: MediaTypeOciIndex },
          what,
          signal,
          follow: this.followAll,
        });
        if (res.status === 404 && page === 0) {
          discard(res.body);
          return null;
        }
        if (res.status !== 200) return this.fail(res, what);
        const got = await this.readJsonPage<{ manifests?: unknown }>(
          res,
          opts.maxBytes - read,
          what,
          `${this.label} sent referrers of ${name}@${digest} above ${opts.maxBytes} bytes in all (cache.manifestMaxSize)`,
          `${this.label} sent an invalid referrers index for ${name}@${digest}`,
        );
        read += got.bytes;
        const doc = got.doc;
        if (Array.isArray(doc.manifests)) manifests.push(...(doc.manifests as unknown[]));
        path = this.withNamespace(nextLink(header(res.headers, 'link'), this.config.url));
      }
      return manifests;
    });
  }

  /**
   * The complete tags list, following `Link: <...>; rel="next"` pages, within `limits` over all
   * pages together (past them: an error naming the setting, and no further page is asked for).
   * Stops when `signal` aborts (the client left), at shutdown, and at the deadline.
   */
  async listTags(name: string, limits: TagsListLimits, signal?: AbortSignal): Promise<string[]> {
    const what = `tags of ${name}`;
    return this.withDeadline(what, signal, async (op) => {
      const tags: string[] = [];
      let read = 0;
      let path: string | null = this.apiPath(name, 'tags/list');
      for (let page = 0; path && page < MAX_PAGES; page++) {
        const res: UpstreamResponse = await this.request({ method: 'GET', path, scope: this.scope(name), what, signal: op, follow: this.followAll });
        if (res.status !== 200) return this.fail(res, what);
        const got = await this.readJsonPage<{ tags?: unknown }>(
          res,
          limits.maxBytes - read,
          what,
          `${this.label} sent a tags list for ${name} above ${limits.maxBytes} bytes (cache.tagsListMaxBytes)`,
          `${this.label} sent an invalid tags list for ${name}`,
        );
        read += got.bytes;
        const doc = got.doc;
        if (doc.tags !== null && doc.tags !== undefined) {
          if (!Array.isArray(doc.tags)) throw new UpstreamError('bad_response', this.name, `${this.label} sent an invalid tags list for ${name}`);
          for (const t of doc.tags) if (typeof t === 'string') tags.push(t);
          if (tags.length > limits.maxTags) {
            throw new UpstreamError('bad_response', this.name, `${this.label} sent a tags list for ${name} of more than ${limits.maxTags} tags (cache.tagsListMaxTags)`);
          }
        }
        path = this.withNamespace(nextLink(header(res.headers, 'link'), this.config.url));
      }
      return tags;
    });
  }
}

/** A token service refused the credential a source gave: asked once more with a fresh one. */
class RefusedCredential extends Error {
  constructor(readonly used: Credential, readonly error: UpstreamError) {
    super(error.message);
  }
}

/**
 * The text of a `Warning: 110 <agent> "<text>"` (RFC 7234: response is stale), as another
 * stevedore marks an answer it served from its store while its upstream failed; else null.
 */
export function staleWarning(h: UpstreamResponse['headers']): string | null {
  const raw = h.warning;
  for (const w of Array.isArray(raw) ? raw : raw ? [raw] : []) {
    const m = /^\s*110\s+\S+\s+"((?:[^"\\]|\\.)*)"/.exec(w);
    if (m) return m[1]!.slice(0, 300);
    if (/^\s*110\b/.test(w)) return 'response is stale';
  }
  return null;
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

const MediaTypeOciIndex = 'application/vnd.oci.image.index.v1+json';

function emptyBody(body: Readable): Readable {
  return body;
}

/** `ratelimit-remaining: 76;w=21600` → { value: 76, window: 21600 }. */
function parseQuota(v: string | undefined): { value: number; window: number | null } | null {
  if (!v) return null;
  const m = /^\s*(\d+)\s*(?:;\s*w\s*=\s*(\d+))?/.exec(v);
  if (!m) return null;
  return { value: Number(m[1]), window: m[2] !== undefined ? Number(m[2]) : null };
}

function parseRetryAfter(v: string | undefined): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim());
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** The path of a `rel="next"` Link on the same origin, or null. */
function nextLink(link: string | undefined, base: string): string | null {
  if (!link) return null;
  const m = /<([^>]+)>\s*;\s*rel="?next"?/.exec(link);
  if (!m) return null;
  // A next page we cannot read ends the list, like one on another origin (new URL would throw a TypeError).
  let u: URL;
  try {
    u = new URL(m[1]!, base);
  } catch {
    return null;
  }
  if (u.origin !== new URL(base).origin) return null;
  return u.pathname + u.search;
}
