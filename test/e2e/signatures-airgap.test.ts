// Signatures across the air gap (issue 29, item 4): `prefetch` carries each image's referrers and
// cosign tags and reports the verdict of the connected mirror's policy; `export` writes them, and
// the policy's trust material, into the bundle; `import` registers them in the lab and, under the
// lab's own `require` policy, verifies every image before anything is stored; the lab then serves
// skopeo with its upstream unreachable. Real CNCF distribution upstream, real stevedore processes
// (the compiled CLI), signatures made by sigstore's own signing code (test/fixtures/signing.ts):
// a keyless bundle from @sigstore/mock's Fulcio/Rekor attached as a referrer by @sigstore/oci, and a
// key-based legacy cosign `.sig`.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import t, { type Test } from 'tap';
import tar from 'tar-stream';
import { stevedoreCli } from '../fixtures/cli.js';
import { rawRequest } from '../fixtures/http-client.js';
import { buildOciImage, MediaType, pushImage } from '../fixtures/images.js';
import { storeState } from '../fixtures/oci-push.js';
import { startRegistry } from '../fixtures/registry.js';
import { attachBundle, BUNDLE_TYPE, keyPair, messageBundle, pushCosignSig, startSigstoreMock } from '../fixtures/signing.js';
import { readDirImage, skopeoCopy } from '../fixtures/skopeo.js';
import { logsSettled, spawnStevedore, type StevedoreProcess } from '../fixtures/stevedore-process.js';
import { freePort, tmpDir } from '../fixtures/util.js';

const ISSUER = 'https://issuer.example';
const reg = await startRegistry();
t.teardown(() => reg.stop());
const key = await keyPair(t, 'ec');
const stranger = await keyPair(t, 'ec');
const mock = await startSigstoreMock(t);
const work = await tmpDir(t, 'sig-airgap-');

// The connected registry: one image signed keyless (a sigstore bundle referrer), one with a legacy
// cosign .sig made with `key`, one unsigned.
const keyless = buildOciImage('sig-airgap/keyless', { layers: 1, layerSize: 512 });
await pushImage(reg.url, 'lab/keyless', 'v1', keyless);
const signer = mock.keyless('dev@example.com', ISSUER);
const bundleReferrer = await attachBundle(reg.directHost, 'lab/keyless', keyless.manifest.digest, await messageBundle(signer.signer, signer.witnesses, keyless.manifest.data));
const legacy = buildOciImage('sig-airgap/legacy', { layers: 1, layerSize: 512 });
await pushImage(reg.url, 'lab/legacy', 'v1', legacy);
await pushCosignSig(reg.url, 'lab/legacy', legacy.manifest.digest, key.privateKey);
const sigTag = `sha256-${legacy.manifest.digest.slice('sha256:'.length)}.sig`;
const unsigned = buildOciImage('sig-airgap/unsigned', { layers: 1, layerSize: 512 });
await pushImage(reg.url, 'lab/unsigned', 'v1', unsigned);

interface Manifest {
  digest: string;
  bytes: Buffer;
  config: { digest: string };
  layers: Array<{ digest: string; size: number; mediaType: string }>;
}

/** A manifest as the connected registry holds it (read past the counting proxy). */
async function upstreamManifest(repo: string, ref: string): Promise<Manifest> {
  const r = await rawRequest(`${reg.directUrl}/v2/${repo}/manifests/${ref}`, { headers: { accept: MediaType.ociManifest } });
  if (r.status !== 200) throw new Error(`${repo}:${ref}: ${r.status}`);
  const doc = JSON.parse(r.body.toString()) as Omit<Manifest, 'digest' | 'bytes'>;
  return { ...doc, digest: `sha256:${createHash('sha256').update(r.body).digest('hex')}`, bytes: r.body };
}
const referrerManifest = await upstreamManifest('lab/keyless', bundleReferrer);
const sigManifest = await upstreamManifest('lab/legacy', sigTag);

function policy(mode: 'require' | 'warn', keys = [key.publicKeyFile], keylessTrust: boolean = true): Record<string, unknown> {
  return {
    verify: {
      policies: [
        {
          repository: 'ghcr.io/lab/**',
          mode,
          keys,
          keyless: keylessTrust ? { trustedRoot: mock.trustedRootFile, identities: [{ subject: 'dev@example.com', issuer: ISSUER }] } : null,
        },
      ],
    },
  };
}

async function configFile(name: string, doc: Record<string, unknown>): Promise<string> {
  const file = path.join(work, `${name}.yaml`);
  await fsp.writeFile(file, JSON.stringify({ log: { level: 'warn' }, ...doc }));
  return file;
}

const connectedStore = path.join(work, 'connected');
const connected = await configFile('connected', { storage: { path: connectedStore }, defaultUpstream: 'ghcr.io', upstreams: { 'ghcr.io': { url: reg.url } }, ...policy('require') });
// The same store with no policy: how the unsigned image gets into a bundle at all.
const connectedOpen = await configFile('connected-open', { storage: { path: connectedStore }, defaultUpstream: 'ghcr.io', upstreams: { 'ghcr.io': { url: reg.url } } });

// The lab: its upstream a port nothing listens on.
const closedUpstream = `http://127.0.0.1:${await freePort()}`;
let labs = 0;
/** A fresh lab store and its configuration (JSON is YAML): the lab's own policy, or none. */
async function lab(verify: Record<string, unknown>): Promise<{ store: string; file: string; doc: Record<string, unknown> }> {
  const store = path.join(work, `lab-${++labs}`);
  const doc = { storage: { path: store }, defaultUpstream: 'ghcr.io', upstreams: { 'ghcr.io': { url: closedUpstream } }, ...verify };
  return { store, file: await configFile(`lab-${labs}`, doc), doc };
}

type Entries = Array<{ name: string; data: Buffer }>;

async function readTar(file: string): Promise<Entries> {
  const out: Entries = [];
  const extract = tar.extract();
  extract.on('entry', (h, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: unknown) => chunks.push(c as Buffer));
    stream.on('end', () => {
      out.push({ name: h.name, data: Buffer.concat(chunks) });
      next();
    });
  });
  await pipeline(createReadStream(file), extract);
  return out;
}

async function writeTar(file: string, entries: Entries): Promise<void> {
  const pack = tar.pack();
  const done = pipeline(pack, createWriteStream(file));
  for (const e of entries) pack.entry({ name: e.name, size: e.data.length }, e.data);
  pack.finalize();
  await done;
}

interface IndexDoc {
  manifests: Array<{ digest: string; size: number; mediaType: string; annotations: Record<string, string> }>;
}

function indexOf(entries: Entries): IndexDoc {
  return JSON.parse(entries.find((e) => e.name === 'index.json')!.data.toString()) as IndexDoc;
}

const blobEntry = (digest: string): string => `blobs/sha256/${digest.slice('sha256:'.length)}`;
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function nothingStored(t: Test, store: string): Promise<void> {
  const s = await storeState(store);
  t.same(s.blobs, [], 'no blob stored');
  t.same(s.repositories, [], 'no tag, link or referrers list stored');
  t.same(s.pins, [], 'nothing pinned');
}

t.test("prefetch fetches each image's bundle referrer and cosign .sig with their blobs, and pins them", async (t) => {
  reg.resetCounts();
  const r = await stevedoreCli(['prefetch', '--config', connected, '--pin', 'ghcr.io/lab/keyless:v1', 'ghcr.io/lab/legacy:v1']);
  t.equal(r.code, 0, r.stderr);
  const pins = (await storeState(connectedStore)).pins;
  for (const m of [referrerManifest, sigManifest]) {
    t.ok(pins.includes(m.digest), `manifest ${m.digest.slice(0, 19)} pinned`);
    for (const b of [m.config, ...m.layers]) t.ok(pins.includes(b.digest), `its blob ${b.digest.slice(0, 19)} pinned`);
  }
  t.equal(reg.count('GET', `/v2/lab/keyless/manifests/${bundleReferrer}`), 1, 'the referrer fetched once from the upstream');
  t.equal(reg.count('GET', `/v2/lab/legacy/manifests/${sigTag}`), 1, 'the .sig tag fetched once');
});

t.test("prefetch under a require policy prints each image's verdict", async (t) => {
  const r = await stevedoreCli(['prefetch', '--config', connected, 'ghcr.io/lab/keyless:v1', 'ghcr.io/lab/legacy:v1']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /verified ghcr\.io\/lab\/keyless:v1: signed by dev@example\.com \(issuer https:\/\/issuer\.example\) \(verify\.policies\[0\] \(ghcr\.io\/lab\/\*\*\)\)/);
  t.match(r.stderr, /verified ghcr\.io\/lab\/legacy:v1: signed by key .*\.pub/);
});

t.test('prefetch under require fails an unsigned image with the policy and the reason, and fetches none of its layers', async (t) => {
  reg.resetCounts();
  const r = await stevedoreCli(['prefetch', '--config', connected, 'ghcr.io/lab/unsigned:v1']);
  t.equal(r.code, 1, 'exit 1');
  t.match(r.stderr, /failed ghcr\.io\/lab\/unsigned:v1: verify\.policies\[0\] \(ghcr\.io\/lab\/\*\*\) requires a valid signature: ghcr\.io\/lab\/unsigned@sha256:[a-f0-9]{64}: no signature/);
  t.equal(reg.count('GET', new RegExp(`/blobs/${unsigned.layers[0]!.digest}$`)), 0, 'its layer was not fetched');
});

const signedBundle = path.join(work, 'signed.tar');
t.test('export writes the referrer and the cosign .sig tag as index.json entries, with their blobs', async (t) => {
  const r = await stevedoreCli(['export', '--config', connected, '-o', signedBundle, 'ghcr.io/lab/keyless:v1', 'ghcr.io/lab/legacy:v1']);
  t.equal(r.code, 0, r.stderr);
  const entries = await readTar(signedBundle);
  const refs = indexOf(entries).manifests.map((m) => [m.annotations['org.opencontainers.image.ref.name'], m.digest]);
  t.same(refs, [
    ['ghcr.io/lab/keyless:v1', keyless.manifest.digest],
    ['ghcr.io/lab/legacy:v1', legacy.manifest.digest],
    [`ghcr.io/lab/keyless@${bundleReferrer}`, bundleReferrer],
    [`ghcr.io/lab/legacy:${sigTag}`, sigManifest.digest],
  ]);
  const names = entries.map((e) => e.name);
  for (const m of [referrerManifest, sigManifest]) {
    for (const d of [m.digest, m.config.digest, ...m.layers.map((l) => l.digest)]) t.ok(names.includes(blobEntry(d)), `${d.slice(0, 19)} in the bundle`);
  }
});

t.test("export carries the covering policy's trusted root and public key under stevedore/trust/", async (t) => {
  const entries = await readTar(signedBundle);
  const file = (name: string): Buffer | undefined => entries.find((e) => e.name === `stevedore/trust/${name}`)?.data;
  t.same(file('policy-0/trusted_root.json'), await fsp.readFile(mock.trustedRootFile), 'the trusted root, bytes identical');
  t.same(file('policy-0/key-0.pem'), await fsp.readFile(key.publicKeyFile), 'the public key');
  const doc = JSON.parse(file('verify.json')?.toString() ?? '{}') as { policies?: Array<Record<string, unknown>> };
  t.same(doc.policies, [
    {
      repository: 'ghcr.io/lab/**',
      mode: 'require',
      keys: ['policy-0/key-0.pem'],
      keyless: { trustedRoot: 'policy-0/trusted_root.json', identities: [{ subject: 'dev@example.com', issuer: ISSUER }] },
    },
  ]);
});

const signedLab = await lab(policy('require'));
t.test("import verifies each image against the lab's require policy, then stores it", async (t) => {
  const r = await stevedoreCli(['import', '--config', signedLab.file, signedBundle]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /verified ghcr\.io\/lab\/keyless:v1: signed by dev@example\.com/);
  t.match(r.stderr, /verified ghcr\.io\/lab\/legacy:v1: signed by key/);
  t.match(r.stderr, /imported 2 images and 2 referrers and signature tags/);
});

let labServer: StevedoreProcess | null = null;
/** The lab serving the imported store (started once; closed with the file). */
async function labServe(): Promise<StevedoreProcess> {
  labServer ??= await spawnStevedore(t, signedLab.doc);
  return labServer;
}

t.test("skopeo copies both images from the lab, its upstream unreachable: each verified against the imported signatures", async (t) => {
  const p = await labServe();
  for (const [repo, img] of [['lab/keyless', keyless], ['lab/legacy', legacy]] as const) {
    const dir = path.join(await tmpDir(t), 'img');
    const r = await skopeoCopy(`docker://${p.host}/${repo}:v1`, `dir:${dir}`);
    t.equal(r.code, 0, r.stderr);
    t.ok(readDirImage(dir).manifest.equals(img.manifest.data), `${repo}: the same manifest bytes`);
    await logsSettled(p);
    t.ok(p.logs.some((l) => l.msg === 'signature verified' && l.repository === `ghcr.io/${repo}`), `${repo}: verified by the lab`);
  }
});

t.test('the lab answers the referrers API with the imported referrer, its upstream unreachable', async (t) => {
  const p = await labServe();
  const r = await rawRequest(`${p.url}/v2/lab/keyless/referrers/${keyless.manifest.digest}`);
  t.equal(r.status, 200, r.body.toString());
  const doc = JSON.parse(r.body.toString()) as { manifests: Array<{ digest: string; artifactType?: string }> };
  t.same(
    doc.manifests.map((m) => [m.digest, m.artifactType]),
    [[bundleReferrer, BUNDLE_TYPE]],
  );
});

t.test('an unsigned image in a bundle is refused under require, naming the policy and the reason; nothing is stored', async (t) => {
  const filled = await stevedoreCli(['prefetch', '--config', connectedOpen, 'ghcr.io/lab/unsigned:v1']);
  t.equal(filled.code, 0, filled.stderr);
  const bundle = path.join(work, 'unsigned.tar');
  const exported = await stevedoreCli(['export', '--config', connectedOpen, '-o', bundle, 'ghcr.io/lab/unsigned:v1']);
  t.equal(exported.code, 0, exported.stderr);
  const l = await lab(policy('require'));
  const r = await stevedoreCli(['import', '--config', l.file, bundle]);
  t.equal(r.code, 1, 'refused');
  t.match(r.stderr, /nothing was imported/);
  t.match(r.stderr, /ghcr\.io\/lab\/unsigned:v1: verify\.policies\[0\] \(ghcr\.io\/lab\/\*\*\) requires a valid signature: ghcr\.io\/lab\/unsigned@sha256:[a-f0-9]{64}: no signature/);
  await nothingStored(t, l.store);
});

t.test("a bundle whose referrer's bytes were changed is refused; nothing is stored", async (t) => {
  const entries = await readTar(signedBundle);
  const target = blobEntry(referrerManifest.layers[0]!.digest);
  const e = entries.find((x) => x.name === target);
  t.ok(e, 'the bundle carries the sigstore bundle');
  e!.data = Buffer.from(e!.data.toString().replace('"mediaType"', '"mediaTypf"'));
  const tampered = path.join(work, 'tampered-bytes.tar');
  await writeTar(tampered, entries);
  const l = await lab(policy('require'));
  const r = await stevedoreCli(['import', '--config', l.file, tampered]);
  t.equal(r.code, 1, 'refused');
  t.match(r.stderr, new RegExp(`${target} does not match its digest`));
  await nothingStored(t, l.store);
});

t.test("a bundle whose referrer was altered and re-hashed throughout is refused by the lab's policy; nothing is stored", async (t) => {
  // A consistent forgery: the bundle's signature changed, then every digest that names it rewritten
  // (the bundle blob, the referrer manifest, index.json), so that every entry matches its digest.
  const entries = await readTar(signedBundle);
  const layer = referrerManifest.layers[0]!;
  const bundleDoc = JSON.parse(entries.find((x) => x.name === blobEntry(layer.digest))!.data.toString()) as { messageSignature: { signature: string } };
  const sig = Buffer.from(bundleDoc.messageSignature.signature, 'base64');
  sig[sig.length - 1] = sig[sig.length - 1]! ^ 0x01;
  bundleDoc.messageSignature.signature = sig.toString('base64');
  const forgedBundle = Buffer.from(JSON.stringify(bundleDoc));
  const manifestDoc = JSON.parse(referrerManifest.bytes.toString()) as { layers: Array<{ digest: string; size: number }> };
  manifestDoc.layers[0] = { ...manifestDoc.layers[0]!, digest: sha256(forgedBundle), size: forgedBundle.length };
  const forgedManifest = Buffer.from(JSON.stringify(manifestDoc));
  const index = indexOf(entries);
  const slot = index.manifests.find((m) => m.digest === bundleReferrer)!;
  Object.assign(slot, { digest: sha256(forgedManifest), size: forgedManifest.length });
  slot.annotations['org.opencontainers.image.ref.name'] = `ghcr.io/lab/keyless@${sha256(forgedManifest)}`;
  slot.annotations['io.containerd.image.name'] = slot.annotations['org.opencontainers.image.ref.name'];
  const rewritten = entries
    .filter((x) => x.name !== blobEntry(layer.digest) && x.name !== blobEntry(bundleReferrer))
    .map((x) => (x.name === 'index.json' ? { name: x.name, data: Buffer.from(JSON.stringify(index)) } : x));
  rewritten.push({ name: blobEntry(sha256(forgedBundle)), data: forgedBundle }, { name: blobEntry(sha256(forgedManifest)), data: forgedManifest });
  const forged = path.join(work, 'forged.tar');
  await writeTar(forged, rewritten);
  const l = await lab(policy('require'));
  const r = await stevedoreCli(['import', '--config', l.file, forged]);
  t.equal(r.code, 1, 'refused');
  t.match(r.stderr, /ghcr\.io\/lab\/keyless:v1: verify\.policies\[0\] \(ghcr\.io\/lab\/\*\*\) requires a valid signature: .*keyless signature does not verify/);
  await nothingStored(t, l.store);
});

t.test('under warn, an unsigned image is imported, with a warning line and the log line of a pull', async (t) => {
  const l = await lab(policy('warn'));
  const r = await stevedoreCli(['import', '--config', l.file, path.join(work, 'unsigned.tar')]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /warning ghcr\.io\/lab\/unsigned:v1: verify\.policies\[0\] \(ghcr\.io\/lab\/\*\*\) \(mode warn\) finds no valid signature: no signature/);
  t.match(r.stderr, /"msg":"signature check failed: served \(policy mode warn\)"/);
  t.ok((await storeState(l.store)).repositories.includes('ghcr.io/lab/unsigned/_tags/v1'), 'the tag is stored');
});

t.test("import never verifies with the bundle's trust material: a lab trusting another key refuses the signed bundle", async (t) => {
  const l = await lab(policy('require', [stranger.publicKeyFile], false));
  const r = await stevedoreCli(['import', '--config', l.file, signedBundle]);
  t.equal(r.code, 1, 'refused');
  t.match(r.stderr, /ghcr\.io\/lab\/keyless:v1: .*the policy has no keyless trusted root/);
  t.match(r.stderr, /ghcr\.io\/lab\/legacy:v1: .*not signed by any of the policy's keys/);
  await nothingStored(t, l.store);
});

t.test("import --trust-out writes the bundle's trust material into the directory", async (t) => {
  const l = await lab({});
  const out = path.join(await tmpDir(t, 'sig-trust-'), 'trust');
  const r = await stevedoreCli(['import', '--config', l.file, '--trust-out', out, signedBundle]);
  t.equal(r.code, 0, r.stderr);
  t.same(await fsp.readFile(path.join(out, 'policy-0', 'trusted_root.json')), await fsp.readFile(mock.trustedRootFile), 'the trusted root');
  t.same(await fsp.readFile(path.join(out, 'policy-0', 'key-0.pem')), await fsp.readFile(key.publicKeyFile), 'the public key');
  t.match(JSON.parse(await fsp.readFile(path.join(out, 'verify.json'), 'utf8')), { policies: [{ repository: 'ghcr.io/lab/**' }] });
  t.match(r.stderr, new RegExp(`wrote ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/policy-0/trusted_root\\.json ${sha256(await fsp.readFile(mock.trustedRootFile))}`), 'each file with its digest');
});
