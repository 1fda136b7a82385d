// Upstream failures are mapped once: undici/node error codes to kinds, kinds to OCI errors.
import t from 'tap';
import { mapTransportError, offlineMessage, UpstreamError } from '../../lib/upstream/errors.js';

function withCode(code: string): Error {
  return Object.assign(new Error(code), { code });
}

t.test('DNS failures, refusals and resets are "unavailable" and become 502 naming the upstream', async (t) => {
  for (const code of ['ENOTFOUND', 'EAI_AGAIN', 'ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'UND_ERR_SOCKET']) {
    const e = mapTransportError(withCode(code), 'docker.io', 'manifest library/x:1');
    t.ok(e instanceof UpstreamError && e.kind === 'unavailable', code);
    const oci = (e as UpstreamError).toOciError('MANIFEST_UNKNOWN');
    t.equal(oci.status, 502, `${code} → 502`);
    t.match(oci.message, /docker\.io/);
  }
});

t.test('connect, first-byte and idle timeouts are "timeout" and become 504', async (t) => {
  for (const code of ['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']) {
    const e = mapTransportError(withCode(code), 'ghcr.io', 'blob');
    t.ok(e instanceof UpstreamError && e.kind === 'timeout', code);
    t.equal((e as UpstreamError).toOciError('BLOB_UNKNOWN').code, 'UPSTREAM_TIMEOUT');
  }
});

t.test('a timeout names the setting that decided it', async (t) => {
  const keys = { UND_ERR_CONNECT_TIMEOUT: 'timeouts.connect', UND_ERR_HEADERS_TIMEOUT: 'timeouts.firstByte', UND_ERR_BODY_TIMEOUT: 'timeouts.idle' };
  for (const [code, key] of Object.entries(keys)) {
    t.equal(mapTransportError(withCode(code), 'ghcr.io', 'manifest x:1').message, `upstream ghcr.io timed out (${code}, ${key}) on manifest x:1`);
  }
});

t.test('the OFFLINE message says what is missing, which setting, and how to get the content', async (t) => {
  t.equal(
    offlineMessage('docker.io', 'manifest library/app:1.0'),
    'the proxy is offline for docker.io (offline: true) and has no manifest library/app:1.0 stored; import it (stevedore import) or push it under docker.io/, or set offline: false',
  );
});

t.test('a code nested in a cause or an AggregateError is found', async (t) => {
  const nested = Object.assign(new Error('fetch failed'), { cause: withCode('ECONNREFUSED') });
  t.match(mapTransportError(nested, 'quay.io', 'x'), { kind: 'unavailable' });
  const agg = new AggregateError([withCode('ENETUNREACH')], 'all failed');
  t.match(mapTransportError(agg, 'quay.io', 'x'), { kind: 'unavailable' });
});

t.test('an abort passes through unchanged', async (t) => {
  const abort = Object.assign(new Error('aborted'), { name: 'AbortError' });
  t.equal(mapTransportError(abort, 'docker.io', 'x'), abort);
});

t.test('a 429 keeps its Retry-After on the OCI error', async (t) => {
  const e = new UpstreamError('rate_limited', 'docker.io', 'slow down', { status: 429, retryAfter: 42 });
  const oci = e.toOciError('MANIFEST_UNKNOWN');
  t.equal(oci.code, 'TOOMANYREQUESTS');
  t.equal(oci.status, 429);
  t.same(oci.headers, { 'Retry-After': '42' });
});

t.test('denied upstream access becomes NAME_UNKNOWN 404 so containerd tries its next host', async (t) => {
  const oci = new UpstreamError('denied', 'docker.io', 'no', { status: 401 }).toOciError('MANIFEST_UNKNOWN');
  t.equal(oci.code, 'NAME_UNKNOWN');
  t.equal(oci.status, 404);
});

t.test("an upstream 404 is the request's own *_UNKNOWN, whatever code the upstream's body gave: a HEAD's answer has none, and the two must not differ", async (t) => {
  t.equal(new UpstreamError('not_found', 'a', 'x', { upstreamCode: 'NAME_UNKNOWN' }).toOciError('BLOB_UNKNOWN').code, 'BLOB_UNKNOWN');
  t.equal(new UpstreamError('not_found', 'a', 'x', { upstreamCode: 'BLOB_UNKNOWN' }).toOciError('MANIFEST_UNKNOWN').code, 'MANIFEST_UNKNOWN');
  t.equal(new UpstreamError('not_found', 'a', 'x').toOciError('MANIFEST_UNKNOWN').code, 'MANIFEST_UNKNOWN');
});

t.test('offline becomes OFFLINE 503', async (t) => {
  const oci = new UpstreamError('offline', 'docker.io', 'offline').toOciError('MANIFEST_UNKNOWN');
  t.equal(oci.code, 'OFFLINE');
  t.equal(oci.status, 503);
});
