/**
 * The words of the Docker token flow, with no I/O: `Authorization` headers in, `WWW-Authenticate`
 * challenges and token scopes (`repository:<name>:<actions>`) in and out.
 *
 *   WWW-Authenticate: Bearer realm="http://reg:5000/token",service="stevedore",scope="repository:lab/app:pull,push"
 *   GET /token?service=stevedore&scope=repository:lab/app:pull,push   (Basic credentials or none)
 */

export type Credentials =
  | { kind: 'none' }
  | { kind: 'basic'; user: string; password: string }
  | { kind: 'bearer'; token: string }
  | { kind: 'invalid'; reason: string };

/** Parses an `Authorization` header (RFC 7617 Basic, RFC 6750 Bearer; scheme names are case-insensitive). */
export function parseAuthorization(header: string | undefined): Credentials {
  if (header === undefined || header === '') return { kind: 'none' };
  const m = /^([A-Za-z]+) +(\S+) *$/.exec(header);
  if (!m) return { kind: 'invalid', reason: 'malformed Authorization header' };
  const scheme = m[1]!.toLowerCase();
  const value = m[2]!;
  if (scheme === 'bearer') return { kind: 'bearer', token: value };
  if (scheme !== 'basic') return { kind: 'invalid', reason: `unsupported authorization scheme ${m[1]!.slice(0, 20)}` };
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(value)) return { kind: 'invalid', reason: 'Basic credentials are not base64' };
  const text = Buffer.from(value, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon <= 0) return { kind: 'invalid', reason: 'Basic credentials are not user:password' };
  return { kind: 'basic', user: text.slice(0, colon), password: text.slice(colon + 1) };
}

export interface Scope {
  /** `repository` or `registry`; a resource class (`repository(plugin)`) is dropped. */
  type: string;
  name: string;
  actions: string[];
}

/**
 * Scopes from `scope` parameters: each value may hold several, separated by spaces (OAuth2 form,
 * containerd). Names may contain ":" (`localhost:5000/app`): the actions follow the last one.
 * Malformed scopes are skipped.
 */
export function parseScopes(values: readonly string[]): Scope[] {
  const out: Scope[] = [];
  for (const value of values) {
    for (const text of value.split(' ')) {
      if (text === '') continue;
      const first = text.indexOf(':');
      const last = text.lastIndexOf(':');
      if (first <= 0 || last === first) continue;
      const type = text.slice(0, first).replace(/\([a-z0-9]+\)$/, '');
      const name = text.slice(first + 1, last);
      const actions = text.slice(last + 1).split(',').filter((a) => a !== '');
      if (!/^[a-z]+$/.test(type) || name === '' || name.length > 512) continue;
      out.push({ type, name, actions: [...new Set(actions)] });
    }
  }
  return out;
}

export function formatScope(s: Scope): string {
  return `${s.type}:${s.name}:${s.actions.join(',')}`;
}

export interface ChallengeParams {
  realm: string;
  service: string;
  scope?: Scope | undefined;
  /** RFC 6750: `invalid_token` (expired, bad signature), `insufficient_scope`. */
  error?: 'invalid_token' | 'insufficient_scope' | undefined;
}

/** `Bearer realm="...",service="...",scope="..."` — the values are already free of quotes. */
export function bearerChallenge(p: ChallengeParams): string {
  let h = `Bearer realm="${quote(p.realm)}",service="${quote(p.service)}"`;
  if (p.scope) h += `,scope="${quote(formatScope(p.scope))}"`;
  if (p.error) h += `,error="${p.error}"`;
  return h;
}

function quote(v: string): string {
  return v.replace(/["\\]/g, '\\$&');
}
