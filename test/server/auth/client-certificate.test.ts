// The subjectAltName text Node gives for a peer certificate, read into the values of one kind
// (client-certificate.ts): what tls.clientIdentity san-dns, san-uri and san-email take.
import t from 'tap';
import { isCertificateIdentity, subjectAltNames } from '../../../lib/server/auth/client-certificate.js';

t.test('the values of one kind are read in order, the other kinds left out', async (t) => {
  const text = 'DNS:node-1.nodes.example, URI:spiffe://cluster.local/ns/ci/sa/builder, IP Address:10.0.0.5, email:ops@example.com, DNS:other.example';
  t.same(subjectAltNames(text, 'DNS'), ['node-1.nodes.example', 'other.example']);
  t.same(subjectAltNames(text, 'URI'), ['spiffe://cluster.local/ns/ci/sa/builder']);
  t.same(subjectAltNames(text, 'email'), ['ops@example.com']);
});

t.test('a value Node wrote as a JSON string (it holds ", ") is one value, not two', async (t) => {
  t.same(subjectAltNames('URI:"spiffe://x/a, DNS:evil.example", DNS:real.example', 'DNS'), ['real.example']);
  t.same(subjectAltNames('URI:"spiffe://x/a, DNS:evil.example", DNS:real.example', 'URI'), ['spiffe://x/a, DNS:evil.example']);
});

t.test('no subjectAltName at all is no value; text that does not parse is null', async (t) => {
  t.same(subjectAltNames(undefined, 'DNS'), []);
  t.same(subjectAltNames('', 'DNS'), []);
  t.equal(subjectAltNames('URI:"unterminated', 'URI'), null);
  t.equal(subjectAltNames('no kind here', 'DNS'), null);
});

t.test('a certificate identity has a ":", an htpasswd user name never', async (t) => {
  t.ok(isCertificateIdentity('cn:node-1'));
  t.notOk(isCertificateIdentity('alice'));
});
