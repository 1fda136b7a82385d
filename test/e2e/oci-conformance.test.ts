// The OCI distribution-spec workflows (spec "Workflow Categories": Pull, Push, Content Discovery,
// Content Management) against a hosted repository of stevedore. Each test names the endpoint ids
// of the spec's table (end-1 ... end-14) and the error codes it covers. No upstream is involved:
// docker.io points at a closed port, and hosted names (registry.hosted: lab/**) are never proxied.
import t, { type Test } from 'tap';
import { buildOciImage, buildOciIndex, makeBlob, MediaType, pushImage, sha256, type BuiltImage } from '../fixtures/images.js';
import { ociErrors, rawRequest } from '../fixtures/http-client.js';
import { call, fileBytes, openUpload, putManifest, pushBlobWhole, storeState, streamedPatch, withParam } from '../fixtures/oci-push.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';

const CLOSED = 'http://127.0.0.1:1';

async function hosted(t: Test, extra: Record<string, unknown> = {}): Promise<Stevedore> {
  return startStevedore(t, {
    upstreams: { 'docker.io': { url: CLOSED } },
    config: { registry: { hosted: ['lab/**'], delete: true }, ...extra },
  });
}

function errorCode(r: { body: Buffer }): string | undefined {
  return ociErrors(r as never)?.[0]?.code;
}

/** Pushes config and layers of an image, then its manifest by tag. */
async function pushAll(sd: Stevedore, name: string, tag: string, img: BuiltImage): Promise<void> {
  for (const b of [img.config, ...img.layers]) {
    const r = await pushBlobWhole(sd.url, name, b.data, b.digest);
    if (r.status !== 201) throw new Error(`blob push: ${r.status} ${r.body.toString()}`);
  }
  const m = await putManifest(sd.url, name, tag, img.manifest.data, img.manifest.mediaType);
  if (m.status !== 201) throw new Error(`manifest push: ${m.status} ${m.body.toString()}`);
}

// ------------------------------------------------------------------------------------ Pull

t.test('Pull', async (t) => {
  const sd = await hosted(t);
  const img = buildOciImage('conformance/pull', { layers: 2, layerSize: 200_000 });
  await pushAll(sd, 'lab/app', 'v1', img);

  await t.test('end-1: GET /v2/ answers 200 with the API version header', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/`);
    t.equal(r.status, 200);
    t.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
  });

  await t.test('end-3: GET a manifest by tag returns the pushed bytes, type and digest', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/lab/app/manifests/v1`, { headers: { accept: MediaType.ociManifest } });
    t.equal(r.status, 200);
    t.ok(r.body.equals(img.manifest.data), 'byte for byte');
    t.equal(r.headers['content-type'], MediaType.ociManifest);
    t.equal(r.headers['docker-content-digest'], img.manifest.digest);
  });

  await t.test('end-3: GET a manifest by digest returns the same bytes', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/lab/app/manifests/${img.manifest.digest}`);
    t.equal(r.status, 200);
    t.ok(r.body.equals(img.manifest.data));
  });

  await t.test('end-3: HEAD a manifest answers digest and length with no body', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/lab/app/manifests/v1`, { method: 'HEAD' });
    t.equal(r.status, 200);
    t.equal(r.headers['docker-content-digest'], img.manifest.digest);
    t.equal(r.headers['content-length'], String(img.manifest.size));
    t.equal(r.body.length, 0);
  });

  await t.test('end-2: GET a blob returns its bytes; HEAD its length', async (t) => {
    const layer = img.layers[0]!;
    const r = await rawRequest(`${sd.url}/v2/lab/app/blobs/${layer.digest}`);
    t.equal(r.status, 200);
    t.ok(r.body.equals(layer.data));
    t.equal(r.headers['docker-content-digest'], layer.digest);
    const h = await rawRequest(`${sd.url}/v2/lab/app/blobs/${layer.digest}`, { method: 'HEAD' });
    t.equal(h.status, 200);
    t.equal(h.headers['content-length'], String(layer.size));
  });

  await t.test('end-2: GET a blob with Range answers 206 with those bytes', async (t) => {
    const layer = img.layers[1]!;
    const r = await rawRequest(`${sd.url}/v2/lab/app/blobs/${layer.digest}`, { headers: { range: 'bytes=100-1099' } });
    t.equal(r.status, 206);
    t.equal(r.headers['content-range'], `bytes 100-1099/${layer.size}`);
    t.ok(r.body.equals(layer.data.subarray(100, 1100)));
  });

  await t.test('end-3: an unknown tag answers 404 MANIFEST_UNKNOWN', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/lab/app/manifests/nope`);
    t.equal(r.status, 404);
    t.equal(errorCode(r), 'MANIFEST_UNKNOWN');
  });

  await t.test('end-2: an unknown blob answers 404 BLOB_UNKNOWN (GET and HEAD)', async (t) => {
    const d = sha256('conformance/absent');
    const r = await rawRequest(`${sd.url}/v2/lab/app/blobs/${d}`);
    t.equal(r.status, 404);
    t.equal(errorCode(r), 'BLOB_UNKNOWN');
    const h = await rawRequest(`${sd.url}/v2/lab/app/blobs/${d}`, { method: 'HEAD' });
    t.equal(h.status, 404);
    t.equal(h.body.length, 0);
  });

  await t.test('end-2: a blob of another repository is BLOB_UNKNOWN here (repositories are separate)', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/lab/other/blobs/${img.layers[0]!.digest}`);
    t.equal(r.status, 404);
    t.equal(errorCode(r), 'BLOB_UNKNOWN');
  });
});

// ------------------------------------------------------------------------------------ Push

t.test('Push', async (t) => {
  const sd = await hosted(t);
  const data = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz'.repeat(1000));
  const digest = sha256(data);

  await t.test('end-4a + end-6: POST opens a session (202, Location, Docker-Upload-UUID, Range), PUT with the body closes it (201)', async (t) => {
    const s = await openUpload(sd.url, 'lab/push');
    t.match(s.location, /^\/v2\/lab\/push\/blobs\/uploads\/[0-9a-f-]{36}$/, 'Location is the session URL');
    t.equal(s.location.endsWith(s.uuid), true, 'Location ends in Docker-Upload-UUID');
    t.equal(s.res.headers.range, '0-0', 'Range of an empty session');
    const put = await call(sd.url, 'PUT', withParam(s.location, 'digest', digest), { body: data, headers: { 'content-type': 'application/octet-stream' } });
    t.equal(put.status, 201, put.body.toString());
    t.equal(put.headers.location, `/v2/lab/push/blobs/${digest}`);
    t.equal(put.headers['docker-content-digest'], digest);
    t.ok((await fileBytes(sd.storagePath, digest)).equals(data), 'the blob is in blobs/');
    const st = await storeState(sd.storagePath);
    t.ok(st.pins.includes(digest), 'and pinned');
    t.same(st.uploads, [], 'the session is gone');
    const get = await rawRequest(`${sd.url}/v2/lab/push/blobs/${digest}`);
    t.ok(get.body.equals(data), 'pullable');
  });

  await t.test('end-4b: a single POST with ?digest= uploads the blob (201, Location)', async (t) => {
    const b = Buffer.from('monolithic');
    const r = await pushBlobWhole(sd.url, 'lab/push', b, sha256(b));
    t.equal(r.status, 201, r.body.toString());
    t.equal(r.headers.location, `/v2/lab/push/blobs/${sha256(b)}`);
    t.equal(r.headers['docker-content-digest'], sha256(b));
    t.same((await storeState(sd.storagePath)).uploads, []);
  });

  await t.test('end-5 + end-13 + end-6: chunks with Content-Range in order, status in between, PUT without body', async (t) => {
    const s = await openUpload(sd.url, 'lab/chunks');
    const a = data.subarray(0, 10_000);
    const b = data.subarray(10_000);
    const p1 = await call(sd.url, 'PATCH', s.location, { body: a, headers: { 'content-range': `0-${a.length - 1}`, 'content-type': 'application/octet-stream' } });
    t.equal(p1.status, 202);
    t.equal(p1.headers.range, `0-${a.length - 1}`);
    t.equal(p1.headers.location, s.location);
    t.equal(p1.headers['docker-upload-uuid'], s.uuid);
    const status = await call(sd.url, 'GET', s.location);
    t.equal(status.status, 204, 'end-13: status is 204');
    t.equal(status.headers.range, `0-${a.length - 1}`);
    t.equal(status.headers.location, s.location);
    const p2 = await call(sd.url, 'PATCH', String(p1.headers.location), { body: b, headers: { 'content-range': `${a.length}-${data.length - 1}` } });
    t.equal(p2.status, 202);
    t.equal(p2.headers.range, `0-${data.length - 1}`);
    const put = await call(sd.url, 'PUT', withParam(String(p2.headers.location), 'digest', digest), { headers: { 'content-length': '0' } });
    t.equal(put.status, 201, put.body.toString());
    const got = await rawRequest(`${sd.url}/v2/lab/chunks/blobs/${digest}`);
    t.ok(got.body.equals(data));
  });

  await t.test('end-5: a streamed PATCH (no Content-Range, chunked body) appends everything', async (t) => {
    const s = await openUpload(sd.url, 'lab/stream');
    const r = await streamedPatch(sd.url, s.location, [data.subarray(0, 5000), data.subarray(5000, 20_000), data.subarray(20_000)]);
    t.not(r, 'broken');
    if (r === 'broken') return;
    t.equal(r.status, 202);
    t.equal(r.headers.range, `0-${data.length - 1}`);
    const put = await call(sd.url, 'PUT', withParam(s.location, 'digest', digest), { headers: { 'content-length': '0' } });
    t.equal(put.status, 201);
  });

  await t.test('end-6: the last chunk may come with the closing PUT', async (t) => {
    const s = await openUpload(sd.url, 'lab/lastput');
    await call(sd.url, 'PATCH', s.location, { body: data.subarray(0, 100), headers: { 'content-range': '0-99' } });
    const put = await call(sd.url, 'PUT', withParam(s.location, 'digest', digest), { body: data.subarray(100), headers: { 'content-range': `100-${data.length - 1}` } });
    t.equal(put.status, 201, put.body.toString());
    t.ok((await rawRequest(`${sd.url}/v2/lab/lastput/blobs/${digest}`)).body.equals(data));
  });

  await t.test('end-4b: ten clients pushing the same blob at once all get 201; one file is stored', async (t) => {
    const b = Buffer.from('pushed by ten clients at once '.repeat(10_000));
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => pushBlobWhole(sd.url, `lab/race${i % 3}`, b, sha256(b))));
    t.same(results.map((r) => r.status), Array(10).fill(201));
    const st = await storeState(sd.storagePath);
    t.equal(st.blobs.filter((d) => d === sha256(b)).length, 1);
    t.same(st.uploads, [], 'no session left behind');
    for (const i of [0, 1, 2]) t.ok((await rawRequest(`${sd.url}/v2/lab/race${i}/blobs/${sha256(b)}`)).body.equals(b), `lab/race${i} serves it`);
  });

  await t.test('end-11: a mount from a repository that has the blob links it (201) without copying bytes', async (t) => {
    const before = await storeState(sd.storagePath);
    const r = await call(sd.url, 'POST', `/v2/lab/mounted/blobs/uploads/?mount=${digest}&from=lab/push`, { headers: { 'content-length': '0' } });
    t.equal(r.status, 201, r.body.toString());
    t.equal(r.headers.location, `/v2/lab/mounted/blobs/${digest}`);
    t.equal(r.headers['docker-content-digest'], digest);
    const after = await storeState(sd.storagePath);
    t.same(after.blobs, before.blobs, 'no new file under blobs/');
    t.same(after.uploads, [], 'no session');
    t.ok((await rawRequest(`${sd.url}/v2/lab/mounted/blobs/${digest}`)).body.equals(data), 'served from the mounted repository');
  });

  await t.test('end-11: a mount of a blob the source does not have falls back to a session (202)', async (t) => {
    const r = await call(sd.url, 'POST', `/v2/lab/mounted2/blobs/uploads/?mount=${digest}&from=lab/nothing`, { headers: { 'content-length': '0' } });
    t.equal(r.status, 202);
    t.match(String(r.headers.location), /^\/v2\/lab\/mounted2\/blobs\/uploads\//);
    t.equal(r.headers.range, '0-0');
    await call(sd.url, 'DELETE', String(r.headers.location));
  });

  await t.test('end-11: a mount from a repository of another kind (proxied, nothing stored) falls back to 202', async (t) => {
    const r = await call(sd.url, 'POST', `/v2/lab/mounted3/blobs/uploads/?mount=${digest}&from=library/alpine`, { headers: { 'content-length': '0' } });
    t.equal(r.status, 202);
    await call(sd.url, 'DELETE', String(r.headers.location));
  });

  await t.test('end-7: a manifest PUT by tag answers 201 with Location and Docker-Content-Digest', async (t) => {
    const img = buildOciImage('conformance/push-manifest');
    for (const b of [img.config, ...img.layers]) await pushBlobWhole(sd.url, 'lab/m', b.data, b.digest);
    const r = await putManifest(sd.url, 'lab/m', 'v1', img.manifest.data, img.manifest.mediaType);
    t.equal(r.status, 201, r.body.toString());
    t.equal(r.headers.location, `/v2/lab/m/manifests/${img.manifest.digest}`);
    t.equal(r.headers['docker-content-digest'], img.manifest.digest);
    t.ok((await fileBytes(sd.storagePath, img.manifest.digest)).equals(img.manifest.data), 'exact bytes stored');
    t.ok((await storeState(sd.storagePath)).pins.includes(img.manifest.digest), 'pinned');
  });

  await t.test('end-7: a manifest PUT by digest answers 201; an index needs its children pushed first', async (t) => {
    const idx = buildOciIndex('conformance/index', [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
    ]);
    await pushImage(sd.url, 'lab/idx', 'multi', idx);
    const r = await rawRequest(`${sd.url}/v2/lab/idx/manifests/multi`);
    t.equal(r.status, 200);
    t.ok(r.body.equals(idx.index.data));
    t.equal(r.headers['content-type'], MediaType.ociIndex);
    const child = await rawRequest(`${sd.url}/v2/lab/idx/manifests/${idx.images[1]!.manifest.digest}`);
    t.ok(child.body.equals(idx.images[1]!.manifest.data), 'a child by digest');
  });

  await t.test('end-7: a manifest of an artifact media type (Helm chart, empty-config artifact) is stored and served like an image', async (t) => {
    const chartConfig = makeBlob(Buffer.from('{"name":"mychart","version":"1.0.0"}'), 'application/vnd.cncf.helm.config.v1+json');
    const chart = makeBlob(Buffer.from('helm chart tarball bytes'), 'application/vnd.cncf.helm.chart.content.v1.tar+gzip');
    for (const b of [chartConfig, chart]) await pushBlobWhole(sd.url, 'lab/charts/mychart', b.data, b.digest);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: chartConfig.mediaType, digest: chartConfig.digest, size: chartConfig.size },
        layers: [{ mediaType: chart.mediaType, digest: chart.digest, size: chart.size }],
      }),
    );
    const r = await putManifest(sd.url, 'lab/charts/mychart', '1.0.0', manifest, MediaType.ociManifest);
    t.equal(r.status, 201, r.body.toString());
    const got = await rawRequest(`${sd.url}/v2/lab/charts/mychart/manifests/1.0.0`);
    t.ok(got.body.equals(manifest));
  });
});

// ------------------------------------------------------------------------- Content discovery

t.test('Content discovery', async (t) => {
  const sd = await hosted(t);
  const img = buildOciImage('conformance/discovery', { layers: 1 });
  for (const tag of ['a', 'b', 'c', 'd', 'e']) await pushAll(sd, 'lab/tags', tag, img);

  await t.test('end-8a: GET tags/list lists every tag, sorted', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/lab/tags/tags/list`);
    t.equal(r.status, 200);
    t.same(JSON.parse(r.body.toString()), { name: 'lab/tags', tags: ['a', 'b', 'c', 'd', 'e'] });
  });

  await t.test('end-8b: n and last paginate, with a Link to the next page', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/lab/tags/tags/list?n=2`);
    t.same(JSON.parse(r.body.toString()).tags, ['a', 'b']);
    t.equal(r.headers.link, '</v2/lab/tags/tags/list?n=2&last=b>; rel="next"');
    const r2 = await rawRequest(`${sd.url}/v2/lab/tags/tags/list?n=2&last=b`);
    t.same(JSON.parse(r2.body.toString()).tags, ['c', 'd']);
    const r3 = await rawRequest(`${sd.url}/v2/lab/tags/tags/list?n=2&last=d`);
    t.same(JSON.parse(r3.body.toString()).tags, ['e']);
    t.equal(r3.headers.link, undefined, 'no Link on the last page');
    const r0 = await rawRequest(`${sd.url}/v2/lab/tags/tags/list?n=0`);
    t.same(JSON.parse(r0.body.toString()).tags, [], 'n=0: an empty list');
  });

  await t.test('end-8a: the tags of a repository never pushed answer 404 NAME_UNKNOWN', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/lab/never/tags/list`);
    t.equal(r.status, 404);
    t.equal(errorCode(r), 'NAME_UNKNOWN');
  });

  // Referrers: an SBOM and a signature of the image, as OCI 1.1 artifacts with `subject`.
  const empty = makeBlob(Buffer.from('{}'), 'application/vnd.oci.empty.v1+json');
  const sbomLayer = makeBlob(Buffer.from('{"spdx":"yes"}'), 'application/spdx+json');
  const sigLayer = makeBlob(Buffer.from('signature bytes'), 'application/vnd.dev.cosign.simplesigning.v1+json');
  const artifact = (artifactType: string, layer: typeof sbomLayer, annotations: Record<string, string>): Buffer =>
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        artifactType,
        config: { mediaType: empty.mediaType, digest: empty.digest, size: empty.size },
        layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.size }],
        subject: { mediaType: img.manifest.mediaType, digest: img.manifest.digest, size: img.manifest.size },
        annotations,
      }),
    );
  const sbom = artifact('application/spdx+json', sbomLayer, { 'org.example.kind': 'sbom' });
  const sig = artifact('application/vnd.dev.cosign.artifact.sig.v1+json', sigLayer, { 'org.example.kind': 'signature' });

  await t.test('end-7 with subject: pushing a referrer answers OCI-Subject', async (t) => {
    for (const b of [empty, sbomLayer, sigLayer]) await pushBlobWhole(sd.url, 'lab/tags', b.data, b.digest);
    const r1 = await putManifest(sd.url, 'lab/tags', sha256(sbom), sbom, MediaType.ociManifest);
    t.equal(r1.status, 201, r1.body.toString());
    t.equal(r1.headers['oci-subject'], img.manifest.digest);
    const r2 = await putManifest(sd.url, 'lab/tags', 'sig', sig, MediaType.ociManifest);
    t.equal(r2.status, 201);
    t.equal(r2.headers['oci-subject'], img.manifest.digest);
  });

  await t.test('end-12a: GET referrers returns an OCI index of every referrer with artifactType and annotations', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/lab/tags/referrers/${img.manifest.digest}`);
    t.equal(r.status, 200);
    t.equal(r.headers['content-type'], MediaType.ociIndex);
    const doc = JSON.parse(r.body.toString()) as { schemaVersion: number; mediaType: string; manifests: Array<Record<string, unknown>> };
    t.equal(doc.schemaVersion, 2);
    t.equal(doc.mediaType, MediaType.ociIndex);
    const byDigest = Object.fromEntries(doc.manifests.map((m) => [m.digest, m]));
    t.same(byDigest[sha256(sbom)], {
      mediaType: MediaType.ociManifest,
      digest: sha256(sbom),
      size: sbom.length,
      artifactType: 'application/spdx+json',
      annotations: { 'org.example.kind': 'sbom' },
    });
    t.equal(byDigest[sha256(sig)]?.artifactType, 'application/vnd.dev.cosign.artifact.sig.v1+json');
    t.equal(doc.manifests.length, 2);
  });

  await t.test('end-12b: artifactType filters the referrers and OCI-Filters-Applied says so', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/lab/tags/referrers/${img.manifest.digest}?artifactType=${encodeURIComponent('application/spdx+json')}`);
    t.equal(r.status, 200);
    t.equal(r.headers['oci-filters-applied'], 'artifactType');
    const doc = JSON.parse(r.body.toString()) as { manifests: Array<{ digest: string }> };
    t.same(doc.manifests.map((m) => m.digest), [sha256(sbom)]);
  });

  await t.test('end-12a: a subject nobody refers to answers 200 with an empty index', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/lab/tags/referrers/${sha256('nobody')}`);
    t.equal(r.status, 200);
    t.same(JSON.parse(r.body.toString()).manifests, []);
  });

  await t.test('end-12a: an invalid digest answers 400 DIGEST_INVALID', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/lab/tags/referrers/sha256:nothex`);
    t.equal(r.status, 400);
    t.equal(errorCode(r), 'DIGEST_INVALID');
  });

  await t.test('catalog: GET /v2/_catalog lists the hosted repositories, paginated with n, last and Link', async (t) => {
    await pushAll(sd, 'lab/zz', 'v1', img);
    await pushAll(sd, 'lab/aa/deep', 'v1', img);
    const all = await rawRequest(`${sd.url}/v2/_catalog`);
    t.equal(all.status, 200);
    t.same(JSON.parse(all.body.toString()), { repositories: ['lab/aa/deep', 'lab/tags', 'lab/zz'] });
    const p1 = await rawRequest(`${sd.url}/v2/_catalog?n=2`);
    t.same(JSON.parse(p1.body.toString()).repositories, ['lab/aa/deep', 'lab/tags']);
    t.equal(p1.headers.link, '</v2/_catalog?n=2&last=lab%2Ftags>; rel="next"');
    const p2 = await rawRequest(`${sd.url}/v2/_catalog?n=2&last=lab%2Ftags`);
    t.same(JSON.parse(p2.body.toString()).repositories, ['lab/zz']);
    t.equal(p2.headers.link, undefined);
  });

  await t.test('catalog: an invalid n answers 400 PAGINATION_NUMBER_INVALID', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/_catalog?n=-1`);
    t.equal(r.status, 400);
    t.equal(errorCode(r), 'PAGINATION_NUMBER_INVALID');
  });
});

// ------------------------------------------------------------------------ Content management

t.test('Content management', async (t) => {
  const sd = await hosted(t);
  const img = buildOciImage('conformance/management', { layers: 1 });

  await t.test('end-9: DELETE a tag answers 202; the tag is gone, the manifest stays by digest', async (t) => {
    await pushAll(sd, 'lab/del', 'keep', img);
    await pushAll(sd, 'lab/del', 'drop', img);
    const r = await call(sd.url, 'DELETE', '/v2/lab/del/manifests/drop');
    t.equal(r.status, 202);
    t.equal((await rawRequest(`${sd.url}/v2/lab/del/manifests/drop`)).status, 404);
    t.equal((await rawRequest(`${sd.url}/v2/lab/del/manifests/keep`)).status, 200);
    t.same(JSON.parse((await rawRequest(`${sd.url}/v2/lab/del/tags/list`)).body.toString()).tags, ['keep']);
  });

  await t.test('end-9: DELETE a manifest by digest answers 202; it and the tags naming it are gone', async (t) => {
    const r = await call(sd.url, 'DELETE', `/v2/lab/del/manifests/${img.manifest.digest}`);
    t.equal(r.status, 202);
    const get = await rawRequest(`${sd.url}/v2/lab/del/manifests/${img.manifest.digest}`);
    t.equal(get.status, 404);
    t.equal(errorCode(get), 'MANIFEST_UNKNOWN');
    t.equal((await rawRequest(`${sd.url}/v2/lab/del/manifests/keep`)).status, 404, 'its tag went with it');
  });

  await t.test('end-9: DELETE of an unknown manifest answers 404 MANIFEST_UNKNOWN', async (t) => {
    const r = await call(sd.url, 'DELETE', `/v2/lab/del/manifests/${sha256('nothing')}`);
    t.equal(r.status, 404);
    t.equal(errorCode(r), 'MANIFEST_UNKNOWN');
  });

  await t.test('end-10: DELETE a blob answers 202; then it is 404 BLOB_UNKNOWN in that repository', async (t) => {
    const layer = img.layers[0]!;
    const r = await call(sd.url, 'DELETE', `/v2/lab/del/blobs/${layer.digest}`);
    t.equal(r.status, 202);
    const get = await rawRequest(`${sd.url}/v2/lab/del/blobs/${layer.digest}`);
    t.equal(get.status, 404);
    t.equal(errorCode(get), 'BLOB_UNKNOWN');
    const again = await call(sd.url, 'DELETE', `/v2/lab/del/blobs/${layer.digest}`);
    t.equal(again.status, 404, 'a second DELETE: BLOB_UNKNOWN');
  });

  await t.test('end-10: content stays pinned while a repository links it; deleting the last link unpins it', async (t) => {
    const b = Buffer.from('shared by two repositories');
    const d = sha256(b);
    await pushBlobWhole(sd.url, 'lab/one', b, d);
    const mount = await call(sd.url, 'POST', `/v2/lab/two/blobs/uploads/?mount=${d}&from=lab/one`, { headers: { 'content-length': '0' } });
    t.equal(mount.status, 201);
    t.equal((await call(sd.url, 'DELETE', `/v2/lab/one/blobs/${d}`)).status, 202);
    t.ok((await storeState(sd.storagePath)).pins.includes(d), 'still pinned: lab/two links it');
    t.ok((await rawRequest(`${sd.url}/v2/lab/two/blobs/${d}`)).body.equals(b), 'and served there');
    t.equal((await call(sd.url, 'DELETE', `/v2/lab/two/blobs/${d}`)).status, 202);
    const st = await storeState(sd.storagePath);
    t.notOk(st.pins.includes(d), 'unpinned: no repository names it');
    t.ok(st.blobs.includes(d), 'the bytes stay until evicted or collected');
  });

  await t.test('end-14: DELETE an upload session answers 204; it is then BLOB_UPLOAD_UNKNOWN', async (t) => {
    const s = await openUpload(sd.url, 'lab/del');
    await call(sd.url, 'PATCH', s.location, { body: Buffer.from('abc'), headers: { 'content-range': '0-2' } });
    const r = await call(sd.url, 'DELETE', s.location);
    t.equal(r.status, 204);
    const st = await call(sd.url, 'GET', s.location);
    t.equal(st.status, 404);
    t.equal(errorCode(st), 'BLOB_UPLOAD_UNKNOWN');
    t.same((await storeState(sd.storagePath)).uploads, [], 'nothing left under uploads/');
  });
});

t.test('Content management with registry.delete: false (the default)', async (t) => {
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: CLOSED } }, config: { registry: { hosted: ['lab/**'] } } });
  const img = buildOciImage('conformance/nodelete', { layers: 1 });
  await pushAll(sd, 'lab/keep', 'v1', img);

  await t.test('end-9 / end-10: DELETE of a manifest, a tag or a blob answers 405 UNSUPPORTED and deletes nothing', async (t) => {
    const before = await storeState(sd.storagePath);
    for (const p of [`/v2/lab/keep/manifests/${img.manifest.digest}`, '/v2/lab/keep/manifests/v1', `/v2/lab/keep/blobs/${img.layers[0]!.digest}`]) {
      const r = await call(sd.url, 'DELETE', p);
      t.equal(r.status, 405, p);
      t.equal(errorCode(r), 'UNSUPPORTED');
      t.notMatch(String(r.headers.allow), /DELETE/, 'Allow does not offer DELETE');
    }
    t.same(await storeState(sd.storagePath), before, 'nothing changed on disk');
    t.equal((await rawRequest(`${sd.url}/v2/lab/keep/manifests/v1`)).status, 200);
  });
});
