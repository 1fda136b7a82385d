/**
 * What every upstream credential provider is (docs/ARCHITECTURE.md, section 6): the interface the
 * source client asks, and `CachedProvider`, the cache each provider extends (one fetch at a time,
 * renewal before expiry, a refusal drops the credential, a failure backs off). A provider is one
 * file beside this one, listed in `index.ts`.
 */
import { readFile } from 'node:fs/promises';

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
export const RENEW_BEFORE_MS = 5 * 60_000;
/** A password or token file is read again after this (sooner after a refusal). */
export const FILE_CACHE_MS = 60_000;
/** After a failed fetch, requests meanwhile get its error instead of asking the failing source again. */
export const FAILURE_BACKOFF_MS = 5_000;
export const HTTP_TIMEOUT_MS = 10_000;
export const MAX_ANSWER_BYTES = 64 * 1024;


export interface Issued {
  credential: Credential;
  /** When it stops being valid (ms since the epoch); Infinity: never said. */
  expiresAt: number;
  /** When to fetch anew even if still valid (cache period of sources that say nothing of expiry). */
  renewAt: number;
}

export /** When to renew something valid from `now` until `expiresAt`: a while before it ends. */
function renewTime(now: number, expiresAt: number): number {
  const life = expiresAt - now;
  return expiresAt - Math.min(RENEW_BEFORE_MS, Math.max(0, life / 4));
}

/** The cache every provider shares: one fetch at a time; renewed early; dropped on a refusal. */
export abstract class CachedProvider implements CredentialProvider {
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

/** A secret read from a file, trimmed; the error names the file, never its content. */
export async function readSecretFile(file: string, what: string): Promise<string> {
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
