/** A small JSON answer from a token service (a cloud's metadata server, AAD, a registry's exchange), bounded in time and size. */
import { request } from '../../util/lazy-undici.js';
import { CredentialError, HTTP_TIMEOUT_MS, MAX_ANSWER_BYTES } from './provider.js';

/** `what` names the service in errors (never the answer). */
export async function postOrGet(url: string, opts: { method: 'GET' | 'POST'; headers: Record<string, string>; form?: Record<string, string> }, what: string): Promise<unknown> {
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


/** The `exp` claim of a JWT (ms), or null: ACR's refresh tokens and AAD's access tokens are JWTs. */
export function jwtExpiry(token: string): number | null {
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const claims = JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}
