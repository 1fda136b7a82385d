import type { CredentialSource } from '../../config/config.js';
import { postOrGet } from './fetch-json.js';
import { CachedProvider, CredentialError, FILE_CACHE_MS, readSecretFile, renewTime, type Issued } from './provider.js';

/** Google: a service-account key (`_json_key`), or an access token (`oauth2accesstoken`) from a file or the metadata server. */
export class GcpProvider extends CachedProvider {
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
