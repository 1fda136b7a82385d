import type { IncomingMessage } from 'node:http';
import t from 'tap';
import { crossSiteRefusal, guardedWrite } from '../../../lib/server/auth/cross-site.js';

const req = (headers: Record<string, string>): IncomingMessage => ({ headers }) as unknown as IncomingMessage;
const OWN = ['http://registry.example:5000'];

t.test('guarded: writes on /v2/ (form types too) and on /token (form types allowed); reads and other paths are not', async (t) => {
  for (const m of ['POST', 'PUT', 'PATCH', 'DELETE']) t.same(guardedWrite(m, '/v2/lab/app/blobs/uploads/', '/token'), { form: true }, m);
  t.same(guardedWrite('POST', '/token', '/token'), { form: false });
  for (const m of ['GET', 'HEAD', 'OPTIONS']) t.equal(guardedWrite(m, '/v2/lab/app/blobs/uploads/', '/token'), null, m);
  t.equal(guardedWrite('POST', '/ui/api/state', '/token'), null);
});

t.test('guarded: a POST to the pre-heat endpoint (warm marks), form types too', async (t) => {
  t.same(guardedWrite('POST', '/_stevedore/preheat', '/token'), { form: true });
  t.equal(guardedWrite('GET', '/_stevedore/preheat/0123456789abcdef', '/token'), null, 'reading progress is not a write');
});

t.test("this server's own Origin and Sec-Fetch-Site same-origin or none are not refused; any other Origin is", async (t) => {
  t.equal(crossSiteRefusal(req({}), OWN, { form: true }), null, 'what registry clients send');
  t.equal(crossSiteRefusal(req({ origin: 'http://registry.example:5000', 'sec-fetch-site': 'same-origin' }), OWN, { form: true }), null);
  t.equal(crossSiteRefusal(req({ origin: 'HTTP://Registry.Example:5000' }), OWN, { form: true }), null, 'compared case-insensitively');
  t.equal(crossSiteRefusal(req({ 'sec-fetch-site': 'none' }), OWN, { form: true }), null, 'typed by the user');
  for (const origin of ['https://registry.example:5000', 'http://registry.example:5001', 'http://registry.example', 'null', 'http://evil.example']) {
    t.match(crossSiteRefusal(req({ origin }), OWN, { form: true }), { signs: { origin } }, origin);
  }
});

t.test('Sec-Fetch-Site cross-site and same-site are refused, and form content types on /v2/ only', async (t) => {
  t.match(crossSiteRefusal(req({ 'sec-fetch-site': 'Cross-Site' }), OWN, { form: true }), { signs: { secFetchSite: 'cross-site' } });
  t.match(crossSiteRefusal(req({ 'sec-fetch-site': 'same-site' }), OWN, { form: false }), { signs: { secFetchSite: 'same-site' } });
  for (const type of ['application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/plain;charset=UTF-8', ' TEXT/PLAIN ']) {
    t.not(crossSiteRefusal(req({ 'content-type': type }), OWN, { form: true }), null, `${type} on /v2/`);
    t.equal(crossSiteRefusal(req({ 'content-type': type }), OWN, { form: false }), null, `${type} on /token`);
  }
  for (const type of ['application/octet-stream', 'application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json', '']) {
    t.equal(crossSiteRefusal(req({ 'content-type': type }), OWN, { form: true }), null, `${type || '(empty)'} is a registry client's`);
  }
});
