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
import type { CredentialSource } from '../../config/config.js';
import { AcrProvider } from './acr.js';
import { EcrProvider } from './ecr.js';
import { GcpProvider } from './gcp.js';
import { HELPER_CACHE_MS, HelperProvider } from './helper.js';
import { PasswordFileProvider } from './password-file.js';
import type { CredentialProvider } from './provider.js';

export { CredentialError, FAILURE_BACKOFF_MS, type Credential, type CredentialProvider } from './provider.js';
export { parseEcrHost } from './ecr.js';

type Make<K extends CredentialSource['type']> = (spec: Extract<CredentialSource, { type: K }>, url: string, now?: () => number) => CredentialProvider;

/**
 * One entry per credential source type (`upstreams.*.credentials.type` in the configuration, the
 * `CredentialSource` union): a provider is one file here and one line in this table, which the
 * compiler keeps complete.
 */
const PROVIDERS: { [K in CredentialSource['type']]: Make<K> } = {
  basic: (spec, _url, now) => new PasswordFileProvider(spec.username, spec.passwordFile, now),
  helper: (spec, url, now) => new HelperProvider(spec.helper, spec.serverURL ?? new URL(url).host, spec.cacheFor ?? HELPER_CACHE_MS, now),
  ecr: (spec, url, now) => new EcrProvider(spec, new URL(url).host, now),
  gcp: (spec, _url, now) => new GcpProvider(spec, now),
  acr: (spec, url, now) => new AcrProvider(spec, url, now),
};

/** The provider of a source's configured credential source. `url` is the source's origin. */
export function credentialProvider(spec: CredentialSource, url: string, now?: () => number): CredentialProvider {
  return (PROVIDERS[spec.type] as Make<CredentialSource['type']>)(spec, url, now);
}
