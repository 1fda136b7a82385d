// `stevedore import` refuses a bundle that cannot fit before it fills the disk or the store
// (security review, issue 25, item 14): one over storage.maxSize (imported content is pinned, so
// eviction cannot make room), one over the free disk space, and one with more entries than
// --max-entries. Each is a clear error, and nothing is stored: no blob, no tag, no staging left.
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import t, { type Test } from 'tap';
import tar from 'tar-stream';
import YAML from 'yaml';
import { stevedoreCli } from '../fixtures/cli.js';
import { run, tmpDir } from '../fixtures/util.js';

const MiB = 1024 * 1024;

interface Entry {
  name: string;
  data: Buffer;
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** A valid OCI layout with one image (docker.io/library/big:1.0) of `layers` random layers of `layerSize` bytes. */
function layoutEntries(layers: number, layerSize: number): Entry[] {
  const blobs = Array.from({ length: layers }, () => randomBytes(layerSize));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: blobs.map((b) => `sha256:${sha256(b)}`) } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha256(config)}`, size: config.length },
      layers: blobs.map((b) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${sha256(b)}`, size: b.length })),
    }),
  );
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${sha256(manifest)}`,
          size: manifest.length,
          annotations: { 'org.opencontainers.image.ref.name': 'docker.io/library/big:1.0' },
        },
      ],
    }),
  );
  return [
    { name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') },
    { name: 'index.json', data: index },
    ...[manifest, config, ...blobs].map((data) => ({ name: `blobs/sha256/${sha256(data)}`, data })),
  ];
}

async function writeBundle(file: string, entries: Entry[]): Promise<void> {
  const pack = tar.pack();
  const written = pipeline(pack, createWriteStream(file));
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => pack.entry({ name: e.name, size: e.data.length }, e.data, (err) => (err ? reject(err) : resolve())));
  }
  pack.finalize();
  await written;
}

/** Every file under `dir`, relative; [] when it does not exist. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  await walk(dir);
  return out.sort();
}

async function lab(t: Test, storage: Record<string, unknown>): Promise<string> {
  const file = path.join(await tmpDir(t, 'stevedore-import-limits-'), 'lab.yaml');
  await fsp.writeFile(file, YAML.stringify({ offline: true, storage, upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } } }));
  return file;
}

function nothingStored(t: Test, store: string): Promise<void> {
  return (async () => {
    t.same(await filesUnder(path.join(store, 'blobs')), [], 'no blob stored');
    t.same(await filesUnder(path.join(store, 'repositories')), [], 'no tag stored');
    t.same(await filesUnder(path.join(store, 'pins')), [], 'nothing pinned');
    t.same(await filesUnder(path.join(store, 'tmp')), [], 'no staging left');
  })();
}

t.test('a bundle that would take the pinned content past storage.maxSize is refused, naming the setting; nothing is stored', async (t) => {
  const dir = await tmpDir(t, 'stevedore-import-limits-');
  const bundle = path.join(dir, 'big.tar');
  await writeBundle(bundle, layoutEntries(3, MiB));
  const store = path.join(dir, 'store');
  const r = await stevedoreCli(['import', '--config', await lab(t, { path: store, maxSize: '2MiB' }), bundle]);
  t.equal(r.code, 1, 'refused');
  t.match(r.stderr, /does not fit in storage\.maxSize \(2(\.0)?MiB\)/, 'the message names the setting');
  await nothingStored(t, store);

  const fits = await stevedoreCli(['import', '--config', await lab(t, { path: path.join(dir, 'roomy'), maxSize: '8MiB' }), bundle]);
  t.equal(fits.code, 0, `the same bundle fits a larger store: ${fits.stderr}`);
});

t.test('a bundle larger than the free disk space is refused before the disk fills; nothing is stored', async (t) => {
  const dir = await tmpDir(t, 'stevedore-import-limits-');
  const disk = path.join(dir, 'disk');
  await fsp.mkdir(disk);
  // A small filesystem of its own: the store cannot have more room than this.
  const mounted = await run('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', disk]);
  if (mounted.code !== 0) throw new Error(`mount a tmpfs (the test runs as root): ${mounted.stderr}`);
  t.teardown(async () => {
    await run('umount', [disk]);
  });
  const bundle = path.join(dir, 'big.tar');
  await writeBundle(bundle, layoutEntries(4, 2 * MiB));
  const store = path.join(disk, 'store');
  const r = await stevedoreCli(['import', '--config', await lab(t, { path: store }), bundle]);
  t.equal(r.code, 1, 'refused');
  t.match(r.stderr, /does not fit in the free disk space/, 'the message says why');
  t.notMatch(r.stderr, /ENOSPC/, 'before the disk was full');
  await nothingStored(t, store);
});

t.test('a bundle with more entries than --max-entries is refused; nothing is stored', async (t) => {
  const dir = await tmpDir(t, 'stevedore-import-limits-');
  const bundle = path.join(dir, 'many.tar');
  const entries = layoutEntries(1, 1024);
  for (let i = 0; i < 60; i++) {
    const data = randomBytes(16);
    entries.push({ name: `blobs/sha256/${sha256(data)}`, data });
  }
  await writeBundle(bundle, entries);
  const store = path.join(dir, 'store');
  const r = await stevedoreCli(['import', '--config', await lab(t, { path: store }), '--max-entries', '50', bundle]);
  t.equal(r.code, 1, 'refused');
  t.match(r.stderr, /more than 50 entries \(--max-entries\)/, 'the message names the cap');
  await nothingStored(t, store);

  const fits = await stevedoreCli(['import', '--config', await lab(t, { path: path.join(dir, 'other') }), '--max-entries', '100', bundle]);
  t.equal(fits.code, 0, `within the cap it imports: ${fits.stderr}`);
});

t.test('a bundle entry that is no blob, refused while its bytes are unread, is a clear error, not a crash; nothing is left', async (t) => {
  const dir = await tmpDir(t, 'stevedore-import-limits-');
  const bundle = path.join(dir, 'odd.tar');
  await writeBundle(bundle, [...layoutEntries(1, 1024), { name: 'blobs/sha256/not-a-digest', data: randomBytes(256 * 1024) }]);
  const store = path.join(dir, 'store');
  const r = await stevedoreCli(['import', '--config', await lab(t, { path: store }), bundle]);
  t.equal(r.code, 1, 'refused');
  t.match(r.stderr, /^stevedore: unexpected bundle entry "blobs\/sha256\/not-a-digest"\n$/, 'with the reason, and nothing else (no stack trace)');
  await nothingStored(t, store);
});
