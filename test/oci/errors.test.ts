import t from 'tap';
import { OCI_ERRORS, OciError, isOciError, type OciErrorCode } from '../../lib/oci/errors.js';

// The distribution spec's error table (spec.md "Error Codes"), with the statuses the spec's
// endpoint tables and CNCF distribution's errcode registry give each code.
const SPEC: Array<[OciErrorCode, number, string]> = [
  ['BLOB_UNKNOWN', 404, 'blob unknown to registry'],
  ['BLOB_UPLOAD_INVALID', 400, 'blob upload invalid'],
  ['BLOB_UPLOAD_UNKNOWN', 404, 'blob upload unknown to registry'],
  ['DIGEST_INVALID', 400, 'provided digest did not match uploaded content'],
  ['MANIFEST_BLOB_UNKNOWN', 404, 'manifest references a manifest or blob unknown to registry'],
  ['MANIFEST_INVALID', 400, 'manifest invalid'],
  ['MANIFEST_UNKNOWN', 404, 'manifest unknown to registry'],
  ['NAME_INVALID', 400, 'invalid repository name'],
  ['NAME_UNKNOWN', 404, 'repository name not known to registry'],
  ['SIZE_INVALID', 400, 'provided length did not match content length'],
  ['UNAUTHORIZED', 401, 'authentication required'],
  ['DENIED', 403, 'requested access to the resource is denied'],
  ['UNSUPPORTED', 405, 'the operation is unsupported'],
  ['TOOMANYREQUESTS', 429, 'too many requests'],
];

t.test('the table holds all 14 codes of the spec', async (t) => {
  t.equal(SPEC.length, 14);
  for (const [code] of SPEC) t.ok(code in OCI_ERRORS, code);
});

for (const [code, status, message] of SPEC) {
  t.test(`${code} answers ${status} with the spec's message`, async (t) => {
    t.same(OCI_ERRORS[code], { status, message });
    const err = new OciError(code);
    t.equal(err.status, status);
    t.equal(err.message, message);
    t.equal(JSON.stringify(err), JSON.stringify({ errors: [{ code, message }] }));
  });
}

t.test('every code in the table, spec or not, has a 4xx or 5xx status and a message', async (t) => {
  for (const [code, { status, message }] of Object.entries(OCI_ERRORS)) {
    t.ok(status >= 400 && status < 600, `${code} ${status}`);
    t.ok(message.length > 0, `${code} has a message`);
    t.match(code, /^[A-Z_]+$/, `${code} is an upper-case code`);
  }
});

t.test('the proxy-specific codes have the statuses a client expects', async (t) => {
  t.equal(new OciError('RANGE_INVALID').status, 416);
  t.equal(new OciError('NOT_FOUND').status, 404);
  t.equal(new OciError('UPSTREAM_UNAVAILABLE').status, 502);
  t.equal(new OciError('UPSTREAM_TIMEOUT').status, 504);
  t.equal(new OciError('OFFLINE').status, 503);
  t.equal(new OciError('UNKNOWN').status, 500);
});

t.test('toJSON without detail has exactly code and message, and no detail key', async (t) => {
  const body = new OciError('MANIFEST_UNKNOWN', 'manifest unknown: alpine:nope').toJSON();
  t.strictSame(body, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown: alpine:nope' }] });
  t.notOk('detail' in body.errors[0]!);
});

t.test('toJSON carries the detail when one is given', async (t) => {
  const err = new OciError('BLOB_UNKNOWN', undefined, { detail: { digest: 'sha256:abc' } });
  t.equal(
    JSON.stringify(err),
    '{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":{"digest":"sha256:abc"}}]}',
  );
});

t.test('a null detail is kept, since only undefined means "no detail"', async (t) => {
  t.strictSame(new OciError('DENIED', 'no', { detail: null }).toJSON(), { errors: [{ code: 'DENIED', message: 'no', detail: null }] });
});

t.test('a custom message replaces the table message', async (t) => {
  const err = new OciError('NAME_UNKNOWN', 'upstream evil.com is not configured');
  t.equal(err.message, 'upstream evil.com is not configured');
  t.equal(err.status, 404);
});

t.test('a status override changes the status but not the code', async (t) => {
  const err = new OciError('MANIFEST_INVALID', 'bad upstream manifest', { status: 502 });
  t.equal(err.status, 502);
  t.equal(err.code, 'MANIFEST_INVALID');
  t.equal(err.toJSON().errors[0]!.code, 'MANIFEST_INVALID');
});

t.test('extra headers are kept, and default to none', async (t) => {
  t.same(new OciError('TOOMANYREQUESTS', undefined, { headers: { 'Retry-After': '30' } }).headers, { 'Retry-After': '30' });
  t.same(new OciError('TOOMANYREQUESTS').headers, {});
});

t.test('a cause is kept on the error and never appears in the JSON body', async (t) => {
  const cause = new Error('ECONNREFUSED 10.0.0.1:443');
  const err = new OciError('UPSTREAM_UNAVAILABLE', undefined, { cause });
  t.equal(err.cause, cause);
  t.notMatch(JSON.stringify(err), /ECONNREFUSED/);
});

t.test('without a cause the error has no cause property', async (t) => {
  t.notOk('cause' in new OciError('UNKNOWN'));
});

t.test('an OciError is an Error named OciError with a stack', async (t) => {
  const err = new OciError('DENIED');
  t.ok(err instanceof Error);
  t.equal(err.name, 'OciError');
  t.type(err.stack, 'string');
});

t.test('isOciError tells OciErrors from other values', async (t) => {
  t.equal(isOciError(new OciError('DENIED')), true);
  t.equal(isOciError(new Error('DENIED')), false);
  t.equal(isOciError({ code: 'DENIED', status: 403, message: 'x' }), false);
  t.equal(isOciError(null), false);
  t.equal(isOciError(undefined), false);
});
