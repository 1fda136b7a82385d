// Bad pushes: each is refused with the distribution spec's error (status and code), and changes
// nothing on disk — no new file under blobs/, pins/ or repositories/, and an upload session keeps
// exactly the bytes it had (or is gone, when the spec ends it).
import t, { type Test } from 'tap';
import { buildDockerImage, buildOciImage, MediaType, sha256 } from '../fixtures/images.js';
import { ociErrors, type RawResponse } from '../fixtures/http-client.js';
import { call, openUpload, putManifest, pushBlobWhole, storeState, streamedPatch, withParam, type StoreState } from '../fixtures/oci-push.js';
import { startStevedore } from '../fixtures/stevedore.js';

t.test('bad pushes are refused and store nothing', async (t) => {
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: { registry: { hosted: ['lab/**'] }, cache: { manifestMaxSize: '16KiB' } },
  });
  const img = buildOciImage('push-bad/seed', { layers: 1 });
  for (const b of [img.config, ...img.layers]) await pushBlobWhole(sd.url, 'lab/app', b.data, b.digest);
  const good = await putManifest(sd.url, 'lab/app', 'v1', img.manifest.data, img.manifest.mediaType);
  t.equal(good.status, 201, 'control: a good push is accepted');

  const data = Buffer.from('the bytes of a blob pushed in chunks '.repeat(200));
  const digest = sha256(data);

  /** Asserts an OCI error and that the store is exactly as before (apart from the given uploads). */
  async function refused(t: Test, r: RawResponse, status: number, code: string, before: StoreState, uploads = before.uploads): Promise<void> {
    t.equal(r.status, status, `status (body: ${r.body.toString().slice(0, 300)})`);
    t.equal(ociErrors(r)?.[0]?.code, code, 'error code');
    const after = await storeState(sd.storagePath);
    t.same(after.blobs, before.blobs, 'no new blob');
    t.same(after.pins, before.pins, 'no new pin');
    t.same(after.repositories, before.repositories, 'no new link or tag');
    t.same(after.uploads, uploads, 'uploads/ as expected');
  }

  await t.test('a closing PUT with the wrong digest is 400 DIGEST_INVALID, stores nothing and ends the session', async (t) => {
    const s = await openUpload(sd.url, 'lab/app');
    const before = await storeState(sd.storagePath);
    const r = await call(sd.url, 'PUT', withParam(s.location, 'digest', sha256('something else')), { body: data });
    await refused(t, r, 400, 'DIGEST_INVALID', before, []);
    t.equal((await call(sd.url, 'GET', s.location)).status, 404, 'the session is gone');
  });

  await t.test('a monolithic POST with the wrong digest is 400 DIGEST_INVALID and stores nothing', async (t) => {
    const before = await storeState(sd.storagePath);
    const r = await pushBlobWhole(sd.url, 'lab/app', data, sha256('not these bytes'));
    await refused(t, r, 400, 'DIGEST_INVALID', before);
  });

  await t.test('a closing PUT without ?digest= is 400 DIGEST_INVALID and the session keeps its bytes', async (t) => {
    const s = await openUpload(sd.url, 'lab/app');
    await call(sd.url, 'PATCH', s.location, { body: data.subarray(0, 10), headers: { 'content-range': '0-9' } });
    const before = await storeState(sd.storagePath);
    const r = await call(sd.url, 'PUT', s.location, { headers: { 'content-length': '0' } });
    await refused(t, r, 400, 'DIGEST_INVALID', before);
    t.equal((await call(sd.url, 'GET', s.location)).headers.range, '0-9');
    await call(sd.url, 'DELETE', s.location);
  });

  await t.test('an out-of-order chunk is 416 with the Range and Location to resume from; the session is unchanged', async (t) => {
    const s = await openUpload(sd.url, 'lab/app');
    await call(sd.url, 'PATCH', s.location, { body: data.subarray(0, 100), headers: { 'content-range': '0-99' } });
    const before = await storeState(sd.storagePath);
    const r = await call(sd.url, 'PATCH', s.location, { body: data.subarray(200, 300), headers: { 'content-range': '200-299' } });
    await refused(t, r, 416, 'RANGE_INVALID', before);
    t.equal(r.headers.range, '0-99', 'Range: what the registry has');
    t.equal(r.headers.location, s.location, 'Location: where to continue');
    const overlap = await call(sd.url, 'PATCH', s.location, { body: data.subarray(50, 150), headers: { 'content-range': '50-149' } });
    t.equal(overlap.status, 416, 'an overlapping chunk too');
    const status = await call(sd.url, 'GET', s.location);
    t.equal(status.headers.range, '0-99', 'end-13 still reports 0-99');
    // The upload continues correctly from there.
    await call(sd.url, 'PATCH', s.location, { body: data.subarray(100), headers: { 'content-range': `100-${data.length - 1}` } });
    const put = await call(sd.url, 'PUT', withParam(s.location, 'digest', digest), { headers: { 'content-length': '0' } });
    t.equal(put.status, 201, 'and completes with the right digest');
  });

  for (const range of ['abc', '5-2', '0-', '-5', 'bytes=0-9/10']) {
    await t.test(`a malformed Content-Range ${JSON.stringify(range)} is 400 BLOB_UPLOAD_INVALID; the session is unchanged`, async (t) => {
      const s = await openUpload(sd.url, 'lab/app');
      const before = await storeState(sd.storagePath);
      const r = await call(sd.url, 'PATCH', s.location, { body: data.subarray(0, 10), headers: { 'content-range': range } });
      await refused(t, r, 400, 'BLOB_UPLOAD_INVALID', before);
      t.equal((await call(sd.url, 'GET', s.location)).headers.range, '0-0', 'still empty');
      await call(sd.url, 'DELETE', s.location);
    });
  }

  await t.test('a Content-Range whose length differs from Content-Length is 400 SIZE_INVALID', async (t) => {
    const s = await openUpload(sd.url, 'lab/app');
    const before = await storeState(sd.storagePath);
    const r = await call(sd.url, 'PATCH', s.location, { body: data.subarray(0, 10), headers: { 'content-range': '0-19' } });
    await refused(t, r, 400, 'SIZE_INVALID', before);
    t.equal((await call(sd.url, 'GET', s.location)).headers.range, '0-0');
    await call(sd.url, 'DELETE', s.location);
  });

  await t.test('a chunk cut off mid-body by a dying client leaves the session as it was', async (t) => {
    const s = await openUpload(sd.url, 'lab/app');
    await call(sd.url, 'PATCH', s.location, { body: data.subarray(0, 100), headers: { 'content-range': '0-99' } });
    const r = await streamedPatch(sd.url, s.location, [data.subarray(100, 1100), data.subarray(1100, 3000)], 1500);
    t.equal(r, 'broken');
    await new Promise((resolve) => setTimeout(resolve, 300));
    t.equal((await call(sd.url, 'GET', s.location)).headers.range, '0-99', 'the partial chunk left no trace');
    await call(sd.url, 'DELETE', s.location);
  });

  await t.test('a manifest PUT to a tag that is not a valid tag is 400 MANIFEST_INVALID and stores nothing', async (t) => {
    const before = await storeState(sd.storagePath);
    const r = await putManifest(sd.url, 'lab/app', '-bad', img.manifest.data, MediaType.ociManifest);
    await refused(t, r, 400, 'MANIFEST_INVALID', before);
  });

  await t.test('a manifest above cache.manifestMaxSize is 413 MANIFEST_INVALID and stores nothing', async (t) => {
    const before = await storeState(sd.storagePath);
    const big = Buffer.from(JSON.stringify({ ...JSON.parse(img.manifest.data.toString()), annotations: { pad: 'x'.repeat(20_000) } }));
    const r = await putManifest(sd.url, 'lab/app', 'big', big, MediaType.ociManifest);
    await refused(t, r, 413, 'MANIFEST_INVALID', before);
  });

  await t.test('a manifest referencing a blob never pushed is 404 MANIFEST_BLOB_UNKNOWN and stores nothing', async (t) => {
    const other = buildOciImage('push-bad/missing', { layers: 1 });
    await pushBlobWhole(sd.url, 'lab/app', other.config.data, other.config.digest); // config yes, layer no
    const before = await storeState(sd.storagePath);
    const r = await putManifest(sd.url, 'lab/app', 'missing', other.manifest.data, other.manifest.mediaType);
    await refused(t, r, 404, 'MANIFEST_BLOB_UNKNOWN', before);
    t.match(JSON.stringify(ociErrors(r)?.[0]?.detail), other.layers[0]!.digest, 'the detail names the missing layer');
  });

  await t.test('a manifest referencing a blob of another repository is 404 MANIFEST_BLOB_UNKNOWN', async (t) => {
    const before = await storeState(sd.storagePath);
    const r = await putManifest(sd.url, 'lab/elsewhere', 'v1', img.manifest.data, img.manifest.mediaType);
    await refused(t, r, 404, 'MANIFEST_BLOB_UNKNOWN', before);
  });

  await t.test('an index referencing a child manifest never pushed is 404 MANIFEST_BLOB_UNKNOWN', async (t) => {
    const before = await storeState(sd.storagePath);
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [{ mediaType: MediaType.ociManifest, digest: sha256('no such manifest'), size: 10 }] }));
    const r = await putManifest(sd.url, 'lab/app', 'idx', index, MediaType.ociIndex);
    await refused(t, r, 404, 'MANIFEST_BLOB_UNKNOWN', before);
  });

  await t.test('a manifest whose Content-Type differs from its mediaType is 400 MANIFEST_INVALID', async (t) => {
    const before = await storeState(sd.storagePath);
    const r = await putManifest(sd.url, 'lab/app', 'ct', img.manifest.data, MediaType.dockerManifest);
    await refused(t, r, 400, 'MANIFEST_INVALID', before);
  });

  await t.test('a body that is not JSON is 400 MANIFEST_INVALID', async (t) => {
    const before = await storeState(sd.storagePath);
    const r = await putManifest(sd.url, 'lab/app', 'junk', Buffer.from('{not json'), MediaType.ociManifest);
    await refused(t, r, 400, 'MANIFEST_INVALID', before);
  });

  await t.test('a schema 1 manifest (unknown to this registry) is 400 MANIFEST_INVALID', async (t) => {
    const before = await storeState(sd.storagePath);
    const s1 = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'lab/app', tag: 'old', fsLayers: [{ blobSum: img.layers[0]!.digest }] }));
    const r = await putManifest(sd.url, 'lab/app', 'old', s1, 'application/vnd.docker.distribution.manifest.v1+json');
    await refused(t, r, 400, 'MANIFEST_INVALID', before);
  });

  await t.test('a manifest of an unknown media type is 400 MANIFEST_INVALID', async (t) => {
    const before = await storeState(sd.storagePath);
    const odd = Buffer.from(JSON.stringify({ ...JSON.parse(img.manifest.data.toString()), mediaType: 'application/x-mine' }));
    const r = await putManifest(sd.url, 'lab/app', 'odd', odd, 'application/x-mine');
    await refused(t, r, 400, 'MANIFEST_INVALID', before);
  });

  await t.test('a manifest PUT by a digest its bytes do not have is 400 DIGEST_INVALID', async (t) => {
    const before = await storeState(sd.storagePath);
    const r = await putManifest(sd.url, 'lab/app', sha256('other'), img.manifest.data, img.manifest.mediaType);
    await refused(t, r, 400, 'DIGEST_INVALID', before);
  });

  for (const [what, p] of [
    ['a ".." component', '/v2/lab/../etc/blobs/uploads/'],
    ['a "%2e%2e" component', '/v2/lab/%2e%2e/x/blobs/uploads/'],
    ['a leading ".."', '/v2/../../lab/x/blobs/uploads/'],
    ['an uppercase name', '/v2/lab/App/blobs/uploads/'],
    ['an empty component', '/v2/lab//x/blobs/uploads/'],
  ] as const) {
    await t.test(`an upload to a name with ${what} is 400 NAME_INVALID`, async (t) => {
      const before = await storeState(sd.storagePath);
      const r = await call(sd.url, 'POST', p, { headers: { 'content-length': '0' } });
      await refused(t, r, 400, 'NAME_INVALID', before);
    });
  }

  await t.test('a manifest PUT to a name with ".." is 400 NAME_INVALID', async (t) => {
    const before = await storeState(sd.storagePath);
    const r = await putManifest(sd.url, 'lab/../../x', 'v1', img.manifest.data, img.manifest.mediaType);
    await refused(t, r, 400, 'NAME_INVALID', before);
  });

  for (const method of ['GET', 'PATCH', 'PUT', 'DELETE']) {
    await t.test(`${method} on an unknown upload UUID is 404 BLOB_UPLOAD_UNKNOWN`, async (t) => {
      const before = await storeState(sd.storagePath);
      const loc = '/v2/lab/app/blobs/uploads/6f1c2d3e-0000-4000-8000-000000000000';
      const r = await call(sd.url, method, method === 'PUT' ? withParam(loc, 'digest', digest) : loc, method === 'PATCH' || method === 'PUT' ? { body: data.subarray(0, 10) } : {});
      await refused(t, r, 404, 'BLOB_UPLOAD_UNKNOWN', before);
    });
  }

  for (const id of ['..', '..%2F..%2Fpins', 'not-a-uuid', '6F1C2D3E-0000-4000-8000-000000000000']) {
    await t.test(`a malformed upload id ${JSON.stringify(id)} is 404 BLOB_UPLOAD_UNKNOWN`, async (t) => {
      const before = await storeState(sd.storagePath);
      const r = await call(sd.url, 'PATCH', `/v2/lab/app/blobs/uploads/${id}`, { body: data.subarray(0, 10) });
      await refused(t, r, 404, 'BLOB_UPLOAD_UNKNOWN', before);
    });
  }

  await t.test("another repository's upload UUID is 404 BLOB_UPLOAD_UNKNOWN and its session is untouched", async (t) => {
    const s = await openUpload(sd.url, 'lab/app');
    await call(sd.url, 'PATCH', s.location, { body: data.subarray(0, 10), headers: { 'content-range': '0-9' } });
    const before = await storeState(sd.storagePath);
    const foreign = `/v2/lab/thief/blobs/uploads/${s.uuid}`;
    for (const method of ['GET', 'PATCH', 'PUT', 'DELETE']) {
      const r = await call(sd.url, method, method === 'PUT' ? withParam(foreign, 'digest', digest) : foreign, method === 'PATCH' ? { body: data.subarray(10, 20), headers: { 'content-range': '10-19' } } : {});
      t.equal(r.status, 404, method);
      t.equal(ociErrors(r)?.[0]?.code, 'BLOB_UPLOAD_UNKNOWN', method);
    }
    t.same(await storeState(sd.storagePath), before, 'nothing changed');
    t.equal((await call(sd.url, 'GET', s.location)).headers.range, '0-9', 'the owner still has its 10 bytes');
    await call(sd.url, 'DELETE', s.location);
  });

  await t.test('a push to a proxied name reached only through defaultUpstream is 405 UNSUPPORTED', async (t) => {
    const before = await storeState(sd.storagePath);
    const r = await call(sd.url, 'POST', '/v2/library/alpine/blobs/uploads/', { headers: { 'content-length': '0' } });
    await refused(t, r, 405, 'UNSUPPORTED', before);
    t.type(r.headers.allow, 'string');
    const m = await putManifest(sd.url, 'library/alpine', 'v1', buildDockerImage('x').manifest.data, MediaType.dockerManifest);
    await refused(t, m, 405, 'UNSUPPORTED', before);
  });
});
