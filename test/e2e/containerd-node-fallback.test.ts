// The node-local tier as containerd sees it: a hosts.toml written by containerd-config names a
// node-local stevedore first and the central one second (`--mirror NODE --mirror CENTRAL`). The
// node's stevedore has the central one as its upstream, the central one a real registry (CNCF
// distribution) as docker.io. ctr (1.6) pulls through the node's stevedore while it runs; once it
// is stopped, the same hosts.toml still works: ctr finds the node's address refusing connections
// and asks the central stevedore directly. The fallback `server` is a closed loopback port, so a
// successful pull proves one of the two stevedores served it.
import path from 'node:path';
import t from 'tap';
import { writeHostsTomls } from '../../lib/cli/containerd-config.js';
import { SAFE_FALLBACK_SERVER, startContainerd } from '../fixtures/containerd.js';
import { buildDockerImage, pushImage, type BuiltImage } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { logsSettled, spawnStevedore, type StevedoreProcess } from '../fixtures/stevedore-process.js';
import { tmpDir } from '../fixtures/util.js';

/** Access-log lines of `p` after the first `from` log lines, for `method` on `path` (query ignored). */
function served(p: StevedoreProcess, method: string, urlPath: string, from = 0): Array<Record<string, unknown>> {
  return p.logs.slice(from).filter((l) => l.msg === 'request' && l.method === method && String(l.path).split('?')[0] === urlPath);
}

const blobPath = (repo: string, digest: string): string => `/v2/${repo}/blobs/${digest}`;
const blobsOf = (img: BuiltImage): Array<{ digest: string }> => [img.config, ...img.layers];

t.test('containerd pulls through the node-local stevedore first, and through the central one once the node-local one is down', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const app = buildDockerImage('containerd-node-fallback/app', { layers: 2 });
  const other = buildDockerImage('containerd-node-fallback/other', { layers: 2 });
  await pushImage(reg.directUrl, 'library/app', 'v1', app);
  await pushImage(reg.directUrl, 'library/other', 'v1', other);

  const work = await tmpDir(t, 'stevedore-node-fallback-');
  const central = await spawnStevedore(t, {
    storage: { path: path.join(work, 'central') },
    defaultUpstream: 'docker.io',
    upstreams: { 'docker.io': { url: reg.url } },
  });
  // The node's stevedore: docker.io's sources are the central stevedore, then the registry. It asks
  // the central one with the path prefix (/v2/docker.io/<name>), so its requests there are told
  // apart from containerd's (which carry ?ns=docker.io).
  const node = await spawnStevedore(t, {
    storage: { path: path.join(work, 'node') },
    defaultUpstream: 'docker.io',
    upstreams: { 'docker.io': { sources: [{ url: central.url, name: 'central', namespace: 'path' }, { url: reg.url }] } },
  });
  const ctrd = await ctrdP;
  const hostsDir = path.join(work, 'certs.d');
  // What `stevedore containerd-config --mirror NODE --mirror CENTRAL` writes, with the fallback
  // server on a closed loopback port instead of registry-1.docker.io.
  await writeHostsTomls(hostsDir, ['docker.io'], [node.url, central.url], { server: SAFE_FALLBACK_SERVER });

  await t.test('with both up, the node-local stevedore serves the pull, having fetched each blob from the central one', async (t) => {
    reg.resetCounts();
    const r = await ctrd.pull('docker.io/library/app:v1', { hostsDir });
    t.equal(r.code, 0, r.stderr);
    t.equal(await ctrd.imageDigest('docker.io/library/app:v1'), app.manifest.digest, 'containerd has the upstream manifest');
    await Promise.all([logsSettled(node), logsSettled(central)]);
    const tagHead = served(node, 'HEAD', '/v2/library/app/manifests/v1');
    t.equal(tagHead.length, 1, 'the node-local stevedore resolved the tag');
    t.equal(tagHead[0]?.status, 200);
    t.match(tagHead[0]?.path, /[?&]ns=docker\.io/, 'asked by containerd (ns=docker.io)');
    for (const b of blobsOf(app)) {
      const lines = served(node, 'GET', blobPath('library/app', b.digest));
      t.same(lines.map((l) => l.status), [200], `the node-local stevedore served ${b.digest.slice(0, 19)} once`);
      t.equal(served(central, 'GET', blobPath('docker.io/library/app', b.digest)).length, 1, `the central stevedore served it once, to the node-local one`);
      t.equal(reg.count('GET', blobPath('library/app', b.digest)), 1, 'the registry served it once, to the central one');
    }
    t.notOk(
      central.logs.some((l) => l.msg === 'request' && String(l.path).includes('ns=docker.io')),
      'containerd never asked the central stevedore itself',
    );
  });

  await node.kill('SIGTERM');
  t.not(node.child.exitCode ?? node.child.signalCode, null, 'the node-local stevedore has exited');
  const nodeLogLines = node.logs.length;
  // What ctr logs when a host refuses the connection, before it tries the next one:
  //   level=info msg="trying next host" error="failed to do request: Head \"http://NODE/v2/.../manifests/v1?ns=docker.io\":
  //   dial tcp NODE: connect: connection refused" host="NODE"
  const nodeHost = node.host.replace(/\./g, '\\.');
  const refusedFirst = (manifest: string): RegExp =>
    new RegExp(`msg="trying next host" error="[^\\n]*http://${nodeHost}${manifest}\\?ns=docker\\.io[^\\n]*connection refused" host="${nodeHost}"`);

  await t.test('with the node-local stevedore down, the same image (gone from containerd) comes from the central store', async (t) => {
    await ctrd.removeImage('docker.io/library/app:v1');
    t.same(await ctrd.contentDigests(), [], 'containerd forgot every blob');
    reg.resetCounts();
    const from = central.logs.length;
    const r = await ctrd.pull('docker.io/library/app:v1', { hostsDir });
    t.equal(r.code, 0, r.stderr);
    t.match(r.stderr, refusedFirst('/v2/library/app/manifests/v1'), "ctr tried the node-local address first, found it refusing connections, went on");
    t.equal(await ctrd.imageDigest('docker.io/library/app:v1'), app.manifest.digest, 'the same image digest');
    await logsSettled(central);
    const tagHead = served(central, 'HEAD', '/v2/library/app/manifests/v1', from);
    t.equal(tagHead.length, 1, 'the central stevedore resolved the tag');
    t.match(tagHead[0]?.path, /[?&]ns=docker\.io/, 'asked by containerd itself (ns=docker.io)');
    for (const b of blobsOf(app)) {
      const lines = served(central, 'GET', blobPath('library/app', b.digest), from);
      t.same(lines.map((l) => [l.status, l.cache]), [[200, 'hit']], `the central stevedore served ${b.digest.slice(0, 19)} from its store`);
    }
    t.equal(reg.count('GET', /\/blobs\//), 0, 'no blob fetched from the registry');
  });

  await t.test('with the node-local stevedore down, an image never pulled comes from the registry through the central one', async (t) => {
    reg.resetCounts();
    const from = central.logs.length;
    const r = await ctrd.pull('docker.io/library/other:v1', { hostsDir });
    t.equal(r.code, 0, r.stderr);
    t.match(r.stderr, refusedFirst('/v2/library/other/manifests/v1'), 'ctr tried the node-local address first');
    t.equal(await ctrd.imageDigest('docker.io/library/other:v1'), other.manifest.digest, 'containerd has the upstream manifest');
    await logsSettled(central);
    for (const b of blobsOf(other)) {
      const lines = served(central, 'GET', blobPath('library/other', b.digest), from);
      t.same(lines.map((l) => [l.status, l.cache]), [[200, 'miss']], `the central stevedore fetched ${b.digest.slice(0, 19)} for containerd`);
      t.match(lines[0]?.path, /[?&]ns=docker\.io/, 'asked by containerd itself');
      t.equal(reg.count('GET', blobPath('library/other', b.digest)), 1, 'the registry served it once');
    }
  });

  t.equal(node.logs.length, nodeLogLines, 'the node-local stevedore saw nothing once stopped');
});
