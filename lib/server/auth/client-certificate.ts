/**
 * Client certificates as identities (config tls.clientCA, tls.clientAuth, tls.clientIdentity).
 *
 * The main listener asks every client for a certificate and verifies it against tls.clientCA, but
 * lets the handshake finish whatever the client presents (create-server.ts): the answer is given
 * here, per request, as an OCI error. Why not fail the handshake: Node (OpenSSL) refuses a missing
 * certificate with a TLS alert, but a certificate that does not verify only by closing the
 * connection after the handshake — containerd would print "EOF" or "connection reset by peer";
 * answered here, every client prints the reason (the status line carries it, respond.ts) and the
 * refusal is an access line and an audit line with the request id. It is 403 DENIED, not 401:
 * no HTTP credential can stand in for the certificate, and a 401 would make Docker and podman ask
 * for a password and containerd try the token flow. The probes (/healthz, /readyz) are answered
 * without one (the kubelet presents none), and so is the peer endpoint (each request is signed).
 *
 *   presented nothing               required: 403 "a client certificate is required"; optional: anonymous (or the request's credentials)
 *   does not chain to tls.clientCA  403 in both modes: never an identity, never quietly anonymous
 *     (expired, self-signed, another CA, an extended key usage without clientAuth)
 *   verifies                        the identity below, unless the request carries credentials of its own
 *
 * The identity is written `<kind>:<value>`, the way access rules and groups name it and the audit
 * and access logs print it: `cn:node-1` (the subject's one CN), `dns:node-1.nodes.example`,
 * `uri:spiffe://cluster.local/ns/ci/sa/builder`, `email:ops@example.com` (the certificate's one
 * subjectAltName of that kind). A certificate with none, or several, of the configured kind names
 * nobody and is refused (which of two names would be ambiguous). htpasswd user names hold no ":",
 * so a certificate can never pass for a password user.
 *
 * A connection's verdict is worked out once, at its first request, and kept for the connection
 * (renegotiation is disabled on it, so its certificate cannot change).
 */
import type { IncomingMessage } from 'node:http';
import type { DetailedPeerCertificate, PeerCertificate, TLSSocket } from 'node:tls';
import { OciError } from '../../oci/errors.js';

export type ClientAuthMode = 'required' | 'optional';
export type ClientIdentityKind = 'cn' | 'san-dns' | 'san-uri' | 'san-email';

/** The prefix of an identity of each kind, as rules name it. */
const PREFIX: Record<ClientIdentityKind, string> = { cn: 'cn', 'san-dns': 'dns', 'san-uri': 'uri', 'san-email': 'email' };
/** How Node writes each subjectAltName kind in `subjectaltname`. */
const SAN_TYPE: Record<Exclude<ClientIdentityKind, 'cn'>, string> = { 'san-dns': 'DNS', 'san-uri': 'URI', 'san-email': 'email' };
/** RFC 5280 id-kp-clientAuth, and anyExtendedKeyUsage. */
const CLIENT_AUTH_EKU = '1.3.6.1.5.5.7.3.2';
const ANY_EKU = '2.5.29.37.0';
const IDENTITY_MAX = 256;

/** A verified client certificate's identity. */
export interface CertificateIdentity {
  /** `cn:node-1`: what rules and groups name, and logs print. */
  user: string;
  /** The certificate's SHA-256 fingerprint: a token issued to this identity is bound to it. */
  fingerprint256: string;
}

type Verdict = { kind: 'none' } | { kind: 'identity'; identity: CertificateIdentity } | { kind: 'refused'; reason: string };

/** Whether a user name is a client certificate's identity (htpasswd names hold no ":"). */
export function isCertificateIdentity(user: string): boolean {
  return user.includes(':');
}

export class ClientCertificates {
  private readonly verdicts = new WeakMap<TLSSocket, Verdict>();

  constructor(
    readonly mode: ClientAuthMode,
    readonly kind: ClientIdentityKind,
  ) {}

  /**
   * The identity of the certificate the request's connection presented; null when it presented
   * none and none is required. Throws 403 DENIED when one is required and absent, and whenever the
   * one presented does not verify or names nobody.
   */
  identify(req: IncomingMessage): CertificateIdentity | null {
    const socket = req.socket as TLSSocket | null;
    const verdict: Verdict = socket?.encrypted ? this.verdictOf(socket) : { kind: 'none' };
    if (verdict.kind === 'identity') return verdict.identity;
    if (verdict.kind === 'refused') throw new OciError('DENIED', `the client certificate is refused: ${verdict.reason}`);
    if (this.mode === 'required') {
      throw new OciError('DENIED', 'a client certificate is required here (tls.clientAuth: required), and the connection presented none');
    }
    return null;
  }

  private verdictOf(socket: TLSSocket): Verdict {
    let verdict = this.verdicts.get(socket);
    if (!verdict) {
      verdict = this.judge(socket);
      this.verdicts.set(socket, verdict);
    }
    return verdict;
  }

  private judge(socket: TLSSocket): Verdict {
    const cert = socket.getPeerCertificate(false) as PeerCertificate | DetailedPeerCertificate | Record<string, never> | null;
    if (!cert || Object.keys(cert).length === 0) return { kind: 'none' };
    const what = describe(cert as PeerCertificate);
    if (!socket.authorized) {
      const code = String(socket.authorizationError ?? 'not verified');
      // OpenSSL checks a client's chain for the client purpose: an extended key usage without clientAuth fails so.
      if (code === 'INVALID_PURPOSE') return { kind: 'refused', reason: `${what} is not for client authentication (its extended key usage lacks clientAuth)` };
      return { kind: 'refused', reason: `${what} does not chain to tls.clientCA (${code})` };
    }
    const eku = (cert as PeerCertificate).ext_key_usage;
    if (Array.isArray(eku) && !eku.includes(CLIENT_AUTH_EKU) && !eku.includes(ANY_EKU)) {
      return { kind: 'refused', reason: `${what} is not for client authentication (its extended key usage lacks clientAuth)` };
    }
    const values = this.kind === 'cn' ? commonNames(cert as PeerCertificate) : subjectAltNames((cert as PeerCertificate).subjectaltname, SAN_TYPE[this.kind]);
    const label = this.kind === 'cn' ? 'subject CN' : `${SAN_TYPE[this.kind]} subjectAltName`;
    if (values === null) return { kind: 'refused', reason: `${what}: its subjectAltName cannot be read` };
    if (values.length !== 1) {
      return {
        kind: 'refused',
        reason: `${what} has ${values.length === 0 ? 'no' : values.length} ${label}${values.length > 1 ? 's' : ''}: tls.clientIdentity ${this.kind} takes the identity from exactly one`,
      };
    }
    let value = values[0]!;
    if (this.kind === 'san-dns') value = value.toLowerCase();
    // Printable, without leading or trailing spaces, of a sane length: what a rule can name and a log line carry.
    if (value.length === 0 || value.length > IDENTITY_MAX || /\p{Cc}/u.test(value) || value.trim() !== value) {
      return { kind: 'refused', reason: `${what}: its ${label} is no usable identity (empty, over ${IDENTITY_MAX} characters, control characters or surrounding spaces)` };
    }
    return { kind: 'identity', identity: { user: `${PREFIX[this.kind]}:${value}`, fingerprint256: cert.fingerprint256 } };
  }
}

/** The certificate as a refusal names it: its subject and serial number. */
function describe(cert: PeerCertificate): string {
  const cn = cert.subject?.CN;
  const subject = Array.isArray(cn) ? cn.join('+') : cn;
  const printable = (s: string): string => s.replace(/[^\x20-\x7e]+/g, '?').slice(0, 120);
  return `the certificate${subject ? ` CN=${printable(subject)}` : ''} (serial ${printable(String(cert.serialNumber ?? '?'))})`;
}

function commonNames(cert: PeerCertificate): string[] {
  const cn = cert.subject?.CN as string | string[] | undefined;
  if (cn === undefined) return [];
  return Array.isArray(cn) ? cn : [cn];
}

/**
 * The values of one kind in Node's `subjectaltname` text: `DNS:a.example, URI:spiffe://x,
 * email:"a, b"@example` — entries separated by ", ", a value with special characters written as a
 * JSON string (Node escapes them so that no value can pass for two). null when it does not parse.
 */
export function subjectAltNames(text: string | undefined, type: string): string[] | null {
  if (text === undefined || text === '') return [];
  const out: string[] = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(':', i);
    if (colon === -1) return null;
    const kind = text.slice(i, colon);
    let value: string;
    let next: number;
    if (text[colon + 1] === '"') {
      // A JSON string: find its closing quote (a backslash escapes the next character).
      let j = colon + 2;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (j >= text.length) return null;
      try {
        value = JSON.parse(text.slice(colon + 1, j + 1)) as string;
      } catch {
        return null;
      }
      next = j + 1;
    } else {
      const comma = text.indexOf(', ', colon + 1);
      next = comma === -1 ? text.length : comma;
      value = text.slice(colon + 1, next);
    }
    if (kind === type) out.push(value);
    if (next < text.length) {
      if (!text.startsWith(', ', next)) return null;
      next += 2;
    }
    i = next;
  }
  return out;
}
