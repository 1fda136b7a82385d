// Where stevedore connects on an upstream's say-so (redirect targets, token realms) and where the
// upstream's credentials may go. Pure decisions and a lookup with a fake resolver: nothing here
// opens a connection.
import type dns from 'node:dns';
import t from 'tap';
import {
  checkAddressLiteral,
  classifyAddress,
  guardedLookup,
  isLocalHost,
  mayConnect,
  mayReceiveCredentials,
} from '../../lib/upstream/outbound-policy.js';

const kinds: Array<[string, ReturnType<typeof classifyAddress>]> = [
  ['169.254.169.254', 'link-local'],
  ['169.254.0.1', 'link-local'],
  ['fe80::1', 'link-local'],
  ['[fe80::a:b]', 'link-local'],
  ['febf::1', 'link-local'],
  ['::ffff:169.254.169.254', 'link-local'],
  ['127.0.0.1', 'loopback'],
  ['127.8.9.10', 'loopback'],
  ['::1', 'loopback'],
  ['0.0.0.0', 'loopback'],
  ['::ffff:127.0.0.1', 'loopback'],
  ['10.1.2.3', 'private'],
  ['172.16.0.1', 'private'],
  ['172.31.255.255', 'private'],
  ['192.168.1.1', 'private'],
  ['100.64.0.1', 'private'],
  ['fd00::1', 'private'],
  ['224.0.0.1', 'unusable'],
  ['255.255.255.255', 'unusable'],
  ['ff02::1', 'unusable'],
  // Cloud metadata services outside 169.254/16: AWS's IPv6 IMDS, Alibaba's.
  ['fd00:ec2::254', 'metadata'],
  ['[fd00:ec2::254]', 'metadata'],
  ['100.100.100.200', 'metadata'],
  ['::ffff:100.100.100.200', 'metadata'],
  // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed: classified by it.
  ['64:ff9b::a9fe:a9fe', 'link-local'],
  ['64:ff9b::169.254.169.254', 'link-local'],
  ['64:ff9b::6464:64c8', 'metadata'],
  ['64:ff9b::7f00:1', 'loopback'],
  ['64:ff9b::a00:1', 'private'],
  ['64:ff9b::e000:1', 'unusable'],
  ['64:ff9b::808:808', 'public'],
  ['2002:a9fe:a9fe::1', 'link-local'],
  ['2002:7f00:1::', 'loopback'],
  ['2002:c0a8:101:1::1', 'private'],
  ['2002:808:808::1', 'public'],
  ['172.32.0.1', 'public'],
  ['8.8.8.8', 'public'],
  ['2606:4700::1111', 'public'],
];
for (const [ip, kind] of kinds) {
  t.test(`${ip} is ${kind}`, async (t) => {
    t.equal(classifyAddress(ip), kind);
  });
}

t.test('link-local, metadata and multicast addresses are never connected to, whatever the upstream', async (t) => {
  for (const local of [false, true]) {
    t.notOk(mayConnect('link-local', local), `link-local, upstream local: ${local}`);
    t.notOk(mayConnect('metadata', local), `metadata, upstream local: ${local}`);
    t.notOk(mayConnect('unusable', local), `multicast, upstream local: ${local}`);
  }
});

t.test('loopback and private addresses only when the upstream itself is on one; public ones always', async (t) => {
  t.notOk(mayConnect('loopback', false));
  t.notOk(mayConnect('private', false));
  t.ok(mayConnect('loopback', true));
  t.ok(mayConnect('private', true));
  t.ok(mayConnect('public', false));
  t.ok(mayConnect('public', true));
});

t.test('an address literal redirect target is checked before connecting; names are left to the lookup', async (t) => {
  t.throws(() => checkAddressLiteral('169.254.169.254', true), { code: 'ERR_FORBIDDEN_ADDRESS', message: /link-local/ });
  t.throws(() => checkAddressLiteral('[fe80::1]', true), { code: 'ERR_FORBIDDEN_ADDRESS' });
  // Metadata services outside link-local, and link-local through NAT64 / 6to4: refused even for a lab upstream.
  t.throws(() => checkAddressLiteral('[fd00:ec2::254]', true), { code: 'ERR_FORBIDDEN_ADDRESS', message: /metadata/ });
  t.throws(() => checkAddressLiteral('100.100.100.200', true), { code: 'ERR_FORBIDDEN_ADDRESS', message: /metadata/ });
  t.throws(() => checkAddressLiteral('[64:ff9b::a9fe:a9fe]', true), { code: 'ERR_FORBIDDEN_ADDRESS', message: /link-local/ });
  t.throws(() => checkAddressLiteral('[2002:a9fe:a9fe::1]', true), { code: 'ERR_FORBIDDEN_ADDRESS', message: /link-local/ });
  t.throws(() => checkAddressLiteral('[64:ff9b::a00:8]', false), { code: 'ERR_FORBIDDEN_ADDRESS', message: /private/ });
  t.throws(() => checkAddressLiteral('10.0.0.8', false), { code: 'ERR_FORBIDDEN_ADDRESS', message: /private/ });
  t.doesNotThrow(() => checkAddressLiteral('10.0.0.8', true));
  t.doesNotThrow(() => checkAddressLiteral('203.0.113.9', false));
  t.doesNotThrow(() => checkAddressLiteral('cdn.example.com', false));
});

/** A resolver answering from a table, as dns.lookup with `all: true` does. */
function fakeResolver(table: Record<string, string[]>): typeof dns.lookup {
  const lookup = (host: string, _opts: unknown, cb: (err: NodeJS.ErrnoException | null, addresses: dns.LookupAddress[]) => void): void => {
    const list = table[host];
    if (!list) cb(Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' }), []);
    else cb(null, list.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })));
  };
  return lookup as unknown as typeof dns.lookup;
}

function resolve(lookup: ReturnType<typeof guardedLookup>, host: string, all: boolean): Promise<{ err: NodeJS.ErrnoException | null; result: unknown }> {
  return new Promise((r) => lookup(host, { all }, (err, address, family) => r({ err, result: all ? address : { address, family } })));
}

const TABLE = {
  'metadata.example': ['169.254.169.254'],
  'lan.example': ['10.0.0.5'],
  'cdn.example': ['203.0.113.7', '2001:db8::7'],
  'mixed.example': ['169.254.169.254', '203.0.113.8'],
};

t.test('a name resolving to a link-local address is refused at connect time', async (t) => {
  const { err } = await resolve(guardedLookup(() => true, fakeResolver(TABLE)), 'metadata.example', false);
  t.equal(err?.code, 'ERR_FORBIDDEN_ADDRESS');
  t.match(err?.message, /metadata\.example resolves to 169\.254\.169\.254/);
});

t.test('a name resolving to a private address is refused unless the upstream is local', async (t) => {
  t.equal((await resolve(guardedLookup(() => false, fakeResolver(TABLE)), 'lan.example', false)).err?.code, 'ERR_FORBIDDEN_ADDRESS');
  t.same((await resolve(guardedLookup(() => true, fakeResolver(TABLE)), 'lan.example', false)).result, { address: '10.0.0.5', family: 4 });
});

t.test('of a name\'s addresses only the allowed ones are used, in both lookup forms', async (t) => {
  const lookup = guardedLookup(() => false, fakeResolver(TABLE));
  t.same((await resolve(lookup, 'mixed.example', false)).result, { address: '203.0.113.8', family: 4 });
  t.same((await resolve(lookup, 'cdn.example', true)).result, [
    { address: '203.0.113.7', family: 4 },
    { address: '2001:db8::7', family: 6 },
  ]);
});

t.test('a name that does not resolve fails as the resolver says', async (t) => {
  t.equal((await resolve(guardedLookup(() => false, fakeResolver(TABLE)), 'nowhere.example', false)).err?.code, 'ENOTFOUND');
});

t.test('an upstream is local when any of its addresses is loopback or private', async (t) => {
  const lookup = (async (host: string) => (TABLE as Record<string, string[]>)[host]!.map((address) => ({ address, family: 4 }))) as unknown as typeof dns.promises.lookup;
  t.ok(await isLocalHost('127.0.0.1'));
  t.ok(await isLocalHost('[::1]'));
  t.notOk(await isLocalHost('203.0.113.1'));
  t.ok(await isLocalHost('lan.example', lookup));
  t.notOk(await isLocalHost('cdn.example', lookup));
});

t.test('credentials go to an https realm anywhere, and over http only to the upstream\'s own origin', async (t) => {
  const up = 'http://registry.example:5000';
  t.ok(mayReceiveCredentials(new URL('https://auth.example/token'), up));
  t.ok(mayReceiveCredentials(new URL('http://registry.example:5000/token'), up));
  t.notOk(mayReceiveCredentials(new URL('http://auth.example/token'), up));
  t.notOk(mayReceiveCredentials(new URL('http://registry.example:5001/token'), up), 'another port is another origin');
  t.notOk(mayReceiveCredentials(new URL('http://registry.example/token'), 'https://registry.example'), 'http on the https upstream\'s host is another origin');
});
