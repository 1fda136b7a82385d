/**
 * The address a login is counted against. Behind a reverse proxy every connection comes from the
 * proxy, so the socket's address would put all clients in one bucket (ten bad passwords, and
 * everybody waits). `auth.trustedProxies` names the proxies whose `X-Forwarded-For` is believed:
 *
 *   socket address not trusted           → it is the client (X-Forwarded-For is ignored: anyone can send one)
 *   trusted → walk X-Forwarded-For from the right (the hop nearest us first); the first address
 *             that is not a trusted proxy is the client; all trusted → the leftmost
 *   an entry that is not an address      → the walk stops at the trusted hop that sent it
 *
 * IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a socket on `::` reports) count as IPv4.
 */
import { BlockList, isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';
import { parseAddressRange } from '../../config/auth-schema.js';

/** Hops read from X-Forwarded-For, at most (a longer header is read from its right end). */
const MAX_HOPS = 32;

export class ClientAddress {
  private readonly trusted = new BlockList();
  private readonly any: boolean;

  constructor(trustedProxies: readonly string[]) {
    for (const entry of trustedProxies) {
      const range = parseAddressRange(entry);
      if (range === null) throw new Error(`not an address or CIDR range: ${entry}`);
      this.trusted.addSubnet(range.address, range.prefix, range.family);
    }
    this.any = trustedProxies.length > 0;
  }

  /** The client's address for `req`. */
  of(req: IncomingMessage): string {
    let client = normalize(req.socket.remoteAddress ?? '') ?? 'unknown';
    if (!this.any || !this.isTrusted(client)) return client;
    const header = req.headers['x-forwarded-for'];
    const hops = (Array.isArray(header) ? header.join(',') : (header ?? '')).split(',').slice(-MAX_HOPS);
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = normalize(stripPort(hops[i]!.trim()));
      if (hop === null) break;
      client = hop;
      if (!this.isTrusted(hop)) break;
    }
    return client;
  }

  private isTrusted(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.trusted.check(address, family === 4 ? 'ipv4' : 'ipv6');
  }
}

/** An IP address in its plain form (IPv4-mapped IPv6 as IPv4), or null when it is none. */
function normalize(text: string): string | null {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(text);
  const address = mapped ? mapped[1]! : text;
  return isIP(address) === 0 ? null : address.toLowerCase();
}

/** `1.2.3.4:5678` and `[2001:db8::1]:5678` (some proxies add the port) without the port. */
function stripPort(hop: string): string {
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(hop);
  if (v6) return v6[1]!;
  const v4 = /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(hop);
  return v4 ? v4[1]! : hop;
}
