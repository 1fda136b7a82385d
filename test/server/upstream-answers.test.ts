// The HTTP edge maps an upstream's failure (UpstreamError, thrown as it is by the pull path) once,
// to the OCI error of the request's kind (lib/server/respond.ts, toOciError / upstreamAnswer).
import t from 'tap';
import { OciError } from '../../lib/oci/errors.js';
import { toOciError, upstreamAnswer } from '../../lib/server/respond.js';
import { UpstreamError } from '../../lib/upstream/errors.js';

const notFound = (): UpstreamError => new UpstreamError('not_found', 'docker.io', 'upstream docker.io answered 404 on manifest library/x:1', { status: 404, upstreamCode: 'NAME_UNKNOWN' });

t.test("an upstream's not-found is answered with the request's own *_UNKNOWN code, whatever the upstream's body said", async (t) => {
  for (const [kind, code] of [
    ['manifest', 'MANIFEST_UNKNOWN'],
    ['blob', 'BLOB_UNKNOWN'],
    ['tags', 'NAME_UNKNOWN'],
    ['referrers', 'NAME_UNKNOWN'],
  ] as const) {
    const oci = toOciError(notFound(), kind);
    t.equal(oci.code, code, kind);
    t.equal(oci.status, 404, kind);
    t.equal(oci.message, 'upstream docker.io answered 404 on manifest library/x:1', kind);
  }
});

t.test('a rate-limited upstream is answered 429 TOOMANYREQUESTS with its Retry-After', async (t) => {
  const oci = toOciError(new UpstreamError('rate_limited', 'docker.io', 'upstream docker.io is rate-limiting', { status: 429, retryAfter: 42 }), 'blob');
  t.equal(oci.code, 'TOOMANYREQUESTS');
  t.equal(oci.status, 429);
  t.same(oci.headers, { 'Retry-After': '42' });
});

t.test('an unreachable upstream is answered 502 UPSTREAM_UNAVAILABLE on every kind alike', async (t) => {
  for (const kind of ['manifest', 'blob', 'tags', 'referrers']) {
    const oci = toOciError(new UpstreamError('unavailable', 'docker.io', 'upstream docker.io unreachable (ECONNREFUSED) on blob'), kind);
    t.equal(oci.code, 'UPSTREAM_UNAVAILABLE', kind);
    t.equal(oci.status, 502, kind);
  }
});

t.test('an upstream failure on a request no upstream answers is an internal error, as any unexpected throw', async (t) => {
  const err = notFound();
  t.equal(upstreamAnswer(err, 'upload'), null);
  t.equal(upstreamAnswer(err, undefined), null);
  const oci = toOciError(err, 'upload');
  t.equal(oci.code, 'UNKNOWN');
  t.equal(oci.message, 'internal error');
  t.equal(toOciError(err).code, 'UNKNOWN');
});

t.test('an OCI error passes the edge unchanged, whatever the kind', async (t) => {
  const err = new OciError('MANIFEST_INVALID', 'bad', { status: 502 });
  t.equal(toOciError(err, 'blob'), err);
  t.equal(upstreamAnswer(err, 'blob'), null);
});
