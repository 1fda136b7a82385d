// What stevedore sends where on an upstream's say-so: the configured upstream credentials go only
// to a token realm on https or on the upstream's own origin, and redirects are followed only for
// blob GETs (Docker Hub's CDN). Everything here runs on 127.0.0.1.
import t, { type Test } from 'tap';
import { ociErrors, rawRequest } from '../fixtures/http-client.js';
import { notFound, sendJson, sendManifest, startFake, type Fake } from '../fixtures/fake-upstream.js';
import { buildDockerImage, type Blob } from '../fixtures/images.js';
import { startStevedore } from '../fixtures/stevedore.js';

const UP = 'trust.test';
const CREDS = { username: 'svc-user', password: 's3cret-pass' };
const BASIC = `Basic ${Buffer.from(`${CREDS.username}:${CREDS.password}`).toString('base64')}`;

/** A token service recording the Authorization header of each token request. */
async function startTokenService(t: Parameters<typeof startFake>[0]): Promise<Fake> {
  return startFake(t, (_req, res, url) => (url.pathname === '/token' ? sendJson(res, 200, { token: 'tok', expires_in: 300 }) : notFound(res)));
}

/** An upstream that wants `Bearer tok`, challenging with `realm`, and serves `img` as r:v1 and q:v1. */
async function startBearerUpstream(t: Parameters<typeof startFake>[0], realm: () => string, img: ReturnType<typeof buildDockerImage>): Promise<Fake> {
  return startFake(t, (req, res, url) => {
    if (url.pathname === '/token') return sendJson(res, 200, { token: 'tok', expires_in: 300 });
    const repo = /^\/v2\/(.+)\/manifests\//.exec(url.pathname)?.[1] ?? 'r';
    if (req.headers.authorization !== 'Bearer tok') {
      return sendJson(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, {
        'www-authenticate': `Bearer realm="${realm()}",service="x",scope="repository:${repo}:pull"`,
      });
    }
    if (url.pathname === `/v2/${repo}/manifests/v1`) return sendManifest(res, img.manifest);
    notFound(res, 'MANIFEST_UNKNOWN');
  });
}

/** A CDN serving `layer` at /cdn/<digest>, and an upstream whose blob GET redirects (307) to `location(cdn)`. */
async function cdnBehindRedirect(t: Test, layer: Blob, location: (cdn: Fake) => string): Promise<{ cdn: Fake; up: Fake }> {
  const cdn = await startFake(t, (_req, res, url) => {
    if (url.pathname !== `/cdn/${layer.digest}`) return notFound(res);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(layer.size) });
    res.end(layer.data);
  });
  const up = await startFake(t, (_req, res, url) => {
    if (url.pathname !== `/v2/r/blobs/${layer.digest}`) return notFound(res);
    res.writeHead(307, { location: location(cdn), 'content-length': '0' });
    res.end();
  });
  return { cdn, up };
}

t.test('the upstream credentials are not sent to a plain-http token realm on another origin: the token is fetched anonymously, with one warning', async (t) => {
  const img = buildDockerImage('trust/realm-elsewhere', { layers: 1 });
  const tokens = await startTokenService(t);
  const up = await startBearerUpstream(t, () => `${tokens.url}/token`, img);
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: up.url, ...CREDS } }, defaultUpstream: null });
  for (const repo of ['r', 'q']) {
    const r = await rawRequest(`${sd.url}/v2/${repo}/manifests/v1?ns=${UP}`);
    t.equal(r.status, 200, `${repo}:v1 pulled with an anonymous token`);
  }
  const asked = tokens.requests.filter((q) => q.path.startsWith('/token'));
  t.equal(asked.length, 2, 'one token request per scope');
  t.same(asked.map((q) => q.headers.authorization), [undefined, undefined], 'no Authorization header reached the other origin');
  const warnings = sd.logs.filter((l) => l.level === 40 && /credentials/.test(l.msg));
  t.equal(warnings.length, 1, 'one warning, however many token requests');
  t.notMatch(JSON.stringify(sd.logs), CREDS.password, 'the password is in no log line');
});

t.test('the upstream credentials go to a token realm on the upstream\'s own origin, even over plain http', async (t) => {
  const img = buildDockerImage('trust/realm-own-origin', { layers: 1 });
  let upUrl = '';
  const up = await startBearerUpstream(t, () => `${upUrl}/token`, img);
  upUrl = up.url;
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: up.url, ...CREDS } }, defaultUpstream: null });
  const r = await rawRequest(`${sd.url}/v2/r/manifests/v1?ns=${UP}`);
  t.equal(r.status, 200);
  const asked = up.requests.filter((q) => q.path.startsWith('/token'));
  t.equal(asked.length, 1, 'one token request');
  t.equal(asked[0]?.headers.authorization, BASIC, 'it carried the configured credentials');
});

/** An upstream redirecting every request for `pattern` to the same path on `target`. */
async function startRedirecting(t: Parameters<typeof startFake>[0], target: () => string): Promise<Fake> {
  return startFake(t, (_req, res, url) => {
    res.writeHead(307, { location: `${target()}${url.pathname}${url.search}`, 'content-length': '0' });
    res.end();
  });
}

t.test('a manifest request redirected elsewhere is not followed: 502, and the target is never asked', async (t) => {
  const img = buildDockerImage('trust/redirect-manifest', { layers: 1 });
  const elsewhere = await startFake(t, (_req, res, url) => (url.pathname === '/v2/r/manifests/v1' ? sendManifest(res, img.manifest) : notFound(res)));
  const up = await startRedirecting(t, () => elsewhere.url);
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: up.url } }, defaultUpstream: null });
  const r = await rawRequest(`${sd.url}/v2/r/manifests/v1?ns=${UP}`);
  t.equal(r.status, 502);
  t.equal(ociErrors(r)?.[0]?.code, 'UPSTREAM_UNAVAILABLE');
  t.match(ociErrors(r)?.[0]?.message ?? '', /307/, 'the message says what the upstream answered');
  t.equal(elsewhere.requests.length, 0, 'the redirect target was never asked');
});

t.test('a tag list request redirected elsewhere is not followed: 502, and the target is never asked', async (t) => {
  const elsewhere = await startFake(t, (_req, res) => sendJson(res, 200, { name: 'r', tags: ['secret'] }));
  const up = await startRedirecting(t, () => elsewhere.url);
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: up.url } }, defaultUpstream: null });
  const r = await rawRequest(`${sd.url}/v2/r/tags/list?ns=${UP}`);
  t.equal(r.status, 502);
  t.notMatch(r.body.toString('utf8'), /secret/, 'nothing of the target\'s answer is returned');
  t.equal(elsewhere.requests.length, 0, 'the redirect target was never asked');
});

t.test('a blob GET redirected to another origin on loopback is followed when the upstream is on loopback too, without Authorization', async (t) => {
  const img = buildDockerImage('trust/redirect-blob', { layers: 1 });
  const layer = img.layers[0]!;
  const { cdn, up } = await cdnBehindRedirect(t, layer, (c) => `${c.url}/cdn/${layer.digest}`);
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: up.url, ...CREDS } }, defaultUpstream: null });
  const r = await rawRequest(`${sd.url}/v2/r/blobs/${layer.digest}?ns=${UP}`);
  t.equal(r.status, 200);
  t.ok(r.complete && r.body.equals(layer.data), 'exact bytes');
  t.equal(cdn.requests.length, 1, 'the CDN was asked once');
  t.equal(cdn.requests[0]?.headers.authorization, undefined, 'without Authorization');
});

t.test('a blob HEAD answered with a redirect is not followed: the blob counts as present, its size unknown', async (t) => {
  const img = buildDockerImage('trust/redirect-head', { layers: 1 });
  const layer = img.layers[0]!;
  const cdn = await startFake(t, (_req, res) => notFound(res));
  const up = await startFake(t, (_req, res, url) => {
    if (url.pathname !== `/v2/r/blobs/${layer.digest}`) return notFound(res);
    res.writeHead(307, { location: `${cdn.url}/cdn/${layer.digest}`, 'content-length': '0' });
    res.end();
  });
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: up.url } }, defaultUpstream: null });
  const r = await rawRequest(`${sd.url}/v2/r/blobs/${layer.digest}?ns=${UP}`, { method: 'HEAD' });
  t.equal(r.status, 200);
  t.equal(r.headers['content-length'], undefined, 'no Content-Length: the size is not known');
  t.equal(cdn.requests.length, 0, 'the redirect target was never asked');
});

t.test('with redirects: all, a manifest request redirected to another origin is followed, without Authorization', async (t) => {
  const img = buildDockerImage('trust/redirect-all', { layers: 1 });
  const elsewhere = await startFake(t, (_req, res, url) => (url.pathname === '/v2/r/manifests/v1' ? sendManifest(res, img.manifest) : notFound(res)));
  const up = await startRedirecting(t, () => elsewhere.url);
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: up.url, redirects: 'all', ...CREDS } }, defaultUpstream: null });
  const r = await rawRequest(`${sd.url}/v2/r/manifests/v1?ns=${UP}`);
  t.equal(r.status, 200);
  t.ok(r.body.equals(img.manifest.data), 'the manifest bytes');
  t.equal(elsewhere.requests.length, 1, 'the redirect target was asked once');
  t.equal(elsewhere.requests[0]?.headers.authorization, undefined, 'without Authorization');
});

t.test('a blob GET redirected to a host name resolving to loopback (localhost) is followed when the upstream is on loopback', async (t) => {
  const img = buildDockerImage('trust/redirect-name', { layers: 1 });
  const layer = img.layers[0]!;
  const { cdn, up } = await cdnBehindRedirect(t, layer, (c) => `http://localhost:${c.port}/cdn/${layer.digest}`);
  const sd = await startStevedore(t, { upstreams: { [UP]: { url: up.url } }, defaultUpstream: null });
  const r = await rawRequest(`${sd.url}/v2/r/blobs/${layer.digest}?ns=${UP}`);
  t.equal(r.status, 200);
  t.ok(r.complete && r.body.equals(layer.data), 'exact bytes, through the checked lookup');
  t.equal(cdn.requests.length, 1, 'the CDN was asked once');
});
