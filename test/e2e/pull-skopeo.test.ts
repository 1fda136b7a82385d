// skopeo pulls through stevedore from a real CNCF distribution upstream (anonymous), by registry
// path prefix (podman/CRI-O style: no ns) and by bare name (Docker registry-mirrors style), and
// gets exactly the upstream's bytes. Needs docker-registry and skopeo (a missing tool fails).
import path from 'node:path';
import t from 'tap';
import {
  buildDockerImage,
  buildDockerManifestList,
  buildOciIndex,
  pushImage,
  type BuiltImage,
} from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { readDirImage, skopeoCopy, skopeoInspectRaw } from '../fixtures/skopeo.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';

const amd64 = { os: 'linux', architecture: 'amd64' };
const arm64 = { os: 'linux', architecture: 'arm64' };

type Tap = Pick<typeof t, 'ok' | 'equal'>;

function assertSameImage(tt: Tap, dir: string, img: BuiltImage): void {
  const got = readDirImage(dir);
  tt.ok(got.manifest.equals(img.manifest.data), 'manifest bytes are the upstream bytes');
  tt.ok(got.blobs.get(img.config.digest)?.equals(img.config.data), 'config bytes are the upstream bytes');
  for (const l of img.layers) tt.ok(got.blobs.get(l.digest)?.equals(l.data), `layer ${l.digest.slice(0, 19)} bytes are the upstream bytes`);
  tt.equal(got.blobs.size, 1 + img.layers.length, 'no other blobs');
}

t.test('skopeo through stevedore', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const docker = buildDockerImage('pull-skopeo/docker');
  const oci = buildOciIndex('pull-skopeo/oci', [amd64, arm64]);
  const list = buildDockerManifestList('pull-skopeo/list', [amd64, arm64]);
  await pushImage(reg.url, 'library/app', 'v1', docker);
  await pushImage(reg.url, 'library/multi', 'v1', oci);
  await pushImage(reg.url, 'team/list', 'v1', list);

  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, defaultUpstream: 'docker.io' });

  await t.test('a Docker v2 image by registry prefix arrives byte for byte', async (t) => {
    reg.resetCounts();
    const dir = path.join(await tmpDir(t), 'img');
    const r = await skopeoCopy(`docker://${sd.host}/docker.io/library/app:v1`, `dir:${dir}`);
    t.equal(r.code, 0, r.stderr);
    assertSameImage(t, dir, docker);
    t.equal(reg.count('GET', /\/blobs\//), 1 + docker.layers.length, 'each blob fetched from the upstream once');
  });

  await t.test('a second pull fetches no blob and no manifest from the upstream', async (t) => {
    reg.resetCounts();
    const dir = path.join(await tmpDir(t), 'img');
    const r = await skopeoCopy(`docker://${sd.host}/docker.io/library/app:v1`, `dir:${dir}`);
    t.equal(r.code, 0, r.stderr);
    assertSameImage(t, dir, docker);
    t.equal(reg.count('GET', /\/blobs\//), 0, 'no blob GET upstream');
    t.equal(reg.count('GET', /\/manifests\//), 0, 'no manifest GET upstream (tag still fresh)');
    t.equal(reg.count('*', /.*/), 0, 'no upstream request at all');
  });

  await t.test('a bare single-segment name goes to the default upstream as library/<name>', async (t) => {
    reg.resetCounts();
    const dir = path.join(await tmpDir(t), 'img');
    const r = await skopeoCopy(`docker://${sd.host}/app:v1`, `dir:${dir}`);
    t.equal(r.code, 0, r.stderr);
    assertSameImage(t, dir, docker);
    t.equal(reg.count('*', /.*/), 0, 'served from the store: same upstream repository library/app');
  });

  await t.test('inspect --raw returns the exact manifest bytes with the right headers', async (t) => {
    const raw = await skopeoInspectRaw(`docker://${sd.host}/docker.io/library/app:v1`);
    t.ok(raw.equals(docker.manifest.data));
    for (const method of ['GET', 'HEAD']) {
      const res = await fetch(`${sd.url}/v2/docker.io/library/app/manifests/v1`, { method });
      const body = Buffer.from(await res.arrayBuffer());
      t.equal(res.status, 200, method);
      t.equal(res.headers.get('content-type'), docker.manifest.mediaType, `${method} Content-Type is the manifest's media type`);
      t.equal(res.headers.get('content-length'), String(docker.manifest.size), `${method} Content-Length`);
      t.equal(res.headers.get('docker-content-digest'), docker.manifest.digest, `${method} Docker-Content-Digest`);
      t.equal(res.headers.get('etag'), `"${docker.manifest.digest}"`, `${method} ETag`);
      t.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
      t.equal(body.length, method === 'HEAD' ? 0 : docker.manifest.size);
    }
  });

  await t.test('blob GET and HEAD carry digest, length and type', async (t) => {
    const layer = docker.layers[0]!;
    for (const method of ['GET', 'HEAD']) {
      const res = await fetch(`${sd.url}/v2/docker.io/library/app/blobs/${layer.digest}`, { method });
      const body = Buffer.from(await res.arrayBuffer());
      t.equal(res.status, 200, method);
      t.equal(res.headers.get('content-length'), String(layer.size), `${method} Content-Length`);
      t.equal(res.headers.get('docker-content-digest'), layer.digest, `${method} Docker-Content-Digest`);
      t.equal(res.headers.get('content-type'), 'application/octet-stream');
      if (method === 'GET') t.ok(body.equals(layer.data), 'bytes');
    }
  });

  await t.test('an OCI index is copied whole with --all and its digest preserved', async (t) => {
    reg.resetCounts();
    const dir = path.join(await tmpDir(t), 'idx');
    const r = await skopeoCopy(`docker://${sd.host}/docker.io/library/multi:v1`, `dir:${dir}`, {
      extraArgs: ['--all', '--preserve-digests'],
    });
    t.equal(r.code, 0, r.stderr);
    const got = readDirImage(dir);
    t.ok(got.manifest.equals(oci.index.data), 'index bytes identical: stored whole, never trimmed');
    for (const img of oci.images) {
      t.ok(got.manifests.get(img.manifest.digest)?.equals(img.manifest.data), `${img.manifest.digest.slice(0, 19)} identical`);
      for (const b of [img.config, ...img.layers]) t.ok(got.blobs.get(b.digest)?.equals(b.data), 'blob identical');
    }
    const res = await fetch(`${sd.url}/v2/docker.io/library/multi/manifests/v1`);
    t.equal(res.headers.get('content-type'), 'application/vnd.oci.image.index.v1+json');
    t.ok(Buffer.from(await res.arrayBuffer()).equals(oci.index.data));
  });

  await t.test('each platform of a Docker manifest list, chosen with --override-arch', async (t) => {
    for (const [i, arch] of ['amd64', 'arm64'].entries()) {
      const dir = path.join(await tmpDir(t), arch);
      const r = await skopeoCopy(`docker://${sd.host}/docker.io/team/list:v1`, `dir:${dir}`, {
        extraArgs: ['--override-os', 'linux', '--override-arch', arch],
      });
      t.equal(r.code, 0, r.stderr);
      assertSameImage(t, dir, list.images[i]!);
    }
    const res = await fetch(`${sd.url}/v2/docker.io/team/list/manifests/v1`);
    t.equal(res.headers.get('content-type'), 'application/vnd.docker.distribution.manifest.list.v2+json');
    t.ok(Buffer.from(await res.arrayBuffer()).equals(list.index.data), 'manifest list bytes identical');
  });

  await t.test('the upstream was always asked with every manifest media type in Accept', async (t) => {
    const manifestRequests = reg.requests.filter((q) => q.path.includes('/manifests/'));
    t.ok(manifestRequests.length > 0);
    for (const q of manifestRequests) {
      const accept = String(q.headers.accept);
      for (const mt of [
        'application/vnd.oci.image.index.v1+json',
        'application/vnd.oci.image.manifest.v1+json',
        'application/vnd.docker.distribution.manifest.list.v2+json',
        'application/vnd.docker.distribution.manifest.v2+json',
      ]) {
        t.ok(accept.includes(mt), `${q.method} ${q.path} accepts ${mt}`);
      }
    }
  });

  await t.test('tags/list paginates with n and last and a Link header', async (t) => {
    await pushImage(reg.url, 'library/app', 'v2', buildDockerImage('pull-skopeo/docker-v2', { layers: 1 }));
    await pushImage(reg.url, 'library/app', 'v3', buildDockerImage('pull-skopeo/docker-v3', { layers: 1 }));
    const all = await fetch(`${sd.url}/v2/docker.io/library/app/tags/list`);
    t.same(await all.json(), { name: 'docker.io/library/app', tags: ['v1', 'v2', 'v3'] });
    const page1 = await fetch(`${sd.url}/v2/docker.io/library/app/tags/list?n=2`);
    t.same(await page1.json(), { name: 'docker.io/library/app', tags: ['v1', 'v2'] });
    t.equal(page1.headers.get('link'), '</v2/docker.io/library/app/tags/list?n=2&last=v2>; rel="next"');
    const page2 = await fetch(`${sd.url}/v2/docker.io/library/app/tags/list?n=2&last=v2`);
    t.same(await page2.json(), { name: 'docker.io/library/app', tags: ['v3'] });
    t.equal(page2.headers.get('link'), null, 'no Link on the last page');
  });

  await t.test('with the upstream stopped, pulls by digest still succeed', async (t) => {
    await reg.stop();
    const dir = path.join(await tmpDir(t), 'img');
    const r = await skopeoCopy(`docker://${sd.host}/docker.io/library/app@${docker.manifest.digest}`, `dir:${dir}`);
    t.equal(r.code, 0, r.stderr);
    assertSameImage(t, dir, docker);
    const idxDir = path.join(await tmpDir(t), 'idx');
    const r2 = await skopeoCopy(`docker://${sd.host}/docker.io/library/multi@${oci.index.digest}`, `dir:${idxDir}`, {
      extraArgs: ['--all', '--preserve-digests'],
    });
    t.equal(r2.code, 0, r2.stderr);
    t.ok(readDirImage(idxDir).manifest.equals(oci.index.data), 'index by digest, upstream gone');
  });

  await t.test('each request is logged once with method, path, status, bytes, ms, cache, upstream', async (t) => {
    const lines = sd.requestLogs();
    t.ok(lines.length > 10);
    const hit = lines.find((l) => l.cache === 'hit' && typeof l.path === 'string' && l.path.includes('/blobs/'));
    t.ok(hit, 'a blob hit was logged');
    t.match(hit, { method: 'GET', status: 200, upstream: 'docker.io', bytes: Number, ms: Number });
    t.ok(lines.some((l) => l.cache === 'miss'), 'misses logged');
  });
});
