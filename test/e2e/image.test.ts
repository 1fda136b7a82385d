// The container image is real: the project's own Dockerfile, built with podman (Debian's 4.3, vfs
// storage, as root) and run as a user would run it. No base image can be pulled here, so the test
// makes a Node 24 base (test/fixtures/podman-image.ts) and names it with `--build-arg BASE_IMAGE`;
// `npm ci` in the build finds its packages in the machine's npm cache, mounted into the build as a
// build farm would mount its cache, with no network at all (`--network none`). The image then
// runs on a read-only root filesystem, answers /healthz (and its own HEALTHCHECK), serves a skopeo
// pull from the test registry byte for byte, and drains on SIGTERM: exit code 0 within the grace.
//
// The commands (PODMAN = podman --root DIR/graph --runroot DIR/run --storage-driver vfs):
//   PODMAN import --change 'ENV PATH=...' rootfs.tar localhost/stevedore-test-node:24
//   PODMAN build --layers=false --format docker --network none \
//     --volume "$(npm config get cache)":/npm-cache --build-arg NPM_CACHE=/npm-cache \
//     --build-arg BASE_IMAGE=localhost/stevedore-test-node:24 -t localhost/stevedore:test .
//   PODMAN run -d --read-only --read-only-tmpfs=false --network host \
//     -e STEVEDORE_LISTEN=127.0.0.1:PORT -v stevedore.yaml:/etc/stevedore/stevedore.yaml:ro localhost/stevedore:test
import { readdirSync, readFileSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { nodeBaseImage } from '../fixtures/podman-image.js';
import { preparePodman } from '../fixtures/podman.js';
import { startRegistry } from '../fixtures/registry.js';
import { readDirImage, skopeoCopy } from '../fixtures/skopeo.js';
import { freePort, runOk, tmpDir, waitFor, which } from '../fixtures/util.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const IMAGE = 'localhost/stevedore:test';
const MB = 1000 * 1000;
// Building on vfs copies the root filesystem at every stage: about 100 s alone, longer on a busy machine.
t.setTimeout(15 * 60_000);

/** Every file under `dir`, relative to it. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}

t.test('the Dockerfile builds with podman and the image serves pulls, read-only, as uid 10001, and drains on SIGTERM', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('image-test/app');
  await pushImage(reg.url, 'library/app', 'v1', img);

  const pm = await preparePodman(t, {});
  const base = await nodeBaseImage(t, pm);
  const npmCache = (await runOk(which('npm'), ['config', 'get', 'cache'])).stdout.trim();

  const started = Date.now();
  const build = await pm.cmd(
    [
      'build', '--layers=false', '--format', 'docker', '--network', 'none',
      '--volume', `${npmCache}:/npm-cache`, '--build-arg', 'NPM_CACHE=/npm-cache',
      '--build-arg', `BASE_IMAGE=${base}`, '-t', IMAGE, ROOT,
    ],
    15 * 60_000,
  );
  if (build.code !== 0) t.fail(`podman build exited ${build.code}: ${build.stdout.slice(-3000)}${build.stderr.slice(-3000)}`);
  if (build.code !== 0) return;
  t.pass('podman build of the Dockerfile, offline, on the test base');
  t.comment(`podman build took ${((Date.now() - started) / 1000).toFixed(0)} s`);

  await t.test('the image holds the production build only, runs as 10001, and says how big it is', async (t) => {
    const inspect = JSON.parse((await pm.cmd(['image', 'inspect', IMAGE])).stdout) as Array<{ Size: number; Config: { User: string } }>;
    const baseSize = (JSON.parse((await pm.cmd(['image', 'inspect', base])).stdout) as Array<{ Size: number }>)[0]!.Size;
    const { Size: size, Config: config } = inspect[0]!;
    t.equal(config.User, '10001:10001', 'USER 10001:10001');
    t.comment(`image ${(size / MB).toFixed(1)} MB on the test base (${(baseSize / MB).toFixed(1)} MB: Node 24, npm, libc); stevedore's own layers ${((size - baseSize) / MB).toFixed(1)} MB`);
    t.ok(size - baseSize < 60 * MB, `stevedore adds ${((size - baseSize) / MB).toFixed(1)} MB to its base`);

    const mount = (await pm.cmd(['image', 'mount', IMAGE])).stdout.trim();
    t.teardown(() => pm.cmd(['image', 'unmount', IMAGE]));
    const app = path.join(mount, 'app');
    t.same(readdirSync(app).sort(), ['assets', 'dist', 'node_modules', 'package.json'], '/app: the build, its production dependencies, assets, package.json; no lib/, test/, bench/');
    const dist = filesUnder(path.join(app, 'dist'));
    t.ok(dist.includes('cli/main.js'), 'dist/cli/main.js');
    t.same(dist.filter((f) => !f.endsWith('.js')), [], 'dist/ holds JavaScript only: no source maps, no declarations');
    t.same(filesUnder(path.join(app, 'node_modules')).filter((f) => f.endsWith('.map')), [], 'no source map in node_modules');
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    const installed = (name: string): boolean => {
      try {
        readFileSync(path.join(app, 'node_modules', name, 'package.json'));
        return true;
      } catch {
        return false;
      }
    };
    t.same(Object.keys(pkg.devDependencies).filter(installed), [], 'no dev dependency');
    t.same(Object.keys(pkg.dependencies).filter((d) => !installed(d)), [], 'every production dependency');
    const passwd = readFileSync(path.join(mount, 'etc/passwd'), 'utf8');
    t.match(passwd, /^stevedore:x:10001:10001:/m, 'the stevedore user in /etc/passwd');
  });

  await t.test('it runs on a read-only root, answers /healthz and its HEALTHCHECK, serves a skopeo pull, and drains on SIGTERM', async (t) => {
    const dir = await tmpDir(t);
    const port = await freePort();
    const cfg = path.join(dir, 'stevedore.yaml');
    await fsp.writeFile(cfg, JSON.stringify({ defaultUpstream: 'docker.io', upstreams: { 'docker.io': { url: reg.url } } }));
    const name = `stevedore-image-test-${process.pid}`;
    const run = await pm.cmd([
      'run', '-d', '--name', name, '--read-only', '--read-only-tmpfs=false', '--network', 'host',
      '-e', `STEVEDORE_LISTEN=127.0.0.1:${port}`, '-v', `${cfg}:/etc/stevedore/stevedore.yaml:ro`, IMAGE,
    ]);
    t.equal(run.code, 0, run.code === 0 ? 'podman run' : `podman run: ${run.stderr}`);
    t.teardown(() => pm.cmd(['rm', '--force', '--volumes', name]));
    const url = `http://127.0.0.1:${port}`;
    await waitFor('stevedore in the container to answer /healthz', async () => (await fetch(`${url}/healthz`)).status === 200, 30_000, 200);

    const logs = async (): Promise<Array<Record<string, unknown>>> =>
      (await pm.cmd(['logs', name])).stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    const listening = (await logs()).find((l) => l.msg === 'stevedore listening');
    t.comment(`stevedore in the image runs on Node.js ${String(listening?.node)}`);
    t.match(listening?.node, /^v24\./, 'the image runs stevedore on Node.js 24');
    t.equal(listening?.storage, '/var/lib/stevedore', 'its store is the image volume');

    const who = await pm.cmd(['exec', name, 'node', '-e', "process.stdout.write(String(process.getuid())); try { require('fs').writeFileSync('/app/probe', ''); } catch (e) { process.stdout.write(' ' + e.code); }"]);
    t.equal(who.stdout, '10001 EROFS', 'the process is uid 10001, and the root filesystem refuses writes');
    const health = await pm.cmd(['healthcheck', 'run', name]);
    t.equal(health.code, 0, `the image's HEALTHCHECK passes: ${health.stdout}${health.stderr}`);

    const out = path.join(dir, 'pulled');
    const pull = await skopeoCopy(`docker://127.0.0.1:${port}/docker.io/library/app:v1`, `dir:${out}`);
    t.equal(pull.code, 0, pull.code === 0 ? 'skopeo copy through the container' : pull.stderr);
    const got = readDirImage(out);
    t.ok(got.manifest.equals(img.manifest.data), 'manifest bytes are the upstream bytes');
    for (const b of [img.config, ...img.layers]) t.ok(got.blobs.get(b.digest)?.equals(b.data), `${b.digest.slice(0, 19)} bytes are the upstream bytes`);
    t.equal(reg.count('GET', /\/blobs\//), 1 + img.layers.length, 'each blob fetched from the upstream once, into the store on the volume');

    const stopAt = Date.now();
    await pm.cmd(['kill', '--signal', 'TERM', name]);
    const waited = await pm.cmd(['wait', name], 30_000);
    const tookMs = Date.now() - stopAt;
    t.equal(waited.stdout.trim(), '0', 'exit code 0 after SIGTERM');
    t.ok(tookMs < 10_000, `stopped within the 10 s grace (${tookMs} ms)`);
    t.ok((await logs()).some((l) => l.msg === 'draining' && l.signal === 'SIGTERM'), 'it logged the drain');
  });
});
