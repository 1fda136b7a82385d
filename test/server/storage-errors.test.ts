// Storage throws its own errors (lib/storage/errors.ts); the HTTP edge maps each, in one place
// (toOciError), to the OCI error clients saw when storage threw protocol errors itself: same code,
// status, message and headers.
import t from 'tap';
import { DigestMismatchError, SizeInvalidError, StorageError, StorageFullError, TooManyUploadsError, UploadInvalidError, UploadUnknownError } from '../../lib/storage/errors.js';
import { isMappedError, toOciError } from '../../lib/server/respond.js';

const cases: Array<[string, StorageError, { code: string; status: number; message: string; headers: Record<string, string> }]> = [
  ['a digest mismatch', new DigestMismatchError('content does not match sha256:aa (got sha256:bb)'), { code: 'DIGEST_INVALID', status: 400, message: 'content does not match sha256:aa (got sha256:bb)', headers: {} }],
  ['a size mismatch', new SizeInvalidError('received 3 bytes, declared 4'), { code: 'SIZE_INVALID', status: 400, message: 'received 3 bytes, declared 4', headers: {} }],
  ['a size over a configured limit', new SizeInvalidError('the upload would exceed registry.uploadMaxSize (10 bytes)', { tooLarge: true }), { code: 'SIZE_INVALID', status: 413, message: 'the upload would exceed registry.uploadMaxSize (10 bytes)', headers: {} }],
  ['an unknown upload', new UploadUnknownError('upload x unknown'), { code: 'BLOB_UPLOAD_UNKNOWN', status: 404, message: 'upload x unknown', headers: {} }],
  ['an invalid upload', new UploadInvalidError('the chunk broke off after 5 bytes and was discarded'), { code: 'BLOB_UPLOAD_INVALID', status: 400, message: 'the chunk broke off after 5 bytes and was discarded', headers: {} }],
  ['too many uploads', new TooManyUploadsError('too many uploads in progress'), { code: 'TOOMANYREQUESTS', status: 429, message: 'too many uploads in progress', headers: { 'Retry-After': '60' } }],
  ["the store's disk full", new StorageFullError("the store's disk is full: sha256:aa could not be written"), { code: 'UNKNOWN', status: 507, message: "the store's disk is full: sha256:aa could not be written", headers: {} }],
];

for (const [what, err, want] of cases) {
  t.test(`${what} is answered as ${want.code} ${want.status}`, async (t) => {
    const oci = toOciError(err);
    t.same({ code: oci.code, status: oci.status, message: oci.message, headers: oci.headers }, want);
    t.ok(isMappedError(err), 'a refusal with its own code, not an internal failure');
  });
}

t.test('the cause of a chunk that broke off stays attached', async (t) => {
  const cause = new Error('ECONNRESET');
  t.equal(toOciError(new UploadInvalidError('broke off', { cause })).cause, cause);
});

t.test('any other error is an internal error, and not a mapped one', async (t) => {
  const err = new Error('disk full');
  const oci = toOciError(err);
  t.same({ code: oci.code, status: oci.status, message: oci.message }, { code: 'UNKNOWN', status: 500, message: 'internal error' });
  t.notOk(isMappedError(err));
});

t.test("a record write that met a full disk (a raw ENOSPC) is answered 507, saying the disk is full", async (t) => {
  const err = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  const oci = toOciError(err);
  t.same({ code: oci.code, status: oci.status, message: oci.message }, { code: 'UNKNOWN', status: 507, message: "the store's disk is full" });
});
