import { CachedProvider, FILE_CACHE_MS, readSecretFile, type Issued } from './provider.js';

/** upstreams.*.passwordFile: the password from a file. */
export class PasswordFileProvider extends CachedProvider {
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
