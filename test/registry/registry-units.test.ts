// Pure pieces of the push side: hosted-name patterns, chunk ranges, pushed-manifest validation,
// referrer descriptors, and the action each route and method performs (the auth seam).
import t from 'tap';
import { HostedNames } from '../../lib/registry/hosted.js';
import { parseChunkRange, validateManifest } from '../../lib/registry/registry.js';
import { referrerDescriptor, referrersIndex, referrersTag } from '../../lib/oci/referrers.js';
import { actionFor, allowedMethods, mountSource } from '../../lib/server/actions.js';
import { OciError } from '../../lib/oci/errors.js';
import { parseConfig } from '../../lib/config/config.js';

const D = `sha256:${'a'.repeat(64)}`;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof OciError) return err.code;
    throw err;
  }
  return undefined;
}

// ---------------------------------------------------------------- hosted names

t.test('lab/* matches one component below lab and nothing deeper or shallower', async (t) => {
  const h = new HostedNames(['lab/*']);
  t.ok(h.has('lab/app'));
  t.notOk(h.has('lab/a/b'));
  t.notOk(h.has('lab'));
  t.notOk(h.has('laboratory/app'));
});

t.test('team/** matches any depth below team, but not team itself', async (t) => {
  const h = new HostedNames(['team/**']);
  t.ok(h.has('team/a'));
  t.ok(h.has('team/a/b/c'));
  t.notOk(h.has('team'));
  t.notOk(h.has('teams/a'));
});

t.test('a literal pattern matches that name only; dots are literal', async (t) => {
  const h = new HostedNames(['my.app']);
  t.ok(h.has('my.app'));
  t.notOk(h.has('myxapp'));
});

t.test('no patterns: nothing is hosted', async (t) => {
  t.notOk(new HostedNames([]).has('lab/app'));
});

t.test('registry.hosted refuses patterns that are not names with * and **', async (t) => {
  for (const bad of ['Lab/*', 'lab/', '../x', 'lab/*x', 'a//b']) {
    t.throws(() => parseConfig({ registry: { hosted: [bad] } }), /registry\.hosted\.0/, bad);
  }
  t.same(parseConfig({ registry: { hosted: ['lab/*', 'team/**', '*'] } }).registry.hosted, ['lab/*', 'team/**', '*']);
  // ** is a pattern, refused only beside upstreams (it would shadow their namespaces): see auth-config.test.ts.
  t.same(parseConfig({ upstreams: {}, defaultUpstream: null, registry: { hosted: ['**'] } }).registry.hosted, ['**']);
});

t.test('registry.uploadMaxAge below a minute is refused with its key path', async (t) => {
  t.throws(() => parseConfig({ registry: { uploadMaxAge: '10s' } }), /registry\.uploadMaxAge: at least 1m/);
  t.equal(parseConfig({ registry: { uploadMaxAge: '2h' } }).registry.uploadMaxAge, 7_200_000);
});

t.test('registry defaults: nothing hosted, no deletes, uploads swept after 24 h, bounded uploads, at most 64 upstream checks per push', async (t) => {
  t.same(parseConfig({}).registry, {
    hosted: [],
    delete: false,
    uploadMaxAge: 86_400_000,
    uploadMaxSize: 16 * 1024 ** 3,
    maxUploadSessions: 1000,
    maxUploadSessionsPerUser: 100,
    uploadQuotaPerUser: 64 * 1024 ** 3,
    pushUpstreamChecks: 64,
  });
});

// ---------------------------------------------------------------- chunk ranges

t.test('a Content-Range <start>-<end> parses inclusive', async (t) => {
  t.same(parseChunkRange('0-99'), { start: 0, end: 99 });
  t.same(parseChunkRange('100-100'), { start: 100, end: 100 });
  t.same(parseChunkRange('bytes 5-9'), { start: 5, end: 9 }, 'the bytes unit is tolerated');
});

for (const bad of ['', 'abc', '9-5', '-5', '5-', '0-9/10', 'bytes=a-b', '1e3-2e3']) {
  t.test(`Content-Range ${JSON.stringify(bad)} is BLOB_UPLOAD_INVALID`, async (t) => {
    t.equal(code(() => parseChunkRange(bad)), 'BLOB_UPLOAD_INVALID');
  });
}

// ---------------------------------------------------------------- manifest validation

const ociManifest = (extra: Record<string, unknown> = {}): Buffer =>
  Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: D, size: 2 }, layers: [], ...extra }));

t.test('an OCI manifest with a matching Content-Type is valid (parameters ignored)', async (t) => {
  t.equal(validateManifest(ociManifest(), OCI_MANIFEST).mediaType, OCI_MANIFEST);
  t.equal(validateManifest(ociManifest(), `${OCI_MANIFEST}; charset=utf-8`).mediaType, OCI_MANIFEST);
});

t.test('a Content-Type other than the manifest mediaType is MANIFEST_INVALID', async (t) => {
  t.equal(code(() => validateManifest(ociManifest(), DOCKER_MANIFEST)), 'MANIFEST_INVALID');
  t.equal(code(() => validateManifest(ociManifest(), undefined)), 'MANIFEST_INVALID');
});

t.test('without a mediaType field, the Content-Type must fit the shape', async (t) => {
  const noType = Buffer.from(JSON.stringify({ schemaVersion: 2, config: { mediaType: 'x', digest: D, size: 1 }, layers: [] }));
  t.equal(validateManifest(noType, OCI_MANIFEST).mediaType, OCI_MANIFEST);
  t.equal(code(() => validateManifest(noType, OCI_INDEX)), 'MANIFEST_INVALID', 'an image manifest sent as an index');
});

t.test('an image manifest without config is MANIFEST_INVALID', async (t) => {
  const b = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [] }));
  t.equal(code(() => validateManifest(b, OCI_MANIFEST)), 'MANIFEST_INVALID');
});

t.test('unknown media types and schema 1 are MANIFEST_INVALID', async (t) => {
  t.equal(code(() => validateManifest(ociManifest({ mediaType: 'application/x-thing' }), 'application/x-thing')), 'MANIFEST_INVALID');
  const s1 = Buffer.from(JSON.stringify({ schemaVersion: 1, fsLayers: [] }));
  t.equal(code(() => validateManifest(s1, 'application/vnd.docker.distribution.manifest.v1+json')), 'MANIFEST_INVALID');
});

t.test('a descriptor with a bad digest is MANIFEST_INVALID', async (t) => {
  t.equal(code(() => validateManifest(ociManifest({ layers: [{ mediaType: 'x', digest: 'sha256:nope', size: 1 }] }), OCI_MANIFEST)), 'MANIFEST_INVALID');
});

// ---------------------------------------------------------------- referrers

t.test("a referrer's artifactType is its own, else its config's media type", async (t) => {
  const own = ociManifest({ artifactType: 'application/x-sig', annotations: { a: '1' } });
  t.same(referrerDescriptor(own, D, OCI_MANIFEST), { mediaType: OCI_MANIFEST, digest: D, size: own.length, artifactType: 'application/x-sig', annotations: { a: '1' } });
  t.equal(referrerDescriptor(ociManifest(), D, OCI_MANIFEST).artifactType, 'application/vnd.oci.image.config.v1+json');
});

t.test('an index referrer without artifactType has none', async (t) => {
  const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }));
  t.equal(referrerDescriptor(idx, D, OCI_INDEX).artifactType, undefined);
});

t.test('the referrers index filters by artifactType, drops duplicates and sorts by digest', async (t) => {
  const a = { mediaType: OCI_MANIFEST, digest: `sha256:${'b'.repeat(64)}`, size: 1, artifactType: 'x' };
  const b = { mediaType: OCI_MANIFEST, digest: `sha256:${'a'.repeat(64)}`, size: 1, artifactType: 'y' };
  t.same(referrersIndex([a, b, a], null).manifests, [b, a]);
  t.same(referrersIndex([a, b], 'x').manifests, [a]);
  t.same(referrersIndex([], null), { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
});

t.test('the referrers tag schema names sha256:<hex> as sha256-<hex>', async (t) => {
  t.equal(referrersTag({ algorithm: 'sha256', hex: 'a'.repeat(64) }), `sha256-${'a'.repeat(64)}`);
});

// ---------------------------------------------------------------- actions (the auth seam)

t.test('pulls: GET and HEAD of manifests, blobs, tags and referrers; GET of the catalog', async (t) => {
  for (const r of [
    { kind: 'manifest', name: 'a', reference: 'v1' },
    { kind: 'blob', name: 'a', digest: D },
    { kind: 'tags', name: 'a' },
    { kind: 'referrers', name: 'a', digest: D },
    { kind: 'catalog' },
  ] as const) {
    t.equal(actionFor(r, 'GET'), 'pull', `GET ${r.kind}`);
    t.equal(actionFor(r, 'HEAD'), 'pull', `HEAD ${r.kind}`);
  }
});

t.test('pushes: manifest PUT and every upload method; deletes: manifest and blob DELETE', async (t) => {
  t.equal(actionFor({ kind: 'manifest', name: 'a', reference: 'v1' }, 'PUT'), 'push');
  t.equal(actionFor({ kind: 'upload', name: 'a' }, 'POST'), 'push');
  for (const m of ['GET', 'PATCH', 'PUT', 'DELETE']) t.equal(actionFor({ kind: 'upload', name: 'a', session: 'u' }, m), 'push', `${m} upload`);
  t.equal(actionFor({ kind: 'manifest', name: 'a', reference: 'v1' }, 'DELETE'), 'delete');
  t.equal(actionFor({ kind: 'blob', name: 'a', digest: D }, 'DELETE'), 'delete');
});

t.test('methods a route does not support have no action (405), and Allow lists the others', async (t) => {
  t.equal(actionFor({ kind: 'manifest', name: 'a', reference: 'v1' }, 'POST'), null);
  t.equal(actionFor({ kind: 'upload', name: 'a' }, 'PATCH'), null, 'PATCH needs a session');
  t.equal(actionFor({ kind: 'upload', name: 'a', session: 'u' }, 'POST'), null, 'POST opens one');
  t.equal(actionFor({ kind: 'blob', name: 'a', digest: D }, 'PUT'), null);
  t.equal(allowedMethods({ kind: 'manifest', name: 'a', reference: 'v1' }), 'GET, HEAD, PUT, DELETE');
  t.equal(allowedMethods({ kind: 'manifest', name: 'a', reference: 'v1' }, ['delete']), 'GET, HEAD, PUT');
});

t.test('the probes and the base endpoint take no action on a repository', async (t) => {
  t.equal(actionFor({ kind: 'base' }, 'GET'), 'none');
  t.equal(actionFor({ kind: 'healthz' }, 'HEAD'), 'none');
});

t.test('a mount also reads its from repository', async (t) => {
  const q = new URLSearchParams({ mount: D, from: 'lab/src' });
  t.equal(mountSource({ kind: 'upload', name: 'lab/dst' }, 'POST', q), 'lab/src');
  t.equal(mountSource({ kind: 'upload', name: 'lab/dst' }, 'POST', new URLSearchParams()), null);
});
