import type { CredentialSource } from '../../config/config.js';
import { CachedProvider, CredentialError, HTTP_TIMEOUT_MS, renewTime, type Issued } from './provider.js';

/** `<account>.dkr.ecr.<region>.amazonaws.com` (and .com.cn, fips): the account and region. */
export function parseEcrHost(host: string): { registryId: string; region: string } | null {
  const m = /^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$/.exec(host);
  return m ? { registryId: m[1]!, region: m[2]! } : null;
}

/** Amazon ECR: GetAuthorizationToken through the AWS SDK v3. */
export class EcrProvider extends CachedProvider {
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
