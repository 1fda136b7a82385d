// Real clients through a cluster: containerd (ctr, hosts.toml mirror) and skopeo pull one cold
// image at the same time through two different replicas of one store; every blob comes from the
// upstream once, whichever replica fetched it.
import path from 'node:path';
import t from 'tap';
import { MiB, startCluster } from '../fixtures/cluster.js';
import { startContainerd } from '../fixtures/containerd.js';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { readDirImage, skopeoCopy } from '../fixtures/skopeo.js';
import { tmpDir } from '../fixtures/util.js';

t.test('ctr through one replica and skopeo through another pull one cold image: each blob fetched upstream once', async (t) => {
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  // A slow link: the two pulls overlap, so one replica follows the other's downloads.
  const reg = await startRegistry({ bytesPerSecond: 8 * MiB });
  t.teardown(() => reg.stop());
  const img = buildDockerImage('cluster-clients/app', { layers: 3, layerSize: 3 * MiB });
  await pushImage(reg.directUrl, 'library/app', 'v1', img);
  const c = await startCluster(t, { replicas: 2, upstreamUrl: reg.url });
  const ctrd = await ctrdP;
  const hostsDir = ctrd.writeHostsToml('docker.io', c.replicas[0]!.url);
  const dir = path.join(await tmpDir(t), 'img');
  reg.resetCounts();
  const [pulled, copied] = await Promise.all([
    ctrd.pull('docker.io/library/app:v1', { hostsDir }),
    skopeoCopy(`docker://${c.replicas[1]!.host}/docker.io/library/app:v1`, `dir:${dir}`),
  ]);
  t.equal(pulled.code, 0, pulled.stderr);
  t.equal(copied.code, 0, copied.stderr);
  t.equal(await ctrd.imageDigest('docker.io/library/app:v1'), img.manifest.digest, 'containerd has the upstream manifest');
  const got = readDirImage(dir);
  t.ok(got.manifest.equals(img.manifest.data), 'skopeo has the upstream manifest, byte for byte');
  for (const b of [img.config, ...img.layers]) t.ok(got.blobs.get(b.digest)?.equals(b.data), `skopeo has ${b.digest.slice(0, 19)}`);
  for (const b of [img.config, ...img.layers]) {
    t.equal(reg.count('GET', `/v2/library/app/blobs/${b.digest}`), 1, `${b.digest.slice(0, 19)} fetched upstream once for both replicas`);
  }
  const followed = c.replicas.flatMap((r) => r.logs).filter((l) => l.msg === 'request' && l.cache === 'miss' && String(l.path).includes('/blobs/'));
  t.ok(followed.length >= 4, 'both replicas answered blob misses (one downloading, the other following)');
});
