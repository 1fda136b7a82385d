// Addresses of other processes come from Redis: only those inside the allowed networks are
// connected to (issue 25), by literal before a request and by resolved address at connect time.
import type dns from 'node:dns';
import pino from 'pino';
import t from 'tap';
import { PeerNetworks } from '../../lib/cluster/peer-networks.js';
import { DEFAULT_PEER_NETWORKS } from '../../lib/config/schema.js';

function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

t.test('the default networks allow private and loopback addresses, not metadata or public ones', async (t) => {
  const n = new PeerNetworks(DEFAULT_PEER_NETWORKS, 'cluster.allowedNetworks', pino({ level: 'silent' }));
  for (const ok of ['http://10.1.2.3:5000', 'http://192.168.0.9:5000', 'http://172.20.0.1', 'http://127.0.0.1:5000', 'http://[fd12::1]:5000', 'http://[::1]:5000']) t.ok(n.allowsUrl(ok), ok);
  for (const no of ['http://169.254.169.254', 'http://8.8.8.8:5000', 'http://[fe80::1]:5000', 'http://[2001:db8::1]', 'http://[::ffff:169.254.169.254]']) t.notOk(n.allowsUrl(no), no);
});

t.test('only http(s) origins are asked: paths, credentials and other schemes are refused', async (t) => {
  const n = new PeerNetworks(DEFAULT_PEER_NETWORKS, 'node.peers.allowedNetworks', pino({ level: 'silent' }));
  for (const no of ['http://10.0.0.1:5000/x', 'http://u:p@10.0.0.1:5000', 'file:///etc/passwd', 'gopher://10.0.0.1', 'not a url']) t.notOk(n.allowsUrl(no), no);
});

t.test('configured networks replace the defaults', async (t) => {
  const n = new PeerNetworks(['10.244.0.0/16'], 'node.peers.allowedNetworks', pino({ level: 'silent' }));
  t.ok(n.allowsUrl('http://10.244.3.4:5001'));
  t.notOk(n.allowsUrl('http://10.0.0.1:5001'));
  t.notOk(n.allowsUrl('http://127.0.0.1:5001'));
});

t.test('a refused address is logged once, naming the setting', async (t) => {
  const { log, lines } = capture();
  const n = new PeerNetworks(['10.0.0.0/8'], 'cluster.allowedNetworks', log);
  n.allowsUrl('http://8.8.8.8:5000');
  n.allowsUrl('http://8.8.8.8:5000');
  n.allowsUrl('http://9.9.9.9:5000');
  t.equal(lines.length, 2);
  t.equal(lines[0]!.setting, 'cluster.allowedNetworks');
  t.equal(lines[0]!.address, 'http://8.8.8.8:5000');
});

t.test('a name is checked by what it resolves to: one that resolves outside is refused at connect time', async (t) => {
  const fake = ((host: string, _opts: unknown, cb: (err: Error | null, a: dns.LookupAddress[]) => void) => {
    cb(null, host === 'inside.example' ? [{ address: '10.0.0.5', family: 4 }] : [{ address: '169.254.169.254', family: 4 }]);
  }) as unknown as typeof dns.lookup;
  const n = new PeerNetworks(['10.0.0.0/8'], 'cluster.allowedNetworks', pino({ level: 'silent' }), fake);
  t.ok(n.allowsUrl('http://outside.example:5000'), 'a name passes the literal check');
  const resolve = (host: string): Promise<string> =>
    new Promise((resolve, reject) => n.lookup(host, { all: false }, (err, address) => (err ? reject(err) : resolve(address as string))));
  t.equal(await resolve('inside.example'), '10.0.0.5');
  await t.rejects(resolve('outside.example'), { code: 'ERR_PEER_ADDRESS_REFUSED' });
});

t.test('a network that is not a CIDR block is refused when the setting is read', async (t) => {
  t.throws(() => new PeerNetworks(['10.0.0.0'], 'cluster.allowedNetworks', pino({ level: 'silent' })), /not a CIDR block/);
  t.throws(() => new PeerNetworks(['10.0.0.0/33'], 'cluster.allowedNetworks', pino({ level: 'silent' })), /not a CIDR block/);
});
