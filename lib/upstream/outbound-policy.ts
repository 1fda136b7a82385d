/**
 * Where stevedore may connect on an upstream's say-so, and what it may send there. The configured
 * upstream is trusted (an operator chose it); an origin it names (a redirect's Location, a token
 * realm in its 401) is not:
 *
 *   - never a link-local address (169.254.0.0/16, fe80::/10: cloud metadata services live there),
 *     nor a metadata service's address outside those (AWS fd00:ec2::254, GCP fd20:ce::254, Alibaba
 *     100.100.100.200, Oracle 192.0.0.192), multicast, broadcast or reserved;
 *   - loopback and private addresses (127/8, 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7,
 *     ...) only when the upstream itself is on such an address (a lab registry redirecting to its
 *     storage beside it), never when it is on the internet;
 *   - the upstream's credentials go only to a token realm over https or on its own origin.
 *
 * A name is checked by the addresses it resolves to, at connect time (guardedLookup), so a name
 * that resolves to a forbidden address is refused too; an address literal is checked before. An
 * IPv6 address that reaches an IPv4 one (IPv4-mapped, SIIT, NAT64 64:ff9b::/96, 6to4 2002::/16) is
 * classified by the IPv4 address it embeds: 64:ff9b::a9fe:a9fe is 169.254.169.254.
 */
import dns from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';

export type AddressKind = 'public' | 'loopback' | 'private' | 'link-local' | 'metadata' | 'unusable';

function blockList(v4: Array<[string, number]>, v6: Array<[string, number]>): BlockList {
  const b = new BlockList();
  for (const [net, prefix] of v4) b.addSubnet(net, prefix, 'ipv4');
  for (const [net, prefix] of v6) b.addSubnet(net, prefix, 'ipv6');
  return b;
}

const LINK_LOCAL = blockList([['169.254.0.0', 16]], [['fe80::', 10]]);
/** Cloud metadata services at addresses that are not link-local (checked before the private ranges they lie in). */
const METADATA = blockList(
  [
    ['100.100.100.200', 32], // Alibaba Cloud
    ['192.0.0.192', 32], // Oracle Cloud (legacy)
  ],
  [
    ['fd00:ec2::254', 128], // AWS IMDS over IPv6
    ['fd20:ce::254', 128], // Google Cloud metadata over IPv6
  ],
);
const UNUSABLE = blockList(
  [
    ['224.0.0.0', 4], // multicast
    ['240.0.0.0', 4], // reserved, and the broadcast address
  ],
  [['ff00::', 8]], // multicast
);
const LOOPBACK = blockList(
  [
    ['127.0.0.0', 8],
    ['0.0.0.0', 8], // "this host": connecting to it reaches the local machine
  ],
  [
    ['::1', 128],
    ['::', 128],
  ],
);
const PRIVATE = blockList(
  [
    ['10.0.0.0', 8],
    ['172.16.0.0', 12],
    ['192.168.0.0', 16],
    ['100.64.0.0', 10], // carrier-grade NAT
    ['198.18.0.0', 15], // benchmarking networks
  ],
  [
    ['fc00::', 7], // unique local
    ['fec0::', 10], // site-local (deprecated)
  ],
);

/** IPv6 ranges whose addresses reach the IPv4 address they embed, with the 16-bit parts that hold it. */
const EMBEDS_IPV4: Partial<Record<ReturnType<ipaddr.IPv6['range']>, [number, number]>> = {
  ipv4Mapped: [6, 7], // ::ffff:a.b.c.d
  rfc6145: [6, 7], // ::ffff:0:a.b.c.d (SIIT)
  rfc6052: [6, 7], // 64:ff9b::a.b.c.d (NAT64)
  '6to4': [1, 2], // 2002:aabb:ccdd::/48
};

/** The IPv4 address an IPv6 one reaches through a translation or tunnel range, else null. */
function embeddedIPv4(ipv6: string): string | null {
  const addr = ipaddr.IPv6.parse(ipv6);
  const at = EMBEDS_IPV4[addr.range()];
  if (!at) return null;
  const [hi, lo] = [addr.parts[at[0]]!, addr.parts[at[1]]!];
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}

/** What kind of address `ip` (an IPv4 or IPv6 literal, brackets allowed) is. */
export function classifyAddress(ip: string): AddressKind {
  const bare = ip.replace(/^\[|\]$/g, '');
  const family = isIP(bare);
  if (family === 0) throw new TypeError(`not an IP address: ${ip}`);
  if (family === 6) {
    const v4 = embeddedIPv4(bare);
    if (v4 !== null) return classifyAddress(v4);
  }
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (LINK_LOCAL.check(bare, type)) return 'link-local';
  if (METADATA.check(bare, type)) return 'metadata';
  if (UNUSABLE.check(bare, type)) return 'unusable';
  if (LOOPBACK.check(bare, type)) return 'loopback';
  if (PRIVATE.check(bare, type)) return 'private';
  return 'public';
}

/** Whether an origin the upstream named may be connected to at an address of this kind. */
export function mayConnect(kind: AddressKind, upstreamIsLocal: boolean): boolean {
  if (kind === 'public') return true;
  if (kind === 'loopback' || kind === 'private') return upstreamIsLocal;
  return false;
}

/** Whether an address of this kind makes the upstream itself "local" (loopback or private). */
export function isLocalKind(kind: AddressKind): boolean {
  return kind === 'loopback' || kind === 'private' || kind === 'link-local' || kind === 'metadata';
}

/** The upstream's credentials may go to this token realm: https, or the upstream's own origin. */
export function mayReceiveCredentials(realm: URL, upstreamOrigin: string): boolean {
  return realm.protocol === 'https:' || realm.origin === upstreamOrigin;
}

/** The error for a refused address: `code` ERR_FORBIDDEN_ADDRESS, the reason in the message. */
export class ForbiddenAddressError extends Error {
  readonly code = 'ERR_FORBIDDEN_ADDRESS';
  constructor(host: string, address: string, kind: AddressKind) {
    const why =
      kind === 'link-local' ? 'a link-local (metadata) address' : kind === 'metadata' ? "a cloud metadata service's address" : kind === 'unusable' ? 'a multicast or reserved address' : `a ${kind} address, and the upstream is not on one`;
    super(host === address ? `${address} is ${why}` : `${host} resolves to ${address}, ${why}`);
    this.name = 'ForbiddenAddressError';
  }
}

/** Throws ForbiddenAddressError when `hostname` is an address literal that may not be connected to. */
export function checkAddressLiteral(hostname: string, upstreamIsLocal: boolean): void {
  const bare = hostname.replace(/^\[|\]$/g, '');
  if (isIP(bare) === 0) return;
  const kind = classifyAddress(bare);
  if (!mayConnect(kind, upstreamIsLocal)) throw new ForbiddenAddressError(bare, bare, kind);
}

type LookupCallback = Parameters<LookupFunction>[2];

/**
 * A `lookup` for sockets to origins the upstream named: resolves as dns.lookup does, keeps only
 * the addresses that may be connected to, and fails with ForbiddenAddressError when none is left.
 */
export function guardedLookup(upstreamIsLocal: () => boolean, base: typeof dns.lookup = dns.lookup): LookupFunction {
  return (hostname: string, options: dns.LookupOptions, callback: LookupCallback): void => {
    base(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) {
        callback(err, '', 0);
        return;
      }
      const list = addresses as dns.LookupAddress[];
      const allowed = list.filter((a) => mayConnect(classifyAddress(a.address), upstreamIsLocal()));
      if (allowed.length === 0) {
        const first = list[0];
        const refused = new ForbiddenAddressError(hostname, first?.address ?? hostname, first ? classifyAddress(first.address) : 'unusable');
        callback(refused as NodeJS.ErrnoException, '', 0);
        return;
      }
      if (options.all) callback(null, allowed);
      else callback(null, allowed[0]!.address, allowed[0]!.family);
    });
  };
}

/** Whether `hostname` (a name or a literal) is on a loopback or private address (any of its addresses). */
export async function isLocalHost(hostname: string, base: typeof dns.promises.lookup = dns.promises.lookup): Promise<boolean> {
  const bare = hostname.replace(/^\[|\]$/g, '');
  if (isIP(bare) !== 0) return isLocalKind(classifyAddress(bare));
  try {
    const addresses = await base(bare, { all: true });
    return addresses.some((a) => isLocalKind(classifyAddress(a.address)));
  } catch {
    return false;
  }
}
