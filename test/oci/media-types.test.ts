import t from 'tap';
import {
  INDEX_MEDIA_TYPES,
  MANIFEST_ACCEPT,
  MediaType,
  manifestMediaType,
  normalizeContentType,
  parseManifest,
} from '../../lib/oci/media-types.js';

const d = (c: string): string => `sha256:${c.repeat(64)}`;
const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

const CONFIG = { mediaType: 'application/vnd.docker.container.image.v1+json', digest: d('c'), size: 1469 };
const LAYER1 = { mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: d('1'), size: 3_000_000 };
const LAYER2 = { mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: d('2'), size: 42 };

const dockerManifest = {
  schemaVersion: 2,
  mediaType: MediaType.DockerManifest,
  config: CONFIG,
  layers: [LAYER1, LAYER2],
};

const OCI_CONFIG = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d('c'), size: 1469 };
const OCI_LAYER = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('1'), size: 100 };
const ociManifestNoType = { schemaVersion: 2, config: OCI_CONFIG, layers: [OCI_LAYER] };

const amd64 = { os: 'linux', architecture: 'amd64' };
const arm64 = { os: 'linux', architecture: 'arm64', variant: 'v8' };

const dockerList = {
  schemaVersion: 2,
  mediaType: MediaType.DockerManifestList,
  manifests: [
    { mediaType: MediaType.DockerManifest, digest: d('a'), size: 528, platform: amd64 },
    { mediaType: MediaType.DockerManifest, digest: d('b'), size: 528, platform: arm64 },
  ],
};

const ociIndexNoType = {
  schemaVersion: 2,
  manifests: [
    { mediaType: MediaType.OciManifest, digest: d('a'), size: 480, platform: amd64 },
    { mediaType: MediaType.OciManifest, digest: d('b'), size: 480, platform: arm64 },
  ],
};

const schema1 = {
  schemaVersion: 1,
  name: 'library/hello',
  tag: 'latest',
  architecture: 'amd64',
  fsLayers: [{ blobSum: d('1') }, { blobSum: d('2') }],
  history: [{ v1Compatibility: '{}' }, { v1Compatibility: '{}' }],
};

t.test('a Docker v2 manifest lists its config then its layers in order, and no child manifests', async (t) => {
  t.strictSame(parseManifest(json(dockerManifest)), {
    mediaType: MediaType.DockerManifest,
    manifests: [],
    blobs: [CONFIG, LAYER1, LAYER2],
  });
});

t.test('a Docker manifest list lists its child manifests with their platforms, and no blobs', async (t) => {
  t.strictSame(parseManifest(json(dockerList)), {
    mediaType: MediaType.DockerManifestList,
    manifests: dockerList.manifests,
    blobs: [],
  });
});

t.test('an OCI manifest with its mediaType field is an OCI manifest', async (t) => {
  const p = parseManifest(json({ ...ociManifestNoType, mediaType: MediaType.OciManifest }));
  t.equal(p.mediaType, MediaType.OciManifest);
  t.strictSame(p.blobs, [OCI_CONFIG, OCI_LAYER]);
});

t.test('an OCI manifest without a mediaType field and without a Content-Type is an OCI manifest', async (t) => {
  const p = parseManifest(json(ociManifestNoType));
  t.equal(p.mediaType, MediaType.OciManifest);
  t.strictSame(p.blobs, [OCI_CONFIG, OCI_LAYER]);
  t.strictSame(p.manifests, []);
});

t.test('an OCI manifest without a mediaType field served as an OCI manifest with parameters is an OCI manifest', async (t) => {
  const p = parseManifest(json(ociManifestNoType), 'application/vnd.oci.image.manifest.v1+json; charset=utf-8');
  t.equal(p.mediaType, MediaType.OciManifest);
});

t.test('a generic Content-Type (application/json, octet-stream) leaves the choice to the shape', async (t) => {
  t.equal(parseManifest(json(ociManifestNoType), 'application/json').mediaType, MediaType.OciManifest);
  t.equal(parseManifest(json(ociManifestNoType), 'application/octet-stream').mediaType, MediaType.OciManifest);
  t.equal(parseManifest(json(ociIndexNoType), 'Application/JSON; charset=utf-8').mediaType, MediaType.OciIndex);
});

t.test('an OCI index without a mediaType field is recognised by its manifests array', async (t) => {
  t.strictSame(parseManifest(json(ociIndexNoType)), {
    mediaType: MediaType.OciIndex,
    manifests: ociIndexNoType.manifests,
    blobs: [],
  });
});

t.test('an OCI index without a mediaType field served as an OCI index is an OCI index', async (t) => {
  const p = parseManifest(json(ociIndexNoType), MediaType.OciIndex);
  t.equal(p.mediaType, MediaType.OciIndex);
  t.equal(p.manifests.length, 2);
});

t.test("the manifest's own mediaType field wins over the Content-Type it came with", async (t) => {
  t.equal(parseManifest(json(dockerManifest), MediaType.OciManifest).mediaType, MediaType.DockerManifest);
  t.equal(parseManifest(json(dockerList), 'text/plain').mediaType, MediaType.DockerManifestList);
});

t.test('an empty mediaType field counts as absent', async (t) => {
  t.equal(parseManifest(json({ ...ociIndexNoType, mediaType: '' })).mediaType, MediaType.OciIndex);
});

// The doc comment of parseManifest: "the manifest's own mediaType field wins when present, else the
// shape decides". Stored bytes are later re-parsed without a Content-Type (readStoredManifest), so the
// result must not depend on the Content-Type an upstream sent.
t.test('an image manifest without a mediaType field keeps its layers whatever Content-Type it came with', async (t) => {
  const p = parseManifest(json(ociManifestNoType), MediaType.OciIndex);
  t.strictSame(p.blobs, [OCI_CONFIG, OCI_LAYER], 'layers are not lost');
  t.equal(p.mediaType, parseManifest(json(ociManifestNoType)).mediaType, 'same media type as when re-read from the store');
});

t.test('a descriptor without a mediaType is typed application/octet-stream', async (t) => {
  const p = parseManifest(json({ schemaVersion: 2, config: { digest: d('c'), size: 2 }, layers: [] }));
  t.strictSame(p.blobs, [{ mediaType: MediaType.OctetStream, digest: d('c'), size: 2 }]);
});

t.test('a descriptor of size 0 is accepted', async (t) => {
  const p = parseManifest(json({ schemaVersion: 2, config: { ...OCI_CONFIG, size: 0 }, layers: [] }));
  t.equal(p.blobs[0]!.size, 0);
});

t.test('a sha512 descriptor digest is accepted', async (t) => {
  const digest = `sha512:${'e'.repeat(128)}`;
  const p = parseManifest(json({ schemaVersion: 2, config: { ...OCI_CONFIG, digest }, layers: [] }));
  t.equal(p.blobs[0]!.digest, digest);
});

t.test('unknown descriptor fields are dropped; platform and artifactType are kept', async (t) => {
  const entry = { ...OCI_LAYER, annotations: { a: 'b' }, urls: ['http://x'], platform: amd64, artifactType: 'application/x' };
  const p = parseManifest(json({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [entry] }));
  t.strictSame(p.manifests, [{ ...OCI_LAYER, platform: amd64, artifactType: 'application/x' }]);
});

t.test('a manifest without layers has only its config', async (t) => {
  const p = parseManifest(json({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: OCI_CONFIG }));
  t.strictSame(p.blobs, [OCI_CONFIG]);
});

t.test('an index with no manifests array lists nothing', async (t) => {
  const p = parseManifest(json({ schemaVersion: 2, mediaType: MediaType.OciIndex }));
  t.strictSame(p, { mediaType: MediaType.OciIndex, manifests: [], blobs: [] });
});

t.test('an image manifest with a subject reports the subject apart from its blobs', async (t) => {
  const subject = { mediaType: MediaType.OciManifest, digest: d('5'), size: 512 };
  const empty = { mediaType: 'application/vnd.oci.empty.v1+json', digest: d('4'), size: 2 };
  const p = parseManifest(
    json({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      artifactType: 'application/vnd.example.sbom',
      config: empty,
      layers: [OCI_LAYER],
      subject,
    }),
  );
  t.strictSame(p, { mediaType: MediaType.OciManifest, manifests: [], blobs: [empty, OCI_LAYER], subject });
});

t.test('an index with a subject reports it', async (t) => {
  const subject = { mediaType: MediaType.OciIndex, digest: d('5'), size: 99 };
  const p = parseManifest(json({ ...ociIndexNoType, mediaType: MediaType.OciIndex, subject }));
  t.strictSame(p.subject, subject);
  t.equal(p.manifests.length, 2);
});

t.test('an OCI artifact manifest lists its blobs array', async (t) => {
  const artifact = 'application/vnd.oci.artifact.manifest.v1+json';
  const blob = { mediaType: 'application/vnd.example.sig', digest: d('6'), size: 10 };
  const subject = { mediaType: MediaType.OciManifest, digest: d('5'), size: 512 };
  const p = parseManifest(json({ schemaVersion: 2, mediaType: artifact, artifactType: 'application/x', blobs: [blob], subject }));
  t.strictSame(p, { mediaType: artifact, manifests: [], blobs: [blob], subject });
});

t.test('a schema 1 signed manifest lists its fsLayers as blobs of unknown size', async (t) => {
  const p = parseManifest(json({ ...schema1, signatures: [{ header: {}, signature: 'x', protected: 'y' }] }));
  t.strictSame(p, {
    mediaType: MediaType.DockerSchema1Signed,
    manifests: [],
    blobs: [
      { mediaType: MediaType.OctetStream, digest: d('1'), size: -1 },
      { mediaType: MediaType.OctetStream, digest: d('2'), size: -1 },
    ],
  });
});

t.test('a schema 1 manifest without signatures is the unsigned schema 1 type', async (t) => {
  t.equal(parseManifest(json(schema1)).mediaType, MediaType.DockerSchema1);
});

t.test('schema 1 ignores the Content-Type it came with', async (t) => {
  t.equal(parseManifest(json(schema1), MediaType.OciManifest).mediaType, MediaType.DockerSchema1);
});

t.test('schema 1 lists only fsLayers whose blobSum is a valid digest', async (t) => {
  const p = parseManifest(json({ ...schema1, fsLayers: [{ blobSum: 'sha256:../../etc' }, { blobSum: 7 }, 'x', null, { blobSum: d('3') }] }));
  t.strictSame(
    p.blobs.map((b) => b.digest),
    [d('3')],
  );
});

t.test('schema 1 without fsLayers lists no blobs', async (t) => {
  t.strictSame(parseManifest(json({ schemaVersion: 1, name: 'x' })).blobs, []);
});

t.test('JSON with a UTF-8 byte order mark is refused as not JSON', async (t) => {
  t.throws(() => parseManifest(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), json(dockerManifest)])), {
    code: 'MANIFEST_INVALID',
  });
});

const notJson: Array<[string, Buffer]> = [
  ['empty bytes', Buffer.alloc(0)],
  ['truncated JSON', json(dockerManifest).subarray(0, 40)],
  ['plain text', Buffer.from('hello')],
  ['JSON with a trailing comma', Buffer.from('{"schemaVersion":2,}')],
];
for (const [what, bytes] of notJson) {
  t.test(`${what} is refused as not valid JSON`, async (t) => {
    t.throws(() => parseManifest(bytes), { code: 'MANIFEST_INVALID', status: 400, message: 'manifest is not valid JSON' });
  });
}

const notObject: Array<[string, string]> = [
  ['an array', '[]'],
  ['a string', '"manifest"'],
  ['a number', '2'],
  ['null', 'null'],
  ['true', 'true'],
];
for (const [what, text] of notObject) {
  t.test(`a JSON document that is ${what} is refused as not an object`, async (t) => {
    t.throws(() => parseManifest(Buffer.from(text)), { code: 'MANIFEST_INVALID', message: 'manifest is not a JSON object' });
  });
}

const badSchema: Array<[string, unknown]> = [
  ['missing', undefined],
  ['3', 3],
  ['0', 0],
  ['the string "2"', '2'],
  ['2.5', 2.5],
  ['null', null],
];
for (const [what, schemaVersion] of badSchema) {
  t.test(`schemaVersion ${what} is refused`, async (t) => {
    t.throws(() => parseManifest(json({ ...dockerManifest, schemaVersion })), {
      code: 'MANIFEST_INVALID',
      message: 'unsupported manifest schemaVersion',
    });
  });
}

const badDescriptors: Array<[string, Record<string, unknown>, RegExp]> = [
  ['a config that is not an object', { config: 'sha256:x' }, /^config is not a descriptor$/],
  ['a config that is null', { config: null }, /^config is not a descriptor$/],
  ['a config that is an array', { config: [] }, /^config is not a descriptor$/],
  ['a config without a digest', { config: { mediaType: 'x', size: 1 } }, /^config has an invalid digest$/],
  ['a config with a malformed digest', { config: { ...CONFIG, digest: 'sha256:abc' } }, /^config has an invalid digest$/],
  ['a config with an uppercase digest', { config: { ...CONFIG, digest: d('C') } }, /^config has an invalid digest$/],
  ['a config with an unknown digest algorithm', { config: { ...CONFIG, digest: `md5:${'a'.repeat(32)}` } }, /invalid digest/],
  ['a config with a numeric digest', { config: { ...CONFIG, digest: 5 } }, /^config has an invalid digest$/],
  ['a config without a size', { config: { mediaType: 'x', digest: d('c') } }, /^config has an invalid size$/],
  ['a config with a negative size', { config: { ...CONFIG, size: -1 } }, /^config has an invalid size$/],
  ['a config with a fractional size', { config: { ...CONFIG, size: 1.5 } }, /^config has an invalid size$/],
  ['a config with a size as a string', { config: { ...CONFIG, size: '10' } }, /^config has an invalid size$/],
  ['a config with an unsafe integer size', { config: { ...CONFIG, size: 2 ** 53 } }, /^config has an invalid size$/],
  ['layers that are not an array', { layers: { 0: LAYER1 } }, /^layers is not an array$/],
  ['a layer with a bad digest, named by index', { layers: [LAYER1, { ...LAYER2, digest: 'sha256:zz' }] }, /^layers\[1\] has an invalid digest$/],
  ['a layer with a negative size, named by index', { layers: [{ ...LAYER1, size: -5 }] }, /^layers\[0\] has an invalid size$/],
  ['a layer that is a string', { layers: [d('1')] }, /^layers\[0\] is not a descriptor$/],
  ['a subject with a bad digest', { subject: { ...CONFIG, digest: 'nope' } }, /^subject has an invalid digest$/],
  ['blobs with a bad entry', { blobs: [{ ...LAYER1, size: -1 }] }, /^blobs\[0\] has an invalid size$/],
];
for (const [what, patch, message] of badDescriptors) {
  t.test(`an image manifest with ${what} is refused`, async (t) => {
    t.throws(() => parseManifest(json({ ...dockerManifest, ...patch })), { code: 'MANIFEST_INVALID', status: 400, message });
  });
}

t.test('an index whose manifests is not an array is refused', async (t) => {
  t.throws(() => parseManifest(json({ ...dockerList, manifests: 'x' })), { code: 'MANIFEST_INVALID', message: /^manifests is not an array$/ });
});

t.test('an index with a bad child descriptor is refused, naming it by index', async (t) => {
  const manifests = [dockerList.manifests[0], { ...dockerList.manifests[1], digest: `sha256:${'A'.repeat(64)}` }];
  t.throws(() => parseManifest(json({ ...dockerList, manifests })), { code: 'MANIFEST_INVALID', message: /^manifests\[1\] has an invalid digest$/ });
});

t.test('an index with a negative child size is refused', async (t) => {
  const manifests = [{ ...dockerList.manifests[0], size: -1 }];
  t.throws(() => parseManifest(json({ ...dockerList, manifests })), { code: 'MANIFEST_INVALID', message: /^manifests\[0\] has an invalid size$/ });
});

t.test('a non-object platform is dropped rather than kept', async (t) => {
  const manifests = [{ ...dockerList.manifests[0], platform: 'linux/amd64' }];
  t.notOk('platform' in parseManifest(json({ ...dockerList, manifests })).manifests[0]!);
});

t.test('manifestMediaType reads the media type from the bytes alone', async (t) => {
  t.equal(manifestMediaType(json(dockerManifest)), MediaType.DockerManifest);
  t.equal(manifestMediaType(json(ociIndexNoType)), MediaType.OciIndex);
  t.equal(manifestMediaType(json(ociManifestNoType)), MediaType.OciManifest);
  t.equal(manifestMediaType(json({ ...schema1, signatures: [] })), MediaType.DockerSchema1Signed);
});

t.test('manifestMediaType throws MANIFEST_INVALID on bytes that are not a manifest', async (t) => {
  t.throws(() => manifestMediaType(Buffer.from([0x1f, 0x8b, 0x08, 0x00])), { code: 'MANIFEST_INVALID' });
});

t.test('normalizeContentType drops parameters, spaces and case', async (t) => {
  t.equal(normalizeContentType('Application/VND.OCI.Image.Index.v1+JSON ; charset=UTF-8'), MediaType.OciIndex);
  t.equal(normalizeContentType('  application/json'), 'application/json');
  t.equal(normalizeContentType(''), '');
});

t.test('the Accept header sent upstream lists all six manifest types, newest first', async (t) => {
  t.equal(
    MANIFEST_ACCEPT,
    [
      'application/vnd.oci.image.index.v1+json',
      'application/vnd.oci.image.manifest.v1+json',
      'application/vnd.docker.distribution.manifest.list.v2+json',
      'application/vnd.docker.distribution.manifest.v2+json',
      'application/vnd.docker.distribution.manifest.v1+prettyjws',
      'application/vnd.docker.distribution.manifest.v1+json',
    ].join(', '),
  );
});

t.test('only the OCI index and the Docker manifest list are index media types', async (t) => {
  t.strictSame([...INDEX_MEDIA_TYPES].sort(), [MediaType.DockerManifestList, MediaType.OciIndex].sort());
});
