/**
 * Client authentication and access rules at the HTTP edge.
 *
 *   identify:  no Authorization → anonymous; Basic → htpasswd (bcrypt); Bearer → a token from our
 *              own endpoint. Bad credentials, expired or forged tokens → 401 UNAUTHORIZED + challenge.
 *   authorize: the actions the rules give that subject on the canonical repository (and, for a
 *              token, that the token also carries). All granted → go on. Else: anonymous → 401
 *              with the challenge (log in and come back); a user the rules refuse → 403 DENIED; a
 *              token that merely lacks the scope → 401 `insufficient_scope` (fetch a better token).
 *              With no htpasswd file there is nobody to log in as: push and delete → 403 saying so.
 *   token:     GET /token?service=&scope=... (Basic or anonymous), POST /token (OAuth2 password
 *              form, containerd). Grants what was asked ∩ what the rules allow. A user's token is
 *              bound to the user's htpasswd entry: once it changes (or goes), the token is refused.
 *   guessing:  each password check is counted first (login-throttle.ts), per (user, client address)
 *              and per address (behind `trustedProxies`, the X-Forwarded-For client; IPv6 per /64):
 *              10 for one user from one address, or 30 from one address, within a minute, then 429
 *              until the minute is over; per user from all addresses, from 10 on each login is
 *              delayed (1 s per failure from the tenth on, at most 5 s), never refused. bcrypt
 *              runs in worker threads with a bounded queue: full → 429 (bcrypt-pool.ts). Unknown
 *              users cost a bcrypt round too.
 *   catalog:   only the repositories the user may pull.
 *   /metrics:  anyone while `anonymousPull` is on; else a user (Basic or a user's token).
 *   dashboard: as /metrics, with a Basic challenge (browsers ask for a user and password).
 *   /v2/:      200 when anonymous clients may do all there is to do (no users, anonymous pull);
 *              else 401 with the challenge, which is what makes docker/podman/skopeo send credentials.
 *
 *   certificates: with tls.clientCA (client-certificate.ts), a verified client certificate names
 *              the requests that carry no credentials of their own: `cn:node-1` (tls.clientIdentity),
 *              a user like any other for the rules, the catalog, /metrics and the logs. Required
 *              (tls.clientAuth) and absent, or presented and not verified: 403 DENIED before
 *              anything else. A token issued on such a connection is bound to the certificate.
 *
 * Everything refused is an OciError; the edge answers it like any other.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { ACTIONS, type Action, type AuthConfig } from '../../config/auth-schema.js';
import { OciError } from '../../oci/errors.js';
import { sendJson } from '../respond.js';
import { AccessRules } from './access-rules.js';
import { bearerChallenge, parseAuthorization, parseScopes, type Scope } from './challenge.js';
import { BcryptPool, HashQueueFullError, type BcryptPoolOptions } from './bcrypt-pool.js';
import { ClientAddress } from './client-address.js';
import { Htpasswd, type Checked, type HashGate } from './htpasswd.js';
import { LoginThrottle, type LoginKeys } from './login-throttle.js';
import { TokenError, TokenIssuer, type TokenAccess, type TokenClaims } from './token-issuer.js';
import type { ActFields } from '../../events/acts.js';
import { isCertificateIdentity, type CertificateIdentity, type ClientCertificates } from './client-certificate.js';
import { readBoundedBody } from '../../util/request-body.js';

export const TOKEN_PATH = '/token';
/**
 * The dashboard's Basic realm: its own, so that the credentials a browser keeps for it are never
 * the ones it would answer the token endpoint's Basic challenge (realm `auth.token.service`) with.
 */
export const DASHBOARD_REALM = 'stevedore dashboard';
const TOKEN_BODY_MAX = 64 * 1024;

export interface AuthOptions {
  config: AuthConfig;
  log: Logger;
  clock?: { now(): number };
  /**
   * The canonical repository for a name as a client writes it in a path without `ns` (token
   * scopes carry no `ns`): `<upstream>/<name>` for proxied repositories, the name for hosted ones,
   * null when it names nothing this registry serves.
   */
  canonicalName: (name: string) => string | null;
  /** The configured upstreams' names: the default push grants never reach names under them (access-rules.ts). */
  upstreams: readonly string[];
  /** htpasswd change checks; default 1000 ms. */
  htpasswdCheckIntervalMs?: number;
  /** The bcrypt worker pool's size and queue (defaults in bcrypt-pool.ts). */
  hashing?: BcryptPoolOptions;
  /** Client certificates as identities (config tls.clientAuth not off); absent or null: none. */
  certificates?: ClientCertificates | null;
}

/** What a request wants from one repository. */
export interface RepositoryAccess {
  /** Canonical name, what rules match: `docker.io/library/alpine`, `lab/app`. */
  repository: string;
  /** The name for the challenge's scope: as the client wrote it, `<ns>/` before it when it sent `ns`. */
  name: string;
  actions: readonly Action[];
}

/** Per request: its logger, and who it turned out to be, told as soon as known (also when refused). */
export interface AuthContext {
  log?: Logger;
  identified?: (who: Identity) => void;
  /** The request's act emitter (lib/events): logins, failed logins, tokens issued. */
  act?: (fields: ActFields) => void;
}

export interface Identity {
  /** null: anonymous. A client certificate's identity is written `cn:node-1` (client-certificate.ts). */
  user: string | null;
  via: 'anonymous' | 'basic' | 'bearer' | 'certificate';
}

interface Identified extends Identity {
  token: TokenClaims | null;
}

export class Auth {
  private constructor(
    private readonly config: AuthConfig,
    private readonly log: Logger,
    private readonly rules: AccessRules,
    private readonly htpasswd: Htpasswd | null,
    private readonly tokens: TokenIssuer,
    private readonly canonicalName: (name: string) => string | null,
    private readonly throttle: LoginThrottle,
    private readonly clientAddress: ClientAddress,
    private readonly pool: BcryptPool,
    private readonly certificates: ClientCertificates | null,
  ) {}

  /** Reads the htpasswd and key files; an unreadable one stops start-up. */
  static async create(opts: AuthOptions): Promise<Auth> {
    const { config, log } = opts;
    const now = opts.clock ? () => opts.clock!.now() : Date.now;
    // Workers start on the first password check, so a registry without users never has any.
    const pool = new BcryptPool(opts.hashing);
    const htpasswd =
      config.htpasswd === null
        ? null
        : await Htpasswd.load(config.htpasswd, { log, now, pool, ...(opts.htpasswdCheckIntervalMs !== undefined ? { checkIntervalMs: opts.htpasswdCheckIntervalMs } : {}) });
    const key = await TokenIssuer.loadKey(config.token.key);
    const tokens = new TokenIssuer({ issuer: config.token.issuer, service: config.token.service, ttlMs: config.token.ttl, key, now });
    const rules = new AccessRules({ rules: config.rules, groups: config.groups, anonymousPull: config.anonymousPull, upstreams: opts.upstreams });
    if (htpasswd === null) log.info('auth: no htpasswd file, so no users: only what the rules grant to anonymous clients is allowed');
    return new Auth(config, log, rules, htpasswd, tokens, opts.canonicalName, new LoginThrottle({ now }), new ClientAddress(config.trustedProxies), pool, opts.certificates ?? null);
  }

  /** The client's address as logins are counted against it (client-address.ts). */
  addressOf(req: IncomingMessage): string {
    return this.clientAddress.of(req);
  }

  /** Stops the bcrypt workers. */
  async close(): Promise<void> {
    await this.pool.close();
  }

  /** Anonymous clients can do everything anyone could: nothing would be gained by logging in. */
  get anonymousFullyAllowed(): boolean {
    return this.htpasswd === null && this.rules.anonymousPullsEverything();
  }

  /** The token endpoint URL: configured, or `<scheme>://<Host>/token` from the request. */
  realm(req: IncomingMessage): string {
    if (this.config.token.realm !== null) return this.config.token.realm;
    return `${requestOrigin(req)}${TOKEN_PATH}`;
  }

  /**
   * The origins this server is reached at, as a browser writes them in `Origin`: the request's own
   * (`<scheme>://<Host>`), and the configured token realm's. A write from any other is a browser's
   * for another site (cross-site.ts).
   */
  ownOrigins(req: IncomingMessage): string[] {
    const own = [new URL(requestOrigin(req)).origin];
    if (this.config.token.realm !== null) own.push(new URL(this.config.token.realm).origin);
    return own;
  }

  /** `GET /v2/`: 200 when no login is needed or the credentials are good; else 401 with the challenge. */
  async checkBase(req: IncomingMessage, ctx: AuthContext = {}): Promise<Identity> {
    const who = await this.identify(req, undefined, ctx);
    if (who.via === 'anonymous' && !this.anonymousFullyAllowed) {
      throw this.unauthorized(req, 'authentication required', undefined);
    }
    return publicIdentity(who);
  }

  /** Before any repository request: resolves with who asked, or throws 401 / 403. */
  async authorize(req: IncomingMessage, access: RepositoryAccess, ctx: AuthContext = {}): Promise<Identity> {
    const scope: Scope = { type: 'repository', name: access.name, actions: [...access.actions] };
    const who = await this.identify(req, scope, ctx);
    const byRules = this.rules.allowed(who.user, access.repository);
    const byToken = who.token ? tokenActions(who.token, 'repository', access.repository) : null;
    const missing = access.actions.filter((a) => !byRules.has(a) || (byToken !== null && !byToken.has(a)));
    if (missing.length === 0) return publicIdentity(who);
    const rulesAllow = access.actions.every((a) => byRules.has(a));
    const what = `${missing.join(', ')} on ${access.name}`;
    if (rulesAllow) {
      // Only the token falls short (issued for another scope): ask for one with this scope.
      throw this.unauthorized(req, `token does not grant ${what}`, scope, 'insufficient_scope');
    }
    if (who.user === null) {
      if (this.htpasswd === null) {
        const needsUser = missing.some((a) => a !== 'pull');
        throw new OciError(
          'DENIED',
          needsUser
            ? `${what} requires a user, and this registry has none (auth.htpasswd is not set): ${missing.filter((a) => a !== 'pull').join(', ')} is refused`
            : `anonymous ${what} is not allowed, and this registry has no users to log in as (auth.htpasswd is not set)`,
          { detail: scopeDetail(scope) },
        );
      }
      throw this.unauthorized(req, `authentication required to ${what}`, scope);
    }
    throw new OciError('DENIED', `user ${who.user} may not ${what}`, { detail: scopeDetail(scope) });
  }

  /** `GET /v2/_catalog`: users, and anonymous clients when anonymous pull is on. */
  async authorizeCatalog(req: IncomingMessage, ctx: AuthContext = {}): Promise<Identity> {
    const scope: Scope = { type: 'registry', name: 'catalog', actions: ['*'] };
    const who = await this.identify(req, scope, ctx);
    const allowed = this.catalogAllowed(who.user);
    const tokenOk = who.token === null || who.token.access.some((a) => a.type === 'registry' && a.name === 'catalog');
    if (allowed && tokenOk) return publicIdentity(who);
    if (allowed) throw this.unauthorized(req, 'token does not grant the catalog', scope, 'insufficient_scope');
    if (who.user === null && this.htpasswd !== null) throw this.unauthorized(req, 'authentication required to list repositories', scope);
    throw new OciError('DENIED', who.user === null ? 'anonymous clients may not list repositories' : `user ${who.user} may not list repositories`);
  }

  /** Whether `user` (null: anonymous) may pull `repository` (a canonical name), by the rules: what the catalog lists. */
  mayPull(user: string | null, repository: string): boolean {
    return this.rules.allowed(user, repository).has('pull');
  }

  /**
   * `GET /metrics`: anyone while anonymous clients may pull; with `anonymousPull: false`, a user
   * (Basic credentials, or a token issued to a user): the metrics say what is cached and who is busy.
   */
  async authorizeMetrics(req: IncomingMessage, ctx: AuthContext = {}): Promise<Identity> {
    const who = await this.identify(req, undefined, ctx);
    if (this.config.anonymousPull || who.user !== null) return publicIdentity(who);
    if (this.htpasswd !== null) throw this.unauthorized(req, 'authentication required to read metrics (auth.anonymousPull is false)', undefined);
    throw new OciError('DENIED', 'metrics need a user when auth.anonymousPull is false, and this registry has none (auth.htpasswd is not set)');
  }

  /**
   * `POST /_stevedore/preheat` (a warm mark: every chosen node instance fetches the images): a
   * user (Basic credentials, or a token issued to a user) whom the rules allow to pull every one
   * of `repositories` (canonical names). Never anonymous, even with `anonymousPull` on: one
   * request makes every node of the group fetch.
   */
  async authorizePreheat(req: IncomingMessage, repositories: readonly string[], ctx: AuthContext = {}): Promise<Identity> {
    const who = await this.identify(req, undefined, ctx);
    if (who.user === null) {
      if (this.htpasswd !== null) throw this.unauthorized(req, 'authentication required to make a warm mark (pre-heat)', undefined);
      throw new OciError('DENIED', 'a warm mark (pre-heat) needs a user, and this registry has none (auth.htpasswd is not set)');
    }
    const refused = repositories.filter((r) => !this.rules.allowed(who.user, r).has('pull'));
    if (refused.length) throw new OciError('DENIED', `user ${who.user} may not pull ${refused.join(', ')}: no warm mark for it`);
    return publicIdentity(who);
  }

  /**
   * The dashboard (`/`, `/ui/...`): who may look is who may read /metrics, but the challenge is
   * Basic, the one a browser answers by asking for a user and password (the same htpasswd users),
   * in a realm of its own (DASHBOARD_REALM). The browser then sends those credentials with every
   * request to this origin, also ones another site makes it send: writes that look like that are
   * refused at the edge (cross-site.ts).
   * A viewer's repository names are filtered by `mayPull` (lib/server/dashboard).
   */
  async authorizeDashboard(req: IncomingMessage, ctx: AuthContext = {}): Promise<Identity> {
    const basic = (message: string): OciError =>
      new OciError('UNAUTHORIZED', message, { headers: { 'WWW-Authenticate': `Basic realm="${DASHBOARD_REALM}", charset="UTF-8"` } });
    let who: Identified;
    try {
      who = await this.identify(req, undefined, ctx);
    } catch (err) {
      if (err instanceof OciError && err.status === 401) throw basic(err.message);
      throw err;
    }
    if (this.config.anonymousPull || who.user !== null) return publicIdentity(who);
    if (this.htpasswd !== null) throw basic('authentication required to see the dashboard (auth.anonymousPull is false)');
    throw new OciError('DENIED', 'the dashboard needs a user when auth.anonymousPull is false, and this registry has none (auth.htpasswd is not set)');
  }

  /** `GET|POST /token`: writes the answer. */
  async handleToken(req: IncomingMessage, res: ServerResponse, query: URLSearchParams, ctx: AuthContext = {}): Promise<Identity> {
    const log = ctx.log ?? this.log;
    const head = req.method === 'HEAD';
    // Required and absent, or presented and refused: 403 before any password is looked at.
    const certificate = this.certificates?.identify(req) ?? null;
    let params = query;
    let user: string | null = null;
    let via: Identity['via'] = 'anonymous';
    /** For a user: the hash the password matched, which the token is bound to. */
    let hash: string | null = null;
    if (req.method === 'POST') {
      params = new URLSearchParams(await readForm(req));
      const grant = params.get('grant_type');
      if (grant !== null && grant !== 'password') {
        // refresh_token grants (identity tokens) are not issued here; containerd falls back to GET.
        sendJson(res, 400, { error: 'unsupported_grant_type', error_description: `grant_type ${grant.slice(0, 40)} is not supported; use password` });
        return { user: null, via };
      }
      const username = params.get('username');
      const password = params.get('password');
      if (username !== null && username !== '') {
        hash = await this.checkPassword(username, password ?? '', req, log, 'token', undefined, ctx.act);
        user = username;
        via = 'basic';
      }
    } else if (req.method !== 'GET' && !head) {
      throw new OciError('UNSUPPORTED', `${req.method} is not supported on ${TOKEN_PATH}`, { headers: { Allow: 'GET, HEAD, POST' } });
    }
    if (user === null) {
      const creds = parseAuthorization(req.headers.authorization);
      if (creds.kind === 'basic') {
        hash = await this.checkPassword(creds.user, creds.password, req, log, 'token', undefined, ctx.act);
        user = creds.user;
        via = 'basic';
      } else if (creds.kind !== 'none') {
        throw new OciError('UNAUTHORIZED', creds.kind === 'invalid' ? creds.reason : 'the token endpoint takes Basic credentials', {
          headers: { 'WWW-Authenticate': `Basic realm="${this.config.token.service}"` },
        });
      }
    }
    let binding = user !== null && hash !== null ? this.tokens.binding(user, hash) : null;
    if (user === null && certificate !== null) {
      // No credentials: the token is the certificate's, honoured only where it is presented again.
      user = certificate.user;
      via = 'certificate';
      binding = this.tokens.certificateBinding(certificate.user, certificate.fingerprint256);
    }
    ctx.identified?.({ user, via });
    const access = this.grant(user, parseScopes(params.getAll('scope')));
    const issued = await this.tokens.issue(user, access, binding);
    log.debug({ user, access }, 'token issued');
    ctx.act?.({ type: 'token.issued', user, scopes: access.map((a) => `${a.type}:${a.name}:${a.actions.join(',')}`) });
    sendJson(
      res,
      200,
      {
        token: issued.token,
        access_token: issued.token,
        expires_in: issued.expiresIn,
        issued_at: issued.issuedAt,
        ...(req.method === 'POST' ? { scope: access.map((a) => `${a.type}:${a.name}:${a.actions.join(',')}`).join(' ') } : {}),
      },
      { 'Cache-Control': 'no-store' },
      head,
    );
    return { user, via };
  }

  /** The token's access: each scope asked for, narrowed to what the rules allow, by canonical name. */
  private grant(user: string | null, scopes: Scope[]): TokenAccess[] {
    const byName = new Map<string, Set<string>>();
    const out: TokenAccess[] = [];
    for (const s of scopes) {
      if (s.type === 'registry' && s.name === 'catalog') {
        if (this.catalogAllowed(user) && !out.some((a) => a.type === 'registry')) out.push({ type: 'registry', name: 'catalog', actions: ['*'] });
        continue;
      }
      if (s.type !== 'repository') continue;
      const canonical = this.canonicalName(s.name);
      if (canonical === null) continue;
      const asked = new Set(s.actions.flatMap((a): Action[] => (a === '*' ? [...ACTIONS] : (ACTIONS as readonly string[]).includes(a) ? [a as Action] : [])));
      const allowed = this.rules.allowed(user, canonical);
      const granted = [...asked].filter((a) => allowed.has(a));
      if (granted.length === 0) continue;
      let set = byName.get(canonical);
      if (!set) {
        byName.set(canonical, (set = new Set()));
        out.push({ type: 'repository', name: canonical, actions: [] });
      }
      for (const a of granted) set.add(a);
    }
    for (const a of out) if (a.type === 'repository') a.actions = ACTIONS.filter((x) => byName.get(a.name)!.has(x));
    return out;
  }

  private catalogAllowed(user: string | null): boolean {
    return user !== null || this.config.anonymousPull;
  }

  private async identify(req: IncomingMessage, scope: Scope | undefined, ctx: AuthContext): Promise<Identified> {
    const who = await this.identifyCredentials(req, scope, ctx.log ?? this.log, ctx.act);
    ctx.identified?.(publicIdentity(who));
    return who;
  }

  private async identifyCredentials(req: IncomingMessage, scope: Scope | undefined, log: Logger, act?: (fields: ActFields) => void): Promise<Identified> {
    // Required and absent, or presented and refused: 403 whatever else the request carries.
    const certificate = this.certificates?.identify(req) ?? null;
    const creds = parseAuthorization(req.headers.authorization);
    switch (creds.kind) {
      case 'none':
        return certificate ? { user: certificate.user, via: 'certificate', token: null } : { user: null, via: 'anonymous', token: null };
      case 'invalid':
        throw this.unauthorized(req, creds.reason, scope);
      case 'basic':
        await this.checkPassword(creds.user, creds.password, req, log, 'basic', scope, act);
        return { user: creds.user, via: 'basic', token: null };
      case 'bearer': {
        let claims: TokenClaims;
        try {
          claims = await this.tokens.verify(creds.token);
        } catch (err) {
          const why = err instanceof TokenError ? err.message : 'invalid token';
          act?.({ type: 'login.failed', via: 'bearer', reason: why });
          throw this.unauthorized(req, why, scope, 'invalid_token');
        }
        if (claims.subject !== null && isCertificateIdentity(claims.subject)) {
          this.checkCertificateToken(claims, certificate, req, scope);
        } else if (claims.subject !== null) {
          const hash = await this.htpasswd?.hashOf(claims.subject);
          if (hash === undefined) throw this.unauthorized(req, `user ${claims.subject} no longer exists`, scope, 'invalid_token');
          if (claims.binding !== this.tokens.binding(claims.subject, hash)) {
            throw this.unauthorized(req, `the htpasswd entry of user ${claims.subject} changed after this token was issued; log in again`, scope, 'invalid_token');
          }
        }
        return { user: claims.subject, via: 'bearer', token: claims };
      }
    }
  }

  /** A token issued to a client certificate's identity is honoured only on a connection presenting that very certificate. */
  private checkCertificateToken(claims: TokenClaims, certificate: CertificateIdentity | null, req: IncomingMessage, scope: Scope | undefined): void {
    const subject = claims.subject!;
    if (certificate === null || certificate.user !== subject || claims.binding !== this.tokens.certificateBinding(subject, certificate.fingerprint256)) {
      throw this.unauthorized(req, `this token was issued to the client certificate of ${subject}: it is honoured only on a connection presenting that certificate`, scope, 'invalid_token');
    }
  }

  /**
   * Resolves with the hash the password matched. Throws 401 on a wrong password or an unknown user
   * (logging the failure without the password); 429 when the (user, address) or the address is over
   * the throttle's allowance, or when the bcrypt queue is full (the password is then not checked).
   * Past the per-user ceiling the check is delayed first.
   */
  private async checkPassword(user: string, password: string, req: IncomingMessage, log: Logger, via: 'basic' | 'token', scope?: Scope, act?: (fields: ActFields) => void): Promise<string> {
    const ip = this.clientAddress.of(req);
    const who: LoginKeys = { address: ip, user };
    const logged = { user: user.slice(0, 100), via, ip };
    // The act names the user as written (cut to 100 characters), never the password.
    const failed = (reason: string): void => act?.({ type: 'login.failed', user: logged.user, via, reason });
    const throttled = (): OciError => {
      log.warn({ ...logged, reason: 'throttled' }, 'failed login');
      failed('throttled');
      return tooMany(this.throttle.retryAfter(who), 'too many failed logins from this address');
    };
    if (this.throttle.retryAfter(who) > 0) throw throttled();
    // Many failures for this user from everywhere: slowed, never refused (nobody can lock anyone out).
    const delayMs = this.throttle.delay(who);
    if (delayMs > 0) {
      log.warn({ ...logged, delayMs }, 'login slowed');
      await sleep(delayMs);
      if (this.throttle.retryAfter(who) > 0) throw throttled();
    }
    // The guess is counted before bcrypt runs, so parallel guesses cannot all be checked.
    const gate: HashGate = {
      admit: () => {
        const attempt = this.throttle.begin(who);
        if (attempt === null) throw throttled();
        return { checked: (result) => (result === 'ok' ? attempt.succeeded() : attempt.failed()), notChecked: () => attempt.cancelled() };
      },
    };
    let checked: Checked;
    if (this.htpasswd === null) {
      gate.admit().checked('unknown-user');
      checked = { result: 'unknown-user', hash: null };
    } else {
      try {
        checked = await this.htpasswd.check(user, password, gate);
      } catch (err) {
        if (!(err instanceof HashQueueFullError)) throw err;
        log.warn({ ...logged, reason: 'busy' }, 'failed login');
        failed('busy');
        throw tooMany(err.retryAfterMs, 'too many logins are being checked');
      }
    }
    if (checked.result === 'ok') {
      act?.({ type: 'login', user: logged.user, via });
      return checked.hash!;
    }
    const result = checked.result;
    log.warn({ ...logged, reason: result }, 'failed login');
    failed(result);
    const message = this.htpasswd ? 'invalid username or password' : 'invalid username or password: this registry has no users (auth.htpasswd is not set)';
    if (via === 'token') {
      throw new OciError('UNAUTHORIZED', message, { headers: { 'WWW-Authenticate': `Basic realm="${this.config.token.service}"` } });
    }
    throw this.unauthorized(req, message, scope);
  }

  private unauthorized(req: IncomingMessage, message: string, scope: Scope | undefined, error?: 'invalid_token' | 'insufficient_scope'): OciError {
    const challenge = bearerChallenge({ realm: this.realm(req), service: this.config.token.service, scope, error });
    return new OciError('UNAUTHORIZED', message, {
      headers: { 'WWW-Authenticate': challenge },
      ...(scope ? { detail: scopeDetail(scope) } : {}),
    });
  }
}

/** `<scheme>://<Host>` of a request: X-Forwarded-Proto or the socket for the scheme; a Host that is no host name is `localhost`. */
function requestOrigin(req: IncomingMessage): string {
  const fwd = String(req.headers['x-forwarded-proto'] ?? '').split(',')[0]!.trim().toLowerCase();
  const proto = fwd === 'https' || fwd === 'http' ? fwd : (req.socket as TLSSocket).encrypted ? 'https' : 'http';
  const host = req.headers.host;
  const safeHost = host !== undefined && /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/.test(host) ? host : 'localhost';
  return `${proto}://${safeHost}`;
}

/** 429 TOOMANYREQUESTS with Retry-After (whole seconds, at least 1). */
function tooMany(waitMs: number, why: string): OciError {
  const seconds = Math.max(1, Math.ceil(waitMs / 1000));
  return new OciError('TOOMANYREQUESTS', `${why}; try again in ${seconds}s`, { headers: { 'Retry-After': String(seconds) } });
}

function publicIdentity(who: Identified): Identity {
  return { user: who.user, via: who.via };
}

function tokenActions(claims: TokenClaims, type: string, name: string): Set<string> {
  const out = new Set<string>();
  for (const a of claims.access) if (a.type === type && a.name === name) for (const x of a.actions) out.add(x);
  return out;
}

/** The detail distribution gives with UNAUTHORIZED / DENIED. */
function scopeDetail(scope: Scope): Array<{ Type: string; Name: string; Action: string }> {
  return scope.actions.map((a) => ({ Type: scope.type, Name: scope.name, Action: a }));
}

async function readForm(req: IncomingMessage): Promise<string> {
  const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== '' && type !== 'application/x-www-form-urlencoded') {
    throw new OciError('UNSUPPORTED', `POST ${TOKEN_PATH} takes application/x-www-form-urlencoded, not ${type.slice(0, 60)}`, { status: 415 });
  }
  return readBoundedBody(req, TOKEN_BODY_MAX, () => new OciError('SIZE_INVALID', `token request body over ${TOKEN_BODY_MAX} bytes`, { status: 413 }));
}
