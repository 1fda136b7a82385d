import type { IncomingMessage } from 'node:http';
import t from 'tap';
import { ClientAddress } from '../../../lib/server/auth/client-address.js';

const req = (remoteAddress: string, xff?: string | string[]): IncomingMessage =>
  ({ socket: { remoteAddress }, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } }) as unknown as IncomingMessage;

t.test('with no trusted proxies, the socket address is the client, whatever X-Forwarded-For says', async (t) => {
  const a = new ClientAddress([]);
  t.equal(a.of(req('203.0.113.9', '10.0.0.1')), '203.0.113.9');
  t.equal(a.of(req('::ffff:203.0.113.9')), '203.0.113.9', 'IPv4-mapped IPv6 as IPv4');
});

t.test('from a trusted proxy, the nearest address that is not a trusted proxy is the client', async (t) => {
  const a = new ClientAddress(['10.0.0.0/8', 'fd00::/8']);
  t.equal(a.of(req('10.0.0.2', '198.51.100.7')), '198.51.100.7');
  t.equal(a.of(req('::ffff:10.0.0.2', '192.0.2.1, 198.51.100.7, 10.1.1.1')), '198.51.100.7', 'hops the client wrote left of its own address are ignored');
  t.equal(a.of(req('fd00::5', ['192.0.2.1', '2001:db8::7'])), '2001:db8::7', 'repeated headers are one list');
  t.equal(a.of(req('10.0.0.2', '10.9.9.9, 10.1.1.1')), '10.9.9.9', 'all trusted: the leftmost');
  t.equal(a.of(req('10.0.0.2', '198.51.100.7:5123')), '198.51.100.7', 'a port is dropped');
  t.equal(a.of(req('10.0.0.2', '[2001:db8::7]:5123')), '2001:db8::7');
  t.equal(a.of(req('10.0.0.2')), '10.0.0.2', 'no header: the proxy itself');
});

t.test('an X-Forwarded-For entry that is not an address stops the walk at the trusted hop that sent it', async (t) => {
  const a = new ClientAddress(['10.0.0.0/8']);
  t.equal(a.of(req('10.0.0.2', '198.51.100.7, unknown')), '10.0.0.2');
  t.equal(a.of(req('10.0.0.2', '198.51.100.7, garbage, 10.0.0.3')), '10.0.0.3');
});

t.test('a peer that is not trusted is the client even when it sends X-Forwarded-For', async (t) => {
  const a = new ClientAddress(['10.0.0.0/8']);
  t.equal(a.of(req('198.51.100.7', '10.0.0.5')), '198.51.100.7');
});
