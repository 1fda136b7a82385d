// The air-gap workflow with the operator CLI: prefetch while connected, export, import into a
// stevedore with no upstream, pull offline with skopeo and containerd; ls, du, gc.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import tar from 'tar-stream';
import { pipeline } from 'node:stream/promises';
import { createReadStream, createWriteStream } from 'node:fs';
import { stevedoreCli } from '../fixtures/cli.js';
import { startContainerd } from '../fixtures/containerd.js';
import { buildDockerImage, buildOciIndex, pushImage } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { readDirImage, skopeoCopy } from '../fixtures/skopeo.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { ageBlob, plantBlob, plantSession, sessionIds, storeFilesUnder } from '../fixtures/oci-push.js';
import { run, tmpDir, which } from '../fixtures/util.js';
import { stevedoreArgv } from '../fixtures/entry.js';
import { fileURLToPath } from 'node:url';

const amd64 = { os: 'linux', architecture: 'amd64' };
const arm64 = { os: 'linux', architecture: 'arm64' };

async function writeConfig(dir: string, doc: Record<string, unknown>): Promise<string> {
  const file = path.join(dir, 'stevedore.yaml');
  await fsp.writeFile(file, JSON.stringify({ log: { level: 'warn' }, ...doc }));
  return file;
}

async function filesUnder(dir: string): Promise<string[]> {
  try {
    return (await fsp.readdir(dir, { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
  } catch {
    return [];
  }
}

t.test('air-gapped lab', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const multi = buildOciIndex('airgap/multi', [amd64, arm64]);
  const app = buildDockerImage('airgap/app', { layers: 2 });
  await pushImage(reg.directUrl, 'library/multi', '1.0', multi);
  await pushImage(reg.directUrl, 'team/app', 'v2', app);
  // Manifests and blobs of both images: the index, 2 platform manifests and their blobs; the app.
  const TOTAL_OBJECTS = 3 + multi.images.reduce((n, i) => n + 1 + i.layers.length, 0) + 2 + app.layers.length;
  const work = await tmpDir(t, 'stevedore-airgap-');
  const connected = path.join(work, 'connected');
  const connectedConfig = await writeConfig(work, {
    storage: { path: connected },
    defaultUpstream: 'docker.io',
    upstreams: { 'docker.io': { url: reg.url } },
  });
  const ctrd = await ctrdP;

  await t.test('prefetch fetches every platform of an index and every blob, and pins them', async (t) => {
    reg.resetCounts();
    const r = await stevedoreCli(['prefetch', '--config', connectedConfig, '--pin', 'multi:1.0', 'docker.io/team/app:v2']);
    t.equal(r.code, 0, r.stderr);
    const multiBlobs = multi.images.reduce((n, i) => n + 1 + i.layers.length, 0);
    t.match(r.stderr, new RegExp(`prefetch docker\\.io/library/multi:1\\.0: 3 manifests, ${multiBlobs} blobs`), 'plain progress lines when not a terminal');
    t.match(r.stderr, /prefetched 2\/2 images/);
    for (const img of [...multi.images, app]) {
      for (const b of [img.config, ...img.layers]) t.equal(reg.count('GET', new RegExp(`/blobs/${b.digest}$`)), 1, `fetched ${b.digest.slice(0, 19)} once`);
    }
    const pins = await storeFilesUnder(connected, 'pins');
    t.equal(pins.length, TOTAL_OBJECTS, 'every manifest and blob pinned');
  });

  await t.test('on a terminal, prefetch draws progress bars per image and in total', async (t) => {
    // `script` gives the command a pseudo-terminal, as an operator's shell would.
    const store = path.join(work, 'tty-store');
    const cfg = path.join(work, 'tty.yaml');
    await fsp.writeFile(cfg, JSON.stringify({ log: { level: 'warn' }, storage: { path: store }, upstreams: { 'docker.io': { url: reg.url } } }));
    const cmd = stevedoreArgv(['prefetch', '--config', cfg, 'docker.io/team/app:v2'])
      .map((a) => `'${a}'`)
      .join(' ');
    const r = await run(which('script'), ['-qec', cmd, '/dev/null'], {
      cwd: path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..'),
      env: { ...process.env, STEVEDORE_CONFIG: '', COLUMNS: '120', TERM: 'xterm' },
      timeoutMs: 60_000,
    });
    t.equal(r.code, 0, r.stdout);
    t.match(r.stdout, /\u2588/, 'bar characters drawn');
    // (the image's name is cut at the terminal's width)
    t.match(r.stdout, /100% \| [\d.]+KiB\/[\d.]+KiB \| docker\.io\/team\//, 'the image bar reaches 100 %');
    t.match(r.stdout, /\| total/, 'a total bar');
    t.notMatch(r.stdout, /prefetch docker\.io\/team\/app:v2: \d+ manifests/, 'no plain log lines on a terminal');
  });

  await t.test('prefetch again resumes: nothing already stored is fetched', async (t) => {
    reg.resetCounts();
    const r = await stevedoreCli(['prefetch', '--config', connectedConfig, 'multi:1.0']);
    t.equal(r.code, 0, r.stderr);
    t.equal(reg.count('GET', /\/blobs\//), 0);
  });

  await t.test('with the upstream stopped, containerd pulls the prefetched image; the upstream sees nothing', async (t) => {
    const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, storagePath: connected });
    reg.resetCounts();
    await reg.stop();
    const r = await ctrd.pull('docker.io/library/multi:1.0', { hostsDir: ctrd.writeHostsToml('docker.io', sd.url) });
    t.equal(r.code, 0, r.stderr);
    t.equal(await ctrd.imageDigest('docker.io/library/multi:1.0'), multi.index.digest);
    t.equal(reg.count('*', /.*/), 0, 'no upstream request');
    await ctrd.removeImage('docker.io/library/multi:1.0');
    await sd.stop();
  });

  const bundle = path.join(work, 'bundle.tar');
  await t.test('export writes an OCI layout archive with full references', async (t) => {
    const r = await stevedoreCli(['export', '--config', connectedConfig, '-o', bundle, 'multi:1.0', 'docker.io/team/app:v2']);
    t.equal(r.code, 0, r.stderr);
    const names: string[] = [];
    let index: { manifests: Array<{ digest: string; annotations: Record<string, string> }> } | null = null;
    const extract = tar.extract();
    extract.on('entry', (h, stream, next) => {
      names.push(h.name);
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        if (h.name === 'index.json') index = JSON.parse(Buffer.concat(chunks).toString()) as typeof index;
        next();
      });
    });
    await pipeline(createReadStream(bundle), extract);
    t.ok(names.includes('oci-layout') && names.includes('index.json'));
    const idx = index as unknown as { manifests: Array<{ digest: string; annotations: Record<string, string> }> };
    t.same(
      idx.manifests.map((m) => [m.digest, m.annotations['org.opencontainers.image.ref.name']]),
      [
        [multi.index.digest, 'docker.io/library/multi:1.0'],
        [app.manifest.digest, 'docker.io/team/app:v2'],
      ],
    );
    const blobs = names.filter((n) => n.startsWith('blobs/sha256/'));
    t.equal(blobs.length, TOTAL_OBJECTS, 'every manifest and blob, once');
  });

  // skopeo 1.9 (containers/image 5.23) reads only OCI-typed images from a layout: the OCI index
  // here; it skips the Docker v2 one, which the bundle carries for stevedore and containerd.
  await t.test('skopeo reads the export as an oci-archive', async (t) => {
    const dir = path.join(await tmpDir(t), 'img');
    const r = await skopeoCopy(`oci-archive:${bundle}:docker.io/library/multi:1.0`, `dir:${dir}`, {
      extraArgs: ['--override-os', 'linux', '--override-arch', 'amd64'],
    });
    t.equal(r.code, 0, r.stderr);
    const got = readDirImage(dir);
    t.ok(got.manifest.equals(multi.images[0]!.manifest.data), 'the amd64 manifest, bytes identical');
    for (const l of multi.images[0]!.layers) t.ok(got.blobs.get(l.digest)?.equals(l.data), 'layer identical');
  });

  const lab = path.join(work, 'lab');
  const labConfig = await writeConfig(path.join(work), {
    storage: { path: lab },
    offline: true,
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
  });
  await fsp.rename(labConfig, path.join(work, 'lab.yaml'));

  await t.test('a tampered bundle is refused and stores nothing', async (t) => {
    const tampered = path.join(work, 'tampered.tar');
    const pack = tar.pack();
    const extract = tar.extract();
    extract.on('entry', (h, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        const data = Buffer.concat(chunks);
        if (h.name === `blobs/sha256/${app.layers[0]!.digest.slice(7)}`) data[data.length - 1] = data[data.length - 1]! ^ 0xff;
        pack.entry({ name: h.name, size: data.length }, data, next);
      });
    });
    extract.on('finish', () => pack.finalize());
    await Promise.all([pipeline(createReadStream(bundle), extract), pipeline(pack, createWriteStream(tampered))]);
    const r = await stevedoreCli(['import', '--config', path.join(work, 'lab.yaml'), tampered]);
    t.equal(r.code, 1, 'refused');
    t.match(r.stderr, /does not match its digest/);
    t.same(await storeFilesUnder(lab, 'blobs'), [], 'no blob stored');
    t.same(await storeFilesUnder(lab, 'repositories'), [], 'no tag stored');
    t.same(await filesUnder(path.join(lab, 'tmp')), [], 'no staging left');
  });

  await t.test('import into a fresh store, then skopeo and containerd pull offline with identical digests', async (t) => {
    const r = await stevedoreCli(['import', '--config', path.join(work, 'lab.yaml'), bundle]);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stderr, /imported 2 images/);
    const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, storagePath: lab, config: { offline: true } });
    const dir = path.join(await tmpDir(t), 'img');
    const s = await skopeoCopy(`docker://${sd.host}/docker.io/team/app:v2`, `dir:${dir}`);
    t.equal(s.code, 0, s.stderr);
    t.ok(readDirImage(dir).manifest.equals(app.manifest.data), 'skopeo: same manifest bytes');
    const c = await ctrd.pull('docker.io/library/multi:1.0', { hostsDir: ctrd.writeHostsToml('docker.io', sd.url) });
    t.equal(c.code, 0, c.stderr);
    t.equal(await ctrd.imageDigest('docker.io/library/multi:1.0'), multi.index.digest, 'containerd: same digest');
  });

  await t.test('ls lists repositories and tags with sizes; du sums the store', async (t) => {
    const ls = await stevedoreCli(['ls', '--config', path.join(work, 'lab.yaml'), '--json']);
    t.equal(ls.code, 0, ls.stderr);
    const rows = JSON.parse(ls.stdout) as Array<{ repository: string; tag: string; digest: string; size: number }>;
    t.same(rows.map((r) => [r.repository, r.tag, r.digest]), [
      ['docker.io/library/multi', '1.0', multi.index.digest],
      ['docker.io/team/app', 'v2', app.manifest.digest],
    ]);
    const appSize = app.manifest.size + app.config.size + app.layers.reduce((n, l) => n + l.size, 0);
    t.equal(rows[1]!.size, appSize, 'size of the manifest and its blobs');
    const du = await stevedoreCli(['du', '--config', path.join(work, 'lab.yaml'), '--json']);
    const doc = JSON.parse(du.stdout) as { pinnedCount: number; cachedCount: number };
    t.equal(doc.pinnedCount, TOTAL_OBJECTS, 'everything imported is pinned');
    t.equal(doc.cachedCount, 0);
  });

  await t.test('gc is a dry run by default and deletes only content nothing links to', async (t) => {
    // An orphan: a verified blob with no repository link and no pin.
    const orphan = Buffer.from('orphan blob');
    const { createHash } = await import('node:crypto');
    const hex = createHash('sha256').update(orphan).digest('hex');
    await plantBlob(lab, orphan, hex);
    // Just stored, it may be a running server's (its link not written yet): gc leaves it alone.
    const fresh = await stevedoreCli(['gc', '--config', path.join(work, 'lab.yaml')]);
    t.match(fresh.stdout, /would free 0B: 0 unreferenced blobs/, 'content stored in the last 10 minutes is never collected');
    const aged = await ageBlob(lab, hex, 3_600_000);
    const dry = await stevedoreCli(['gc', '--config', path.join(work, 'lab.yaml'), ...aged]);
    t.equal(dry.code, 0, dry.stderr);
    t.match(dry.stdout, new RegExp(`would delete sha256:${hex}`));
    t.match(dry.stdout, /would free 11B: 1 unreferenced blobs, 0 expired uploads \(dry run/);
    const real = await stevedoreCli(['gc', '--config', path.join(work, 'lab.yaml'), '--delete', ...aged]);
    t.match(real.stdout, /freed 11B: 1 unreferenced blobs/);
    t.notOk((await storeFilesUnder(lab, 'blobs')).includes(hex), 'orphan gone');
    t.equal((await storeFilesUnder(lab, 'blobs')).length, TOTAL_OBJECTS, 'everything referenced kept');
  });

  await t.test('gc lists upload sessions idle past registry.uploadMaxAge, and deletes them with --delete', async (t) => {
    const uuid = '0123abcd-0000-4000-8000-000000000001';
    await plantSession(lab, uuid, 2048, 2 * 86_400_000);
    const dry = await stevedoreCli(['gc', '--config', path.join(work, 'lab.yaml')]);
    t.match(dry.stdout, new RegExp(`would delete upload ${uuid} \\(2\\.0KiB\\)`));
    t.same(await sessionIds(lab), [uuid], 'dry run deletes nothing');
    const real = await stevedoreCli(['gc', '--config', path.join(work, 'lab.yaml'), '--delete']);
    t.match(real.stdout, /freed 2\.0KiB: 0 unreferenced blobs, 1 expired uploads/);
    t.same(await sessionIds(lab), [], 'the session is gone');
  });
});

t.test('containerd-config writes hosts.toml files for each registry', async (t) => {
  const dir = await tmpDir(t);
  const r = await stevedoreCli(['containerd-config', '--mirror', 'http://10.0.0.5:5000', '--registries', 'docker.io,ghcr.io', '--dir', dir]);
  t.equal(r.code, 0, r.stderr);
  const docker = await fsp.readFile(path.join(dir, 'docker.io', 'hosts.toml'), 'utf8');
  t.match(docker, /^server = "https:\/\/registry-1\.docker\.io"$/m);
  t.match(docker, /^\[host\."http:\/\/10\.0\.0\.5:5000"\]\n {2}capabilities = \["pull", "resolve"\]$/m);
  const ghcr = await fsp.readFile(path.join(dir, 'ghcr.io', 'hosts.toml'), 'utf8');
  t.match(ghcr, /^server = "https:\/\/ghcr\.io"$/m);
  const bad = await stevedoreCli(['containerd-config', '--mirror', 'ftp://x', '--dir', dir]);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /--mirror must be http/);
});
