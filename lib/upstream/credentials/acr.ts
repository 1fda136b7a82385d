import type { CredentialSource } from '../../config/config.js';
import { jwtExpiry, postOrGet } from './fetch-json.js';
import { CachedProvider, CredentialError, readSecretFile, renewTime, type Issued } from './provider.js';

/** ACR refresh tokens last 3 h; when the exchange does not say, renew after this. */
const ACR_REFRESH_DEFAULT_MS = 60 * 60_000;

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
export class AcrProvider extends CachedProvider {
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
