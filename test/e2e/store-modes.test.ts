// The store holds every repository's content side by side, private hosted blobs among them: other
// local users of the host must read none of it (security review, issue 25, item 12). Everything
// stevedore creates in a store is its owner's only, directories 0700 and files 0600, under the
// usual umask (022); a store made before (0755 / 0644) keeps working and keeps its modes (no
// recursive chmod at start), and what is added to it gets the new ones.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage, type BuiltImage } from '../fixtures/images.js';
import { rawRequest } from '../fixtures/http-client.js';
import { openUpload, pushBlobWhole } from '../fixtures/oci-push.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';
import { s3Storage } from '../fixtures/s3.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';

process.umask(0o022);

/** Every directory and file under `root` (root included), with its permission bits in octal. */
async function modes(root: string): Promise<Array<{ path: string; kind: 'dir' | 'file'; mode: string }>> {
  const out: Array<{ path: string; kind: 'dir' | 'file'; mode: string }> = [];
  const walk = async (p: string): Promise<void> => {
    const st = await fsp.lstat(p);
    const mode = (st.mode & 0o777).toString(8);
    if (st.isDirectory()) {
      out.push({ path: path.relative(root, p) || '.', kind: 'dir', mode });
      for (const name of await fsp.readdir(p)) await walk(path.join(p, name));
    } else {
      out.push({ path: path.relative(root, p), kind: 'file', mode });
    }
  };
  await walk(root);
  return out;
}

/** Pulls every part of `img` from stevedore, checking each answer's bytes. */
async function pullAll(t: Test, sd: Stevedore, repo: string, tag: string, img: BuiltImage): Promise<void> {
  const m = await rawRequest(`${sd.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: MANIFEST_ACCEPT } });
  t.equal(m.status, 200, `manifest ${repo}:${tag}`);
  for (const b of [img.config, ...img.layers]) {
    const r = await rawRequest(`${sd.url}/v2/${repo}/blobs/${b.digest}`);
    t.ok(r.status === 200 && r.body.equals(b.data), `blob ${b.digest.slice(0, 19)} served whole`);
  }
}

/** Fills a store with what a running stevedore writes: pulled blobs and tags, a pushed blob, an open upload session. */
async function exercise(t: Test, sd: Stevedore, img: BuiltImage): Promise<void> {
  await pullAll(t, sd, 'library/app', 'v1', img);
  const pushed = Buffer.from('a private blob pushed to a hosted repository\n');
  const digest = `sha256:${createHash('sha256').update(pushed).digest('hex')}`;
  t.equal((await pushBlobWhole(sd.url, 'lab/private', pushed, digest)).status, 201, 'a hosted push');
  await openUpload(sd.url, 'lab/private'); // left open: its session files stay
}

async function upstream(t: Test): Promise<{ reg: Registry; img: BuiltImage; other: BuiltImage }> {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage(`store-modes/${t.name}`, { layers: 2 });
  const other = buildDockerImage(`store-modes/${t.name}/other`, { layers: 1 });
  await pushImage(reg.directUrl, 'library/app', 'v1', img);
  await pushImage(reg.directUrl, 'library/other', 'v1', other);
  return { reg, img, other };
}

const CONFIG = { registry: { hosted: ['lab/**'] } };

t.test('a new store is its owner\'s only: every directory 0700, every file 0600 (blobs, records, tags, sessions, the snapshot, the store id)', async (t) => {
  const { reg, img } = await upstream(t);
  const storagePath = path.join(await tmpDir(t, 'stevedore-modes-'), 'store');
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, storagePath, config: CONFIG });
  await exercise(t, sd, img);
  await sd.stop(); // writes the index snapshot
  const all = await modes(storagePath);
  t.ok(all.some((e) => e.path.startsWith('blobs') && e.kind === 'file'), 'blobs were written');
  t.ok(all.some((e) => e.path.includes('uploads') && e.kind === 'file'), 'an upload session was written');
  t.same(
    all.filter((e) => e.mode !== (e.kind === 'dir' ? '700' : '600')),
    [],
    'no directory other than 0700, no file other than 0600',
  );
});

t.test('a store created before (0755 directories, 0644 files) keeps serving and keeps its modes; what is added to it is 0700 / 0600', async (t) => {
  const { reg, img, other } = await upstream(t);
  const storagePath = path.join(await tmpDir(t, 'stevedore-modes-'), 'store');
  const first = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, storagePath, config: CONFIG });
  await pullAll(t, first, 'library/app', 'v1', img);
  await first.stop();
  // As an older stevedore left it.
  for (const e of await modes(storagePath)) await fsp.chmod(path.join(storagePath, e.path), e.kind === 'dir' ? 0o755 : 0o644);
  const before = await modes(storagePath);

  const again = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, storagePath, config: CONFIG });
  reg.resetCounts();
  await pullAll(t, again, 'library/app', 'v1', img);
  t.equal(reg.count('GET', /\/blobs\//), 0, 'the old store served its blobs');
  await pullAll(t, again, 'library/other', 'v1', other);
  await again.stop();

  const after = new Map((await modes(storagePath)).map((e) => [e.path, e]));
  // Rewritten, not kept: the snapshot at shutdown, tmp/ swept and made anew at start-up.
  const kept = before.filter((e) => e.path !== 'index.snapshot' && e.path !== 'tmp' && after.has(e.path));
  t.same(
    kept.filter((e) => after.get(e.path)!.mode !== e.mode).map((e) => e.path),
    [],
    'what was there keeps its mode (no chmod of an existing store)',
  );
  const layer = other.layers[0]!.digest.replace(':', '/');
  const added = [...after.values()].filter((e) => e.path.includes(layer));
  t.ok(added.length > 0, 'the new blob is stored');
  t.same(
    added.filter((e) => e.mode !== (e.kind === 'dir' ? '700' : '600')),
    [],
    'and is 0600',
  );
});

t.test("on the S3 backend, the local working space (temp files of downloads and pushed chunks) is its owner's only", async (t) => {
  const { reg, img } = await upstream(t);
  const storagePath = path.join(await tmpDir(t, 'stevedore-modes-'), 'store');
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: reg.url } },
    storagePath,
    config: { ...CONFIG, storage: { backend: 's3', s3: await s3Storage(storagePath) } },
  });
  await exercise(t, sd, img);
  const all = await modes(storagePath);
  t.ok(all.some((e) => e.path.startsWith('tmp/') && e.kind === 'file'), 'downloads went through local temp files');
  t.same(
    all.filter((e) => e.mode !== (e.kind === 'dir' ? '700' : '600')),
    [],
    'no directory other than 0700, no file other than 0600',
  );
});
