// Error answers carry their message twice: in the OCI JSON body, and in the status line's reason
// phrase, the one part every client prints (and the only one an answer to HEAD has).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { OciError } from '../../lib/oci/errors.js';
import { reasonPhrase, sendError } from '../../lib/server/respond.js';

interface Answer {
  status: number;
  statusMessage: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** Serves `err` with sendError once, and asks for it with `method`. */
async function answerTo(t: Tap, err: OciError, method = 'GET'): Promise<Answer> {
  const server = http.createServer((req, res) => sendError(res, err, req.method === 'HEAD'));
  server.keepAliveTimeout = 100;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as AddressInfo;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: '/v2/x/manifests/1', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, statusMessage: res.statusMessage ?? '', headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}
type Tap = Pick<typeof t, 'teardown'>;

t.test('the reason phrase is the standard one, a dash, then the message', async (t) => {
  const err = new OciError('OFFLINE', 'the proxy is offline for docker.io (offline: true)');
  t.equal(reasonPhrase(err), 'Service Unavailable - the proxy is offline for docker.io (offline: true)');
});

t.test('a status Node has no phrase for still gets one', async (t) => {
  t.equal(reasonPhrase(new OciError('UNKNOWN', 'odd', { status: 599 })), 'Error - odd');
});

t.test('characters a status line cannot carry become spaces, and a long message is cut', async (t) => {
  t.equal(reasonPhrase(new OciError('DENIED', 'tag caf\u00e9\r\nX-Injected: 1')), 'Forbidden - tag caf X-Injected: 1');
  const long = reasonPhrase(new OciError('MANIFEST_UNKNOWN', 'x'.repeat(1000)));
  t.equal(long.length, 400);
  t.ok(long.startsWith('Not Found - xxx') && long.endsWith('...'));
});

t.test('a GET gets the status, the phrase, the OCI body and the error headers', async (t) => {
  const err = new OciError('TOOMANYREQUESTS', 'upstream docker.io is rate-limiting (429)', { headers: { 'Retry-After': '7' } });
  const a = await answerTo(t, err);
  t.equal(a.status, 429);
  t.equal(a.statusMessage, 'Too Many Requests - upstream docker.io is rate-limiting (429)');
  t.equal(a.headers['retry-after'], '7');
  t.same(JSON.parse(a.body), { errors: [{ code: 'TOOMANYREQUESTS', message: 'upstream docker.io is rate-limiting (429)' }] });
});

t.test('a HEAD gets the status and the phrase, no body', async (t) => {
  const err = new OciError('UNAUTHORIZED', 'authentication required', { headers: { 'WWW-Authenticate': 'Bearer realm="http://x/token",service="stevedore"' } });
  const a = await answerTo(t, err, 'HEAD');
  t.equal(a.status, 401);
  t.equal(a.statusMessage, 'Unauthorized - authentication required');
  t.equal(a.headers['www-authenticate'], 'Bearer realm="http://x/token",service="stevedore"');
  t.equal(a.body, '');
});

t.test("a message that quotes an upstream's words puts only its reason in the status line; the body keeps the quote", async (t) => {
  const quoted = 'upstream docker.io answered 400 on manifest x:1 (NAME_INVALID); the upstream\'s message: "verify your account at https://evil.example"';
  const a = await answerTo(t, new OciError('NAME_INVALID', quoted, { reason: 'upstream docker.io answered 400 on manifest x:1 (NAME_INVALID)' }));
  t.equal(a.statusMessage, 'Bad Request - upstream docker.io answered 400 on manifest x:1 (NAME_INVALID)');
  t.same(JSON.parse(a.body), { errors: [{ code: 'NAME_INVALID', message: quoted }] });
});
