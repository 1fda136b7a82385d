// Content discovery for proxied repositories: the referrers API passed through to the upstream
// and cached (served from the cache, marked stale, when the upstream fails), the referrers tag
// schema for an upstream without the API (CNCF distribution 2.8 answers 404), and the catalog
// listing cached repositories under names that pull.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { buildOciImage, MediaType, pushImage, sha256 } from '../fixtures/images.js';
import { rawRequest } from '../fixtures/http-client.js';
import { pushBlobWhole, putManifest } from '../fixtures/oci-push.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore } from '../fixtures/stevedore.js';

const SIG = 'application/vnd.dev.cosign.artifact.sig.v1+json';
const SBOM = 'application/spdx+json';
const subject = sha256('discovery/subject');
// Sorted by digest, as stevedore answers.
const referrers = [
  { mediaType: MediaType.ociManifest, digest: sha256('discovery/sig'), size: 500, artifactType: SIG, annotations: { 'org.example': 'sig' } },
  { mediaType: MediaType.ociManifest, digest: sha256('discovery/sbom'), size: 700, artifactType: SBOM },
].sort((a, b) => (a.digest < b.digest ? -1 : 1));
const sbomDigest = sha256('discovery/sbom');

/** An upstream that implements the referrers API for `subject` (and counts what it is asked). */
async function startReferrersUpstream(t: Test): Promise<{ url: string; paths: string[]; fail: { on: boolean } }> {
  const paths: string[] = [];
  const fail = { on: false };
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    paths.push(req.url ?? '');
    if (fail.on) {
      res.writeHead(503, { 'content-length': '0' });
      res.end();
      return;
    }
    const m = /^\/v2\/(.+)\/referrers\/([^/?]+)/.exec(req.url ?? '');
    if (m && m[2] === subject) {
      const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: referrers }));
      res.writeHead(200, { 'content-type': MediaType.ociIndex, 'content-length': String(body.length) });
      res.end(body);
      return;
    }
    if (m) {
      const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] }));
      res.writeHead(200, { 'content-type': MediaType.ociIndex, 'content-length': String(body.length) });
      res.end(body);
      return;
    }
    res.writeHead(404, { 'content-length': '0' });
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  }));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, paths, fail };
}

t.test('end-12a for a proxied repository: the upstream answer, cached', async (t) => {
  const up = await startReferrersUpstream(t);
  const sd = await startStevedore(t, { upstreams: { 'ghcr.io': { url: up.url } }, defaultUpstream: null });
  const url = `${sd.url}/v2/org/app/referrers/${subject}?ns=ghcr.io`;

  await t.test('the referrers are passed through from the upstream', async (t) => {
    const r = await rawRequest(url);
    t.equal(r.status, 200);
    t.equal(r.headers['content-type'], MediaType.ociIndex);
    t.equal(r.headers['x-cache'], 'miss');
    const doc = JSON.parse(r.body.toString()) as { manifests: unknown[] };
    t.same(doc.manifests, referrers, 'every descriptor, as the upstream described it');
    t.ok(up.paths.some((p) => p.startsWith(`/v2/org/app/referrers/${subject}`)), 'the upstream was asked');
  });

  await t.test('end-12b: artifactType filters the answer and OCI-Filters-Applied says so', async (t) => {
    const r = await rawRequest(`${url}&artifactType=${encodeURIComponent(SBOM)}`);
    t.equal(r.headers['oci-filters-applied'], 'artifactType');
    t.same((JSON.parse(r.body.toString()) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest), [sbomDigest]);
  });

  await t.test('a referrer pushed into the upstream namespace here (seeded) is listed with the upstream ones', async (t) => {
    const empty = Buffer.from('{}');
    const layer = Buffer.from('a seeded signature');
    for (const b of [empty, layer]) {
      const r = await pushBlobWhole(sd.url, 'ghcr.io/org/app', b, sha256(b));
      t.equal(r.status, 201, r.body.toString());
    }
    const sigManifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      artifactType: SIG,
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(empty), size: empty.length },
      layers: [{ mediaType: 'application/octet-stream', digest: sha256(layer), size: layer.length }],
      subject: { mediaType: MediaType.ociManifest, digest: subject, size: 123 },
    }));
    const put = await putManifest(sd.url, 'ghcr.io/org/app', sha256(sigManifest), sigManifest, MediaType.ociManifest);
    t.equal(put.status, 201, put.body.toString());
    t.equal(put.headers['oci-subject'], subject);
    const r = await rawRequest(url);
    const digests = (JSON.parse(r.body.toString()) as { manifests: Array<{ digest: string }> }).manifests.map((m) => m.digest);
    t.same(digests, [...referrers.map((m) => m.digest), sha256(sigManifest)].sort(), 'two from the upstream, one seeded');
  });

  await t.test('with the upstream failing, the cached answer is served, marked stale', async (t) => {
    up.fail.on = true;
    const r = await rawRequest(url);
    t.equal(r.status, 200);
    t.equal(r.headers['x-cache'], 'stale');
    t.match(String(r.headers.warning), /^110/);
    t.same((JSON.parse(r.body.toString()) as { manifests: Array<{ digest: string }> }).manifests.filter((m) => referrers.some((x) => x.digest === m.digest)), referrers, 'the cached upstream descriptors');
    t.equal((JSON.parse(r.body.toString()) as { manifests: unknown[] }).manifests.length, 3, 'and the seeded one');
  });

  await t.test('with the upstream failing and nothing cached, the upstream error is answered', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/org/app/referrers/${sha256('never asked')}?ns=ghcr.io`);
    t.equal(r.status, 502);
    t.match(r.body.toString(), /UPSTREAM_UNAVAILABLE/);
    up.fail.on = false;
  });
});

t.test('end-12a for an upstream without the referrers API: the tag schema, else an empty index', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildOciImage('discovery/tagschema', { layers: 1 });
  await pushImage(reg.url, 'library/app', 'v1', img);
  // A client that found no referrers API kept the list itself, under the tag sha256-<hex>.
  const sig = buildOciImage('discovery/tagschema/sig', { layers: 1 });
  await pushImage(reg.url, 'library/app', 'sig', sig);
  const list = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [{ mediaType: MediaType.ociManifest, digest: sig.manifest.digest, size: sig.manifest.size, artifactType: SIG }],
  }));
  const put = await fetch(`${reg.url}/v2/library/app/manifests/sha256-${img.manifest.digest.slice(7)}`, { method: 'PUT', headers: { 'content-type': MediaType.ociIndex }, body: list });
  t.equal(put.status, 201, 'the tag-schema index is on the upstream');
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } } });

  await t.test('the referrers API of stevedore answers from the tag schema', async (t) => {
    reg.resetCounts();
    const r = await rawRequest(`${sd.url}/v2/library/app/referrers/${img.manifest.digest}?ns=docker.io`);
    t.equal(r.status, 200);
    t.same((JSON.parse(r.body.toString()) as { manifests: Array<{ digest: string; artifactType: string }> }).manifests.map((m) => [m.digest, m.artifactType]), [[sig.manifest.digest, SIG]]);
    t.equal(reg.count('GET', `/v2/library/app/referrers/${img.manifest.digest}`), 1, 'the API was tried first (404)');
    t.equal(reg.count('GET', `/v2/library/app/manifests/sha256-${img.manifest.digest.slice(7)}`), 1, 'then the tag');
  });

  await t.test('a subject without the tag has no referrers: 200 and an empty index', async (t) => {
    const r = await rawRequest(`${sd.url}/v2/library/app/referrers/${sig.manifest.digest}?ns=docker.io`);
    t.equal(r.status, 200);
    t.same(JSON.parse(r.body.toString()), { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] });
  });

  await t.test('catalog: cached repositories are listed with their upstream prefix, a name that pulls', async (t) => {
    const m = await rawRequest(`${sd.url}/v2/library/app/manifests/v1`, { headers: { accept: MediaType.ociManifest } });
    t.equal(m.status, 200, 'pulled once through the proxy');
    const cat = await rawRequest(`${sd.url}/v2/_catalog`);
    t.same(JSON.parse(cat.body.toString()), { repositories: ['docker.io/library/app'] });
    const again = await rawRequest(`${sd.url}/v2/docker.io/library/app/manifests/v1`, { headers: { accept: MediaType.ociManifest } });
    t.equal(again.status, 200);
    t.ok(again.body.equals(img.manifest.data), 'the catalog name pulls the image');
  });
});
