/**
 * Short-lived bearer tokens: JWTs signed HS256 (jose) with a secret that is random per process, or
 * read from `auth.token.key` so replicas accept each other's tokens. Only stevedore verifies them.
 *
 * Claims: iss (auth.token.issuer), aud (auth.token.service), sub (user; "" for anonymous), iat, nbf,
 * exp, jti, Docker's `access: [{ type, name, actions }]` with canonical repository names, and for
 * a user `bnd`: a fingerprint of the user's htpasswd entry when the token was issued (an HMAC
 * under the signing key, so it tells nothing about the hash). A token whose user's entry has
 * changed since (new password, removed) is refused, not honoured until it expires. For a client
 * certificate's identity (`cn:node-1`), `bnd` binds the token to the certificate (`certificateBinding`).
 */
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ConfigError } from '../../config/config.js';

/** jose, loaded by the first token issued or checked: a registry nobody logs in to never loads it. */
let joseModule: Promise<typeof import('jose')> | null = null;
const jose = (): Promise<typeof import('jose')> => (joseModule ??= import('jose'));

export interface TokenAccess {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenClaims {
  /** null: issued to an anonymous client. */
  subject: string | null;
  access: TokenAccess[];
  expiresAt: number;
  /** The `bnd` claim (see `binding`); null when the token has none. */
  binding: string | null;
}

export interface IssuedToken {
  token: string;
  /** Seconds. */
  expiresIn: number;
  /** RFC 3339. */
  issuedAt: string;
}

export class TokenError extends Error {
  constructor(
    readonly code: 'expired' | 'invalid',
    message: string,
  ) {
    super(message);
    this.name = 'TokenError';
  }
}

export const MIN_KEY_BYTES = 32;
/** Tolerated clock difference between replicas, for exp and nbf. */
const CLOCK_TOLERANCE_S = 10;

export interface TokenIssuerOptions {
  issuer: string;
  service: string;
  ttlMs: number;
  key: Uint8Array;
  now?: () => number;
}

export class TokenIssuer {
  private readonly now: () => number;

  constructor(private readonly opts: TokenIssuerOptions) {
    if (opts.key.length < MIN_KEY_BYTES) throw new Error(`token key too short: ${opts.key.length} bytes, at least ${MIN_KEY_BYTES}`);
    this.now = opts.now ?? Date.now;
  }

  /** The signing secret: the key file's content (trailing whitespace dropped), or random bytes. A bad file: ConfigError. */
  static async loadKey(file: string | null): Promise<Uint8Array> {
    if (file === null) return randomBytes(32);
    let text: Buffer;
    try {
      text = await readFile(file);
    } catch (err) {
      throw new ConfigError([`auth.token.key: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`], 'auth files');
    }
    const key = Buffer.from(text.toString('latin1').replace(/\s+$/, ''), 'latin1');
    if (key.length < MIN_KEY_BYTES) {
      throw new ConfigError([`auth.token.key: ${file} holds ${key.length} bytes; at least ${MIN_KEY_BYTES} are needed (e.g. openssl rand -hex 32)`], 'auth files');
    }
    return key;
  }

  /** The fingerprint of a user's htpasswd entry a token carries: the same on every replica sharing the key. */
  binding(user: string, hash: string): string {
    return createHmac('sha256', this.opts.key).update('stevedore token binding\0').update(user).update('\0').update(hash).digest('base64url').slice(0, 22);
  }

  /**
   * The `bnd` of a token issued to a client certificate's identity (`cn:node-1`): the certificate's
   * fingerprint under the signing key. Such a token is honoured only on a connection presenting the
   * same certificate (auth.ts): a token copied off a node is worth nothing without the node's key.
   */
  certificateBinding(identity: string, fingerprint256: string): string {
    return createHmac('sha256', this.opts.key).update('stevedore certificate binding\0').update(identity).update('\0').update(fingerprint256).digest('base64url').slice(0, 22);
  }

  /** `binding`: for a user's token, `binding(user, hash)` of the hash the password matched. */
  async issue(subject: string | null, access: TokenAccess[], binding: string | null = null): Promise<IssuedToken> {
    const nowMs = this.now();
    const iat = Math.floor(nowMs / 1000);
    const expiresIn = Math.floor(this.opts.ttlMs / 1000);
    const { SignJWT } = await jose();
    const token = await new SignJWT({ access, ...(binding !== null ? { bnd: binding } : {}) })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(this.opts.issuer)
      .setAudience(this.opts.service)
      .setSubject(subject ?? '')
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(iat + expiresIn)
      .setJti(randomUUID())
      .sign(this.opts.key);
    return { token, expiresIn, issuedAt: new Date(iat * 1000).toISOString() };
  }

  /** Checks signature, issuer, audience and lifetime; throws TokenError. */
  async verify(token: string): Promise<TokenClaims> {
    const { errors: joseErrors, jwtVerify } = await jose();
    try {
      const { payload } = await jwtVerify(token, this.opts.key, {
        algorithms: ['HS256'],
        issuer: this.opts.issuer,
        audience: this.opts.service,
        currentDate: new Date(this.now()),
        clockTolerance: CLOCK_TOLERANCE_S,
        requiredClaims: ['exp', 'iat', 'sub'],
      });
      const access = Array.isArray(payload.access) ? (payload.access as unknown[]).filter(isAccess) : [];
      const binding = typeof payload.bnd === 'string' ? payload.bnd : null;
      return { subject: payload.sub ? payload.sub : null, access, expiresAt: (payload.exp ?? 0) * 1000, binding };
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw new TokenError('expired', 'token expired');
      throw new TokenError('invalid', 'invalid token');
    }
  }
}

function isAccess(a: unknown): a is TokenAccess {
  if (typeof a !== 'object' || a === null) return false;
  const { type, name, actions } = a as Record<string, unknown>;
  return typeof type === 'string' && typeof name === 'string' && Array.isArray(actions) && actions.every((x) => typeof x === 'string');
}
