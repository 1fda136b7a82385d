// The warm manifest path (answered from memory, without touching the store or the upstream) against
// a real CNCF distribution: what a change to the store or a push does is seen by the very next
// request, and a warm answer is the same answer, HEAD and GET, as the one that filled the memory.
import t from 'tap';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage } from '../fixtures/images.js';
import { ociErrors, rawRequest, type RawResponse } from '../fixtures/http-client.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { assertServes } from '../fixtures/tags.js';

const HEADERS = ['content-type', 'content-length', 'docker-content-digest', 'etag', 'docker-distribution-api-version'];

function ask(sd: Stevedore, path: string, method: 'GET' | 'HEAD' | 'DELETE' = 'GET'): Promise<RawResponse> {
  return rawRequest(`${sd.url}${path}`, { method, headers: { accept: MANIFEST_ACCEPT } });
}

/** The headers a manifest answer is made of (not X-Cache, not X-Request-Id). */
function answerHeaders(r: RawResponse): Record<string, unknown> {
  return Object.fromEntries(HEADERS.map((h) => [h, r.headers[h]]));
}

t.test('the warm manifest path', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const v1 = buildDockerImage('warm-manifests/v1', { layers: 1 });
  const v2 = buildDockerImage('warm-manifests/v2', { layers: 1 });
  const seeded = buildDockerImage('warm-manifests/seeded-only', { layers: 1 });
  await pushImage(reg.url, 'team/app', 'stable', v1);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { registry: { delete: true } } });

  await t.test('a warm answer has the headers of the answer that filled the memory, HEAD and GET alike, by tag and by digest', async (t) => {
    for (const ref of ['stable', v1.manifest.digest]) {
      const path = `/v2/team/app/manifests/${ref}`;
      const first = await ask(sd, path);
      t.equal(first.status, 200, `${ref}: first answer`);
      const expected = answerHeaders(first);
      t.same(expected, {
        'content-type': v1.manifest.mediaType,
        'content-length': String(v1.manifest.size),
        'docker-content-digest': v1.manifest.digest,
        etag: `"${v1.manifest.digest}"`,
        'docker-distribution-api-version': 'registry/2.0',
      }, `${ref}: the manifest's headers`);
      for (let i = 0; i < 3; i++) {
        const get = await ask(sd, path);
        assertServes(t, get, v1, 'hit');
        t.same(answerHeaders(get), expected, `${ref}: warm GET ${i + 1}, same headers`);
        const head = await ask(sd, path, 'HEAD');
        t.equal(head.status, 200, `${ref}: warm HEAD ${i + 1}`);
        t.equal(head.body.length, 0, 'no body to HEAD');
        t.equal(head.headers['x-cache'], 'hit');
        t.same(answerHeaders(head), expected, `${ref}: warm HEAD ${i + 1}, same headers as GET`);
      }
      const cached = await rawRequest(`${sd.url}${path}`, { headers: { accept: MANIFEST_ACCEPT, 'if-none-match': `"${v1.manifest.digest}"` } });
      t.equal(cached.status, 304, `${ref}: If-None-Match with its ETag: 304`);
      t.equal(cached.body.length, 0);
    }
  });

  await t.test('a tag pushed over a warm one is served at its new digest by the very next request, however the client names the repository', async (t) => {
    await pushImage(sd.url, 'docker.io/team/app', 'seeded', v1);
    for (let i = 0; i < 2; i++) assertServes(t, await ask(sd, '/v2/team/app/manifests/seeded'), v1, 'hit');
    await pushImage(sd.url, 'docker.io/team/app', 'seeded', v2);
    assertServes(t, await ask(sd, '/v2/team/app/manifests/seeded'), v2, 'hit');
    assertServes(t, await ask(sd, '/v2/docker.io/team/app/manifests/seeded'), v2, 'hit');
    assertServes(t, await ask(sd, `/v2/team/app/manifests/seeded?ns=docker.io`), v2, 'hit');
  });

  await t.test('a manifest deleted by digest is no longer served, from memory or otherwise, by digest or by a tag that named it', async (t) => {
    await pushImage(sd.url, 'docker.io/team/app', 'only-here', seeded);
    for (let i = 0; i < 2; i++) {
      assertServes(t, await ask(sd, `/v2/team/app/manifests/${seeded.manifest.digest}`), seeded, 'hit');
      assertServes(t, await ask(sd, '/v2/team/app/manifests/only-here'), seeded, 'hit');
    }
    const del = await ask(sd, `/v2/docker.io/team/app/manifests/${seeded.manifest.digest}`, 'DELETE');
    t.equal(del.status, 202, 'deleted');
    const byDigest = await ask(sd, `/v2/team/app/manifests/${seeded.manifest.digest}`);
    t.equal(byDigest.status, 404, 'by digest: 404');
    t.equal(ociErrors(byDigest)?.[0]?.code, 'MANIFEST_UNKNOWN');
    const byTag = await ask(sd, '/v2/team/app/manifests/only-here');
    t.equal(byTag.status, 404, 'by the tag that named it: 404');
    t.equal(ociErrors(byTag)?.[0]?.code, 'MANIFEST_UNKNOWN');
  });

  await t.test('a tag deleted is no longer served from memory', async (t) => {
    await pushImage(sd.url, 'docker.io/team/app', 'doomed', seeded);
    for (let i = 0; i < 2; i++) assertServes(t, await ask(sd, '/v2/team/app/manifests/doomed'), seeded, 'hit');
    t.equal((await ask(sd, '/v2/docker.io/team/app/manifests/doomed', 'DELETE')).status, 202, 'tag deleted');
    const r = await ask(sd, '/v2/team/app/manifests/doomed');
    t.equal(r.status, 404, '404');
    t.equal(ociErrors(r)?.[0]?.code, 'MANIFEST_UNKNOWN');
  });
});
