/**
 * Upstream credentials that are not a plain username/password in the configuration: read from a
 * file, or issued by a Docker credential helper or a cloud, each cached until shortly before it
 * expires and fetched again at once when the registry refuses it (a 401 with it: `invalidate`).
 *
 *   basic (passwordFile)  the password read from a file; read again after 60 s or a refusal
 *   helper                `docker-credential-<name> get`, the registry host on stdin, JSON
 *                         `{ServerURL, Username, Secret}` on stdout (as Docker runs it); reused for
 *                         `cacheFor` (helpers say nothing of expiry), run again on a refusal
 *   ecr                   GetAuthorizationToken (AWS SDK v3, default credential chain: env, web
 *                         identity / IRSA, instance profile); token = base64 "AWS:<password>",
 *                         renewed before its expiresAt (12 h)
 *   gcp                   a service-account key file: Basic `_json_key` with the file's JSON; or an
 *                         access token (a file, or the metadata server) as Basic `oauth2accesstoken`,
 *                         renewed before expires_in
 *   acr                   an AAD access token (a file, a value, or asked of AAD as Azure's SDKs do
 *                         from the environment: workload identity's AZURE_FEDERATED_TOKEN_FILE or
 *                         AZURE_CLIENT_SECRET, with AZURE_CLIENT_ID and AZURE_TENANT_ID) exchanged at
 *                         the registry's /oauth2/exchange for a refresh token; the Bearer flow then
 *                         asks /oauth2/token (grant_type=refresh_token) for each scope
 *
 * A secret never appears in an error message or a log line: failures say which source failed and
 * why (exit code, HTTP status, the provider's error name), never what it returned. Those details
 * (a helper's output, file paths, role ARNs, tenant and client ids) are for the operator: they go
 * to the log and to `stevedore doctor`, never to a registry client or the dashboard, which say
 * only that the source failed (`kind` names it there).
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { request } from 'undici';
import type { CredentialSource } from '../config/config.js';

/** What an upstream is given: Basic credentials, or (ACR) a refresh token for its token service. */
export type Credential =
  | { kind: 'basic'; username: string; password: string }
  | { kind: 'refresh_token'; refreshToken: string };

export interface CredentialProvider {
  /** What it is, in the log and `doctor`: `credential helper docker-credential-ecr-login`, `password file /run/secrets/pw`. */
  readonly description: string;
  /**
   * What kind of source it is, for anyone who may see the dashboard: no path, URL or identity
   * (`password file`, `credential helper docker-credential-ecr-login`, `GCP metadata server`).
   */
  readonly kind: string;
  /** The credential to use now: cached, or fetched (one fetch at a time, shared). Throws CredentialError. */
  get(): Promise<Credential>;
  /** The upstream refused `used`: the next get() fetches anew, unless that already happened. */
  invalidate(used: Credential): void;
  /** Times a credential was fetched (the helper run, the cloud asked, the file read): metrics and tests. */
  readonly fetches: number;
  /** Of those, the ones that failed. */
  readonly failures: number;
  /** Whether the last fetch failed (its cause: in the log); false once one succeeds. */
  readonly failing: boolean;
}

/** A credential source that failed; its message names the source and the cause, never a secret. */
export class CredentialError extends Error {
  constructor(message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'CredentialError';
  }
}

/** Renewed this long before expiry at most (a quarter of the lifetime for short-lived ones). */
const RENEW_BEFORE_MS = 5 * 60_000;
/** A helper's answer is reused this long unless the source says otherwise (cacheFor). */
const HELPER_CACHE_MS = 5 * 60_000;
/** A password or token file is read again after this (sooner after a refusal). */
const FILE_CACHE_MS = 60_000;
/** ACR refresh tokens last 3 h; when the exchange does not say, renew after this. */
const ACR_REFRESH_DEFAULT_MS = 60 * 60_000;
/** After a failed fetch, requests meanwhile get its error instead of asking the failing source again. */
export const FAILURE_BACKOFF_MS = 5_000;
const HTTP_TIMEOUT_MS = 10_000;
const HELPER_TIMEOUT_MS = 30_000;
const MAX_ANSWER_BYTES = 64 * 1024;

interface Issued {
  credential: Credential;
  /** When it stops being valid (ms since the epoch); Infinity: never said. */
  expiresAt: number;
  /** When to fetch anew even if still valid (cache period of sources that say nothing of expiry). */
  renewAt: number;
}

/** When to renew something valid from `now` until `expiresAt`: a while before it ends. */
function renewTime(now: number, expiresAt: number): number {
  const life = expiresAt - now;
  return expiresAt - Math.min(RENEW_BEFORE_MS, Math.max(0, life / 4));
}

/** The cache every provider shares: one fetch at a time; renewed early; dropped on a refusal. */
abstract class CachedProvider implements CredentialProvider {
  abstract readonly description: string;
  abstract readonly kind: string;
  fetches = 0;
  failures = 0;
  failing = false;
  private current: Issued | null = null;
  private inflight: Promise<Issued> | null = null;
  private failure: { error: unknown; until: number } | null = null;

  constructor(protected readonly now: () => number = Date.now) {}

  protected abstract fetch(): Promise<Issued>;

  async get(): Promise<Credential> {
    const c = this.current;
    const now = this.now();
    if (c && now < c.renewAt && now < c.expiresAt) return c.credential;
    if (!this.inflight && this.failure && now < this.failure.until) {
      if (c && now < c.expiresAt) return c.credential;
      throw this.failure.error;
    }
    if (!this.inflight) {
      this.fetches++;
      this.inflight = this.fetch().finally(() => {
        this.inflight = null;
      });
      this.inflight.then(
        (issued) => {
          this.current = issued;
          this.failure = null;
          this.failing = false;
        },
        (error: unknown) => {
          this.failures++;
          this.failing = true;
          this.failure = { error, until: this.now() + FAILURE_BACKOFF_MS };
        },
      );
    }
    try {
      return (await this.inflight).credential;
    } catch (err) {
      // Still valid though due for renewal: keep using it while the source fails.
      if (c && now < c.expiresAt) return c.credential;
      throw err;
    }
  }

  invalidate(used: Credential): void {
    if (this.current && sameCredential(this.current.credential, used)) this.current = null;
  }
}

function sameCredential(a: Credential, b: Credential): boolean {
  if (a.kind === 'basic' && b.kind === 'basic') return a.username === b.username && a.password === b.password;
  if (a.kind === 'refresh_token' && b.kind === 'refresh_token') return a.refreshToken === b.refreshToken;
  return false;
}

async function readSecretFile(file: string, what: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new CredentialError(`cannot read the ${what} ${file} (${code})`);
  }
  const value = text.trim();
  if (!value) throw new CredentialError(`the ${what} ${file} is empty`);
  return value;
}

/** upstreams.*.passwordFile: the password from a file. */
class PasswordFileProvider extends CachedProvider {
  readonly description: string;
  readonly kind = 'password file';
  constructor(private readonly username: string, private readonly file: string, now?: () => number) {
    super(now);
    this.description = `password file ${file}`;
  }
  protected async fetch(): Promise<Issued> {
    const password = await readSecretFile(this.file, 'password file');
    return { credential: { kind: 'basic', username: this.username, password }, expiresAt: Infinity, renewAt: this.now() + FILE_CACHE_MS };
  }
}

/** Runs a Docker credential helper (`docker-credential-<name> get`) as Docker does. */
class HelperProvider extends CachedProvider {
  readonly description: string;
  readonly kind: string;
  private readonly program: string;
  constructor(helper: string, private readonly serverURL: string, private readonly cacheMs: number, now?: () => number) {
    super(now);
    this.program = `docker-credential-${helper}`;
    this.description = `credential helper ${this.program}`;
    this.kind = this.description;
  }
  protected async fetch(): Promise<Issued> {
    const out = await new Promise<string>((resolve, reject) => {
      const child = execFile(this.program, ['get'], { timeout: HELPER_TIMEOUT_MS, maxBuffer: MAX_ANSWER_BYTES, encoding: 'utf8' }, (err, stdout, stderr) => {
        if (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') return reject(new CredentialError(`${this.program} is not on PATH`));
          // Docker shows the helper's own message (e.g. "credentials not found in native keychain").
          const said = (stderr || stdout).trim().split('\n')[0]?.slice(0, 200) ?? '';
          const how = err.killed ? `was stopped after ${HELPER_TIMEOUT_MS / 1000} s` : `exited with ${typeof code === 'number' ? code : (err.code ?? 'an error')}`;
          return reject(new CredentialError(`${this.program} get ${how}${said ? `: ${said}` : ''}`));
        }
        resolve(stdout);
      });
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(this.serverURL);
    });
    let doc: { Username?: unknown; Secret?: unknown };
    try {
      doc = JSON.parse(out) as typeof doc;
    } catch {
      throw new CredentialError(`${this.program} get did not answer JSON`);
    }
    if (typeof doc.Secret !== 'string' || !doc.Secret || typeof doc.Username !== 'string') {
      throw new CredentialError(`${this.program} get answered without Username and Secret`);
    }
    // Docker's convention: Username `<token>` means the Secret is an identity token (a refresh token).
    const credential: Credential = doc.Username === '<token>' ? { kind: 'refresh_token', refreshToken: doc.Secret } : { kind: 'basic', username: doc.Username, password: doc.Secret };
    return { credential, expiresAt: Infinity, renewAt: this.now() + this.cacheMs };
  }
}

/** `<account>.dkr.ecr.<region>.amazonaws.com` (and .com.cn, fips): the account and region. */
export function parseEcrHost(host: string): { registryId: string; region: string } | null {
  const m = /^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$/.exec(host);
  return m ? { registryId: m[1]!, region: m[2]! } : null;
}

/** Amazon ECR: GetAuthorizationToken through the AWS SDK v3. */
class EcrProvider extends CachedProvider {
  readonly description = 'ECR GetAuthorizationToken';
  readonly kind = this.description;
  private readonly region: string | null;
  private readonly registryId: string | null;
  constructor(private readonly spec: Extract<CredentialSource, { type: 'ecr' }>, host: string, now?: () => number) {
    super(now);
    const fromHost = parseEcrHost(host);
    this.region = spec.region ?? fromHost?.region ?? null;
    this.registryId = spec.registryId ?? fromHost?.registryId ?? null;
  }
  protected async fetch(): Promise<Issued> {
    // Loaded when first needed: most installations never use it.
    const { ECRClient, GetAuthorizationTokenCommand } = await import('@aws-sdk/client-ecr');
    const region = this.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION;
    if (!region) throw new CredentialError('ECR: no region (set credentials.region, or AWS_REGION; it is not in the registry host)');
    const client = new ECRClient({ region, maxAttempts: 2, ...(this.spec.endpoint ? { endpoint: this.spec.endpoint } : {}) });
    let out;
    try {
      out = await client.send(new GetAuthorizationTokenCommand(this.registryId ? { registryIds: [this.registryId] } : {}), {
        abortSignal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
      });
    } catch (err) {
      const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
      const status = e.$metadata?.httpStatusCode ? ` (HTTP ${e.$metadata.httpStatusCode})` : '';
      throw new CredentialError(`ECR GetAuthorizationToken failed${status}: ${e.name ?? 'Error'}: ${(e.message ?? '').slice(0, 200)}`);
    } finally {
      client.destroy();
    }
    const data = out.authorizationData?.[0];
    const decoded = data?.authorizationToken ? Buffer.from(data.authorizationToken, 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    if (colon <= 0) throw new CredentialError('ECR GetAuthorizationToken answered without a usable authorizationToken');
    const now = this.now();
    const expiresAt = data?.expiresAt instanceof Date ? data.expiresAt.getTime() : now + 12 * 3_600_000;
    return { credential: { kind: 'basic', username: decoded.slice(0, colon), password: decoded.slice(colon + 1) }, expiresAt, renewAt: renewTime(now, expiresAt) };
  }
}

async function postOrGet(url: string, opts: { method: 'GET' | 'POST'; headers: Record<string, string>; form?: Record<string, string> }, what: string): Promise<unknown> {
  let res;
  try {
    res = await request(url, {
      method: opts.method,
      headers: opts.form ? { ...opts.headers, 'content-type': 'application/x-www-form-urlencoded' } : opts.headers,
      ...(opts.form ? { body: new URLSearchParams(opts.form).toString() } : {}),
      signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new CredentialError(`${what} failed: ${e.code ?? e.name}${e.message ? ` (${e.message.slice(0, 200)})` : ''}`);
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > MAX_ANSWER_BYTES) {
      res.body.destroy();
      throw new CredentialError(`${what} answered more than ${MAX_ANSWER_BYTES} bytes`);
    }
    chunks.push(c);
  }
  if (res.statusCode !== 200) throw new CredentialError(`${what} answered ${res.statusCode}`);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new CredentialError(`${what} did not answer JSON`);
  }
}

/** Google: a service-account key (`_json_key`), or an access token (`oauth2accesstoken`) from a file or the metadata server. */
class GcpProvider extends CachedProvider {
  readonly description: string;
  readonly kind: string;
  constructor(private readonly spec: Extract<CredentialSource, { type: 'gcp' }>, now?: () => number) {
    super(now);
    this.description = spec.keyFile ? `service-account key file ${spec.keyFile}` : spec.tokenFile ? `access token file ${spec.tokenFile}` : `GCP metadata server ${spec.metadataUrl}`;
    this.kind = spec.keyFile ? 'GCP service-account key file' : spec.tokenFile ? 'GCP access token file' : 'GCP metadata server';
  }
  protected async fetch(): Promise<Issued> {
    const now = this.now();
    if (this.spec.keyFile) {
      const json = await readSecretFile(this.spec.keyFile, 'service-account key file');
      try {
        JSON.parse(json);
      } catch {
        throw new CredentialError(`the service-account key file ${this.spec.keyFile} is not JSON`);
      }
      return { credential: { kind: 'basic', username: '_json_key', password: json }, expiresAt: Infinity, renewAt: now + FILE_CACHE_MS };
    }
    if (this.spec.tokenFile) {
      const token = await readSecretFile(this.spec.tokenFile, 'access token file');
      return { credential: { kind: 'basic', username: 'oauth2accesstoken', password: token }, expiresAt: Infinity, renewAt: now + FILE_CACHE_MS };
    }
    const url = `${this.spec.metadataUrl}/computeMetadata/v1/instance/service-accounts/default/token`;
    const doc = (await postOrGet(url, { method: 'GET', headers: { 'metadata-flavor': 'Google' } }, `the GCP metadata server (${this.spec.metadataUrl})`)) as {
      access_token?: unknown;
      expires_in?: unknown;
    };
    if (typeof doc.access_token !== 'string' || !doc.access_token) throw new CredentialError(`the GCP metadata server (${this.spec.metadataUrl}) answered without access_token`);
    const expiresAt = typeof doc.expires_in === 'number' && doc.expires_in > 0 ? now + doc.expires_in * 1000 : now + 5 * 60_000;
    return { credential: { kind: 'basic', username: 'oauth2accesstoken', password: doc.access_token }, expiresAt, renewAt: renewTime(now, expiresAt) };
  }
}

/** The `exp` claim of a JWT (ms), or null: ACR's refresh tokens and AAD's access tokens are JWTs. */
function jwtExpiry(token: string): number | null {
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const claims = JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/** What `az acr login` asks AAD for: an Azure Resource Manager token, which ACR's exchange takes. */
const AAD_SCOPE = 'https://management.azure.com/.default';
const AAD_DEFAULT_AUTHORITY = 'https://login.microsoftonline.com';

/**
 * An AAD access token for the identity the environment names, as Azure's SDKs read it: a client
 * credentials grant at `<authority>/<tenant>/oauth2/v2.0/token`, proven by workload identity's
 * federated token (AZURE_FEDERATED_TOKEN_FILE, re-read each time: the kubelet rotates it) or by a
 * client secret (AZURE_CLIENT_SECRET).
 */
async function aadTokenFromEnvironment(authorityHost: string | null, env: NodeJS.ProcessEnv = process.env): Promise<{ token: string; tenant: string; expiresAt: number | null }> {
  const tenant = env.AZURE_TENANT_ID;
  const clientId = env.AZURE_CLIENT_ID;
  if (!tenant || !clientId || (!env.AZURE_FEDERATED_TOKEN_FILE && !env.AZURE_CLIENT_SECRET)) {
    throw new CredentialError(
      'ACR: no AAD token: set credentials.tokenFile or credentials.token, or give the process AZURE_TENANT_ID and AZURE_CLIENT_ID with AZURE_FEDERATED_TOKEN_FILE (workload identity) or AZURE_CLIENT_SECRET',
    );
  }
  const form: Record<string, string> = { grant_type: 'client_credentials', client_id: clientId, scope: AAD_SCOPE };
  if (env.AZURE_FEDERATED_TOKEN_FILE) {
    form.client_assertion_type = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
    form.client_assertion = await readSecretFile(env.AZURE_FEDERATED_TOKEN_FILE, 'federated token file (AZURE_FEDERATED_TOKEN_FILE)');
  } else {
    form.client_secret = env.AZURE_CLIENT_SECRET!;
  }
  const authority = (authorityHost ?? env.AZURE_AUTHORITY_HOST ?? AAD_DEFAULT_AUTHORITY).replace(/\/+$/, '');
  const now = Date.now();
  const doc = (await postOrGet(`${authority}/${encodeURIComponent(tenant)}/oauth2/v2.0/token`, { method: 'POST', headers: { accept: 'application/json' }, form }, `AAD (${authority}, tenant ${tenant}, client ${clientId})`)) as {
    access_token?: unknown;
    expires_in?: unknown;
  };
  if (typeof doc.access_token !== 'string' || !doc.access_token) throw new CredentialError(`AAD (${authority}) answered without access_token`);
  const expiresIn = typeof doc.expires_in === 'number' ? doc.expires_in : typeof doc.expires_in === 'string' ? Number(doc.expires_in) : NaN;
  return { token: doc.access_token, tenant, expiresAt: Number.isFinite(expiresIn) && expiresIn > 0 ? now + expiresIn * 1000 : jwtExpiry(doc.access_token) };
}

/** Azure: an AAD access token exchanged at the registry for a refresh token (POST /oauth2/exchange). */
class AcrProvider extends CachedProvider {
  readonly description: string;
  readonly kind: string;
  constructor(private readonly spec: Extract<CredentialSource, { type: 'acr' }>, private readonly registryUrl: string, now?: () => number) {
    super(now);
    this.description = spec.tokenFile || spec.token ? 'ACR token exchange' : 'ACR token exchange (AAD token from the environment)';
    this.kind = this.description;
  }
  protected async fetch(): Promise<Issued> {
    let aad: string;
    let tenant = this.spec.tenant;
    let aadEnds: number | null = null;
    if (this.spec.tokenFile) aad = await readSecretFile(this.spec.tokenFile, 'AAD token file');
    else if (this.spec.token) {
      aad = this.spec.token;
      aadEnds = jwtExpiry(aad);
    } else {
      const got = await aadTokenFromEnvironment(this.spec.authorityHost);
      aad = got.token;
      tenant ??= got.tenant;
      aadEnds = got.expiresAt;
    }
    const service = new URL(this.registryUrl).host;
    const form: Record<string, string> = { grant_type: 'access_token', service, access_token: aad };
    if (tenant) form.tenant = tenant;
    const doc = (await postOrGet(`${this.registryUrl}/oauth2/exchange`, { method: 'POST', headers: { accept: 'application/json' }, form }, `the ACR exchange (${service}/oauth2/exchange)`)) as {
      refresh_token?: unknown;
    };
    if (typeof doc.refresh_token !== 'string' || !doc.refresh_token) throw new CredentialError(`the ACR exchange (${service}/oauth2/exchange) answered without refresh_token`);
    const now = this.now();
    // Good until the earlier of its own expiry and the AAD token's (a new AAD token is then needed too).
    const ends = [jwtExpiry(doc.refresh_token), aadEnds].filter((x): x is number => x !== null);
    const expiresAt = ends.length ? Math.min(...ends) : now + ACR_REFRESH_DEFAULT_MS;
    return { credential: { kind: 'refresh_token', refreshToken: doc.refresh_token }, expiresAt, renewAt: renewTime(now, expiresAt) };
  }
}

/** The provider of a source's configured credential source. `url` is the source's origin. */
export function credentialProvider(spec: CredentialSource, url: string, now?: () => number): CredentialProvider {
  const host = new URL(url).host;
  switch (spec.type) {
    case 'basic':
      return new PasswordFileProvider(spec.username, spec.passwordFile, now);
    case 'helper':
      return new HelperProvider(spec.helper, spec.serverURL ?? host, spec.cacheFor ?? HELPER_CACHE_MS, now);
    case 'ecr':
      return new EcrProvider(spec, host, now);
    case 'gcp':
      return new GcpProvider(spec, now);
    case 'acr':
      return new AcrProvider(spec, url, now);
  }
}
