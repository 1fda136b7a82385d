/**
 * How stevedore processes authenticate to each other's peer endpoint (node instances to node
 * instances, replicas to the replica holding a download) without a long-lived secret on the wire
 * (docs/ARCHITECTURE.md, rule 10).
 *
 * The addresses a process sends these requests to come from Redis, and whoever can write to Redis
 * can name any address. So the shared secret (`node.peers.token`, `cluster.token`) never leaves
 * the process: each request carries an HMAC-SHA256, under a key derived from the secret, over
 *
 *     stevedore-peer-v1 \n METHOD \n TARGET-ORIGIN \n PATH \n EXPIRY
 *
 *   Authorization: Stevedore-Signature exp=<unix seconds>, sig=<base64url>
 *
 * The receiving process checks it against its own advertised origin, the request's method and
 * path (which names the digest), and the clock. A fake peer that collects such a header learns
 * nothing it can use elsewhere: it is good for one digest, on that fake peer's own origin, for
 * half a minute.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

const SCHEME = 'Stevedore-Signature';
/** How long a signature is good for. */
export const SIGNATURE_LIFETIME_S = 30;
/** Clock difference between processes tolerated on either side. */
const SKEW_S = 30;
const HEADER = /^Stevedore-Signature exp=(\d{1,12}), sig=([A-Za-z0-9_-]{43})$/;

export class PeerRequestAuth {
  private readonly key: Buffer;
  /** This process's origin as the others reach it (what they sign for). */
  readonly origin: string;

  constructor(
    secret: string,
    self: string,
    /** The setting holding the secret, for messages. */
    readonly setting: string,
    private readonly now: () => number = Date.now,
  ) {
    this.key = createHmac('sha256', secret).update('stevedore peer request signing, v1').digest();
    this.origin = new URL(self).origin;
  }

  private mac(method: string, origin: string, path: string, exp: number): Buffer {
    return createHmac('sha256', this.key).update(`stevedore-peer-v1\n${method}\n${origin}\n${path}\n${exp}`).digest();
  }

  /** The Authorization header for `method` on `url` (an absolute URL of another process). */
  sign(method: string, url: string): string {
    const u = new URL(url);
    const exp = Math.floor(this.now() / 1000) + SIGNATURE_LIFETIME_S;
    return `${SCHEME} exp=${exp}, sig=${this.mac(method, u.origin, u.pathname, exp).toString('base64url')}`;
  }

  /** Why a request to this process's peer endpoint is not authorized, or null when it is. */
  check(method: string, path: string, header: string | undefined): string | null {
    const m = HEADER.exec(header ?? '');
    if (!m) return `a signed request is required (${this.setting})`;
    const exp = Number(m[1]);
    const nowS = Math.floor(this.now() / 1000);
    if (exp < nowS - SKEW_S) return 'the signature has expired';
    if (exp > nowS + SIGNATURE_LIFETIME_S + SKEW_S) return 'the signature expires too far in the future';
    // HEAD is answered by the GET handler: a signature for GET covers it, as HTTP would.
    const given = Buffer.from(m[2]!, 'base64url');
    const ok = [method, ...(method === 'HEAD' ? ['GET'] : [])].some((meth) => {
      const want = this.mac(meth, this.origin, path, exp);
      return given.length === want.length && timingSafeEqual(given, want);
    });
    return ok ? null : `the signature does not match (another secret in ${this.setting}, or signed for another address than ${this.origin})`;
  }
}
