/**
 * The networks other stevedore processes may be reached on (`cluster.allowedNetworks`,
 * `node.peers.allowedNetworks`). A peer's or a download holder's address comes from Redis, which
 * this process does not trust (docs/ARCHITECTURE.md, rule 10): an address outside these networks
 * is never connected to. A name is checked by the addresses it resolves to, at connect time (so a
 * name that resolves elsewhere is refused too); an address literal before any request.
 */
import dns from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import type { Logger } from 'pino';
import { parseCidr } from '../config/units.js';

export class PeerNetworkError extends Error {
  readonly code = 'ERR_PEER_ADDRESS_REFUSED';
  constructor(host: string, address: string, setting: string) {
    super(`${host === address ? address : `${host} (${address})`} is outside ${setting}`);
    this.name = 'PeerNetworkError';
  }
}

export class PeerNetworks {
  private readonly list = new BlockList();
  /** Addresses already logged as refused (each once). */
  private readonly logged = new Set<string>();
  readonly lookup: LookupFunction;

  constructor(
    cidrs: readonly string[],
    /** The setting, for messages (`cluster.allowedNetworks`). */
    readonly setting: string,
    private readonly log: Logger,
    base: typeof dns.lookup = dns.lookup,
  ) {
    for (const c of cidrs) {
      const p = parseCidr(c);
      if (!p) throw new TypeError(`${setting}: ${JSON.stringify(c)} is not a CIDR block`);
      this.list.addSubnet(p.address, p.prefix, p.type);
    }
    this.lookup = (hostname, options, callback): void => {
      base(hostname, { ...options, all: true }, (err, addresses) => {
        if (err) {
          callback(err, '', 0);
          return;
        }
        const found = addresses as dns.LookupAddress[];
        const allowed = found.filter((a) => this.allowsAddress(a.address));
        if (allowed.length === 0) {
          const refused = new PeerNetworkError(hostname, found[0]?.address ?? hostname, setting);
          this.refused(hostname, refused.message);
          callback(refused as NodeJS.ErrnoException, '', 0);
          return;
        }
        if (options.all) callback(null, allowed);
        else callback(null, allowed[0]!.address, allowed[0]!.family);
      });
    };
  }

  allowsAddress(address: string): boolean {
    const bare = address.replace(/^\[|\]$/g, '');
    const family = isIP(bare);
    if (family === 0) return false;
    // An IPv4-mapped IPv6 address is the IPv4 address it carries.
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
    if (mapped) return this.list.check(mapped[1]!, 'ipv4');
    return this.list.check(bare, family === 4 ? 'ipv4' : 'ipv6');
  }

  /**
   * Whether a URL another process named may be asked at all: http(s), an origin, and an address
   * literal inside the networks (a name is checked when it is resolved). Logs a refusal once.
   */
  allowsUrl(url: string): boolean {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      this.refused(url, 'not a URL');
      return false;
    }
    if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.origin !== url.replace(/\/$/, '')) {
      this.refused(url, 'not an http(s) origin');
      return false;
    }
    const host = u.hostname.replace(/^\[|\]$/g, '');
    if (isIP(host) !== 0 && !this.allowsAddress(host)) {
      this.refused(url, `${host} is outside ${this.setting}`);
      return false;
    }
    return true;
  }

  private refused(what: string, why: string): void {
    if (this.logged.has(what)) return;
    if (this.logged.size > 10_000) this.logged.clear();
    this.logged.add(what);
    this.log.warn({ address: what.slice(0, 200), reason: why, setting: this.setting }, 'refused an address another process named (Redis): not connected to (logged once per address)');
  }
}
