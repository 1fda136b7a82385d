// Manifest bytes (image-spec manifest.md, image-index.md; Docker schema 2): what they reference,
// and the other readers of upstream JSON (referrers answers) and of user text (platforms).
//
//   descriptor := { mediaType, digest (sha256/sha512), size (safe integer ≥ 0), [platform], [artifactType] }
//   manifest   := { schemaVersion: 2, [mediaType], config, layers: [descriptor...], [subject] }
//   index      := { schemaVersion: 2, [mediaType], manifests: [descriptor...], [subject] }
//
// Any bytes that are not such a document are MANIFEST_INVALID; nothing else is ever thrown.
import fc from 'fast-check';
import t from 'tap';
import { parsePlatform } from '../../lib/cache/prefetch.js';
import { isDigestString } from '../../lib/oci/digest.js';
import { OciError } from '../../lib/oci/errors.js';
import { MediaType, normalizeContentType, parseManifest, type Descriptor } from '../../lib/oci/media-types.js';
import { referrerDescriptor, sanitizeDescriptors } from '../../lib/oci/referrers.js';
import { anyString, attempt, charsFrom, digestString, holds } from '../fixtures/property.js';

const descriptor: fc.Arbitrary<Descriptor> = fc.record(
  {
    mediaType: fc.constantFrom(MediaType.OciManifest, 'application/vnd.oci.image.layer.v1.tar+gzip', 'application/vnd.oci.image.config.v1+json', MediaType.DockerManifest),
    digest: digestString,
    size: fc.oneof(fc.nat({ max: 10 ** 9 }), fc.maxSafeNat()),
    platform: fc.record({ os: fc.constantFrom('linux', 'windows'), architecture: fc.constantFrom('amd64', 'arm64', 'arm') }, { requiredKeys: ['os'] }),
    artifactType: fc.constantFrom('application/vnd.example+json', 'application/spdx+json'),
  },
  { requiredKeys: ['mediaType', 'digest', 'size'] },
);

t.test('an image manifest gives back its config, then its layers, and its subject', async (t) => {
  holds(
    t,
    fc.property(
      descriptor,
      fc.array(descriptor, { maxLength: 6 }),
      fc.option(descriptor, { nil: undefined }),
      fc.constantFrom(MediaType.OciManifest, MediaType.DockerManifest, undefined),
      (config, layers, subject, mediaType) => {
        const doc = { schemaVersion: 2, ...(mediaType ? { mediaType } : {}), config, layers, ...(subject ? { subject } : {}) };
        const parsed = parseManifest(Buffer.from(JSON.stringify(doc)), mediaType);
        return (
          parsed.mediaType === (mediaType ?? MediaType.OciManifest) &&
          JSON.stringify(parsed.blobs) === JSON.stringify([config, ...layers]) &&
          parsed.manifests.length === 0 &&
          JSON.stringify(parsed.subject) === JSON.stringify(subject)
        );
      },
    ),
  );
});

t.test('an index gives back its child manifests', async (t) => {
  holds(
    t,
    fc.property(fc.array(descriptor, { maxLength: 6 }), fc.constantFrom(MediaType.OciIndex, MediaType.DockerManifestList, undefined), (manifests, mediaType) => {
      const doc = { schemaVersion: 2, ...(mediaType ? { mediaType } : {}), manifests };
      const parsed = parseManifest(Buffer.from(JSON.stringify(doc)), mediaType);
      return parsed.mediaType === (mediaType ?? MediaType.OciIndex) && JSON.stringify(parsed.manifests) === JSON.stringify(manifests) && parsed.blobs.length === 0;
    }),
  );
});

t.test('a descriptor with a bad digest or size makes the manifest MANIFEST_INVALID', async (t) => {
  const bad = fc.oneof(
    descriptor.chain((d) => fc.oneof(anyString, fc.constant(d.digest.toUpperCase()), fc.constant(null)).map((digest) => ({ ...d, digest }))),
    descriptor.chain((d) => fc.oneof(fc.constant(-1), fc.constant(1.5), fc.constant('12'), fc.constant(2 ** 53), fc.constant(null)).map((size) => ({ ...d, size }))),
  );
  holds(
    t,
    fc.property(fc.array(descriptor, { maxLength: 3 }), bad, fc.nat(), (layers, b, at) => {
      const all = [...layers];
      all.splice(at % (layers.length + 1), 0, b as unknown as Descriptor);
      const outcome = attempt(() => parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, config: layers[0] ?? b, layers: all }))));
      return !outcome.ok && outcome.code === 'MANIFEST_INVALID';
    }),
  );
});

t.test('any bytes or JSON document parse as a manifest or are refused with MANIFEST_INVALID, never another exception', async (t) => {
  const shaped = fc.record(
    {
      schemaVersion: fc.oneof(fc.constantFrom(1, 2), fc.jsonValue()),
      mediaType: fc.oneof(fc.constantFrom(MediaType.OciIndex, MediaType.OciManifest), fc.jsonValue()),
      config: fc.oneof(descriptor, fc.jsonValue()),
      layers: fc.oneof(fc.array(fc.oneof(descriptor, fc.jsonValue()), { maxLength: 3 }), fc.jsonValue()),
      manifests: fc.oneof(fc.array(fc.oneof(descriptor, fc.jsonValue()), { maxLength: 3 }), fc.jsonValue()),
      fsLayers: fc.array(fc.oneof(fc.record({ blobSum: fc.oneof(digestString, fc.jsonValue()) }), fc.jsonValue()), { maxLength: 3 }),
      subject: fc.oneof(descriptor, fc.jsonValue()),
    },
    { requiredKeys: [] },
  );
  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
    fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? '')),
    shaped.map((v) => Buffer.from(JSON.stringify(v))),
  );
  holds(
    t,
    fc.property(bytes, fc.option(anyString, { nil: undefined }), (b, declared) => {
      try {
        const parsed = parseManifest(b, declared);
        return typeof parsed.mediaType === 'string' && [...parsed.blobs, ...parsed.manifests].every((d) => typeof d.digest === 'string');
      } catch (err) {
        return err instanceof OciError && err.code === 'MANIFEST_INVALID';
      }
    }),
    { numRuns: 500 },
  );
});

t.test('a Content-Type normalizes to its lower-case media type without parameters, and normalizing twice changes nothing', async (t) => {
  const contentType = fc.oneof(
    anyString,
    fc.tuple(fc.constantFrom(MediaType.OciManifest, 'Application/JSON', ' text/plain '), fc.array(charsFrom('abc=; "', 0, 8), { maxLength: 2 })).map(([m, ps]) => [m, ...ps].join(';')),
  );
  holds(
    t,
    fc.property(contentType, (v) => {
      const n = normalizeContentType(v);
      return !n.includes(';') && n === n.trim() && n === n.toLowerCase() && normalizeContentType(n) === n;
    }),
  );
});

t.test("an upstream's referrers list keeps exactly its well-formed descriptors, whatever the JSON", async (t) => {
  // Well formed: a media type, a digest stevedore can fetch by, a whole size, string annotations.
  const wellFormed = (v: unknown): boolean => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
    const d = v as Record<string, unknown>;
    return typeof d.mediaType === 'string' && typeof d.digest === 'string' && isDigestString(d.digest) && typeof d.size === 'number' && Number.isSafeInteger(d.size) && d.size >= 0;
  };
  const item = fc.oneof(
    descriptor,
    descriptor.map((d) => ({ ...d, annotations: { 'org.example': 'x' } })),
    fc.tuple(descriptor, fc.dictionary(charsFrom('abc.', 1, 4), fc.jsonValue(), { maxKeys: 3 })).map(([d, annotations]) => ({ ...d, annotations })),
    fc.tuple(descriptor, fc.constantFrom(-1, 1.5, 2 ** 53, '3')).map(([d, size]) => ({ ...d, size })),
    fc.tuple(descriptor, fc.oneof(anyString, fc.constant('sha256:abc'))).map(([d, digest]) => ({ ...d, digest })),
    fc.jsonValue(),
  );
  holds(
    t,
    fc.property(fc.oneof(fc.jsonValue(), fc.array(item, { maxLength: 5 })), (list) => {
      const kept = sanitizeDescriptors(list);
      const want = Array.isArray(list) ? list.filter(wellFormed) : [];
      return (
        kept.length === want.length &&
        kept.every((d, i) => d.digest === (want[i] as Descriptor).digest && wellFormed(d)) &&
        kept.every((d) => d.annotations === undefined || Object.values(d.annotations).every((a) => typeof a === 'string'))
      );
    }),
    { numRuns: 300 },
  );
});

t.test('the referrer descriptor of any bytes has their size, and never throws', async (t) => {
  holds(
    t,
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)), fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? ''))), digestString, (b, d) => {
      const r = referrerDescriptor(b, d, MediaType.OciManifest);
      return r.size === b.length && r.digest === d && (r.annotations === undefined || Object.values(r.annotations).every((v) => typeof v === 'string'));
    }),
  );
});

// ---- platforms (prefetch --platform) ----------------------------------------------------------------

const word = charsFrom('abcdefghijklmnopqrstuvwxyz0123456789_-.', 1, 8);

t.test('os/arch and os/arch/variant parse back to their parts', async (t) => {
  holds(
    t,
    fc.property(word, word, fc.option(word, { nil: undefined }), (os, architecture, variant) => {
      const p = parsePlatform(`${os}/${architecture}${variant ? `/${variant}` : ''}`);
      return p.os === os && p.architecture === architecture && p.variant === variant;
    }),
  );
});

t.test('a platform without os and arch, or with more than three parts, is refused', async (t) => {
  const bad = fc.oneof(
    word,
    word.map((w) => `${w}/`),
    word.map((w) => `/${w}`),
    fc.array(word, { minLength: 4, maxLength: 6 }).map((ws) => ws.join('/')),
  );
  holds(
    t,
    fc.property(bad, (text) => {
      try {
        parsePlatform(text);
        return false;
      } catch (err) {
        return err instanceof Error && /not a platform/.test(err.message);
      }
    }),
  );
});
