import { execFile } from 'node:child_process';
import { CachedProvider, CredentialError, type Credential, MAX_ANSWER_BYTES, type Issued } from './provider.js';

/** A helper's answer is reused this long unless the source says otherwise (cacheFor). */
export const HELPER_CACHE_MS = 5 * 60_000;
const HELPER_TIMEOUT_MS = 30_000;

/** Runs a Docker credential helper (`docker-credential-<name> get`) as Docker does. */
export class HelperProvider extends CachedProvider {
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
