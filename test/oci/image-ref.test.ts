import t from 'tap';
import { formatImageRef, parseImageRef } from '../../lib/oci/image-ref.js';

t.test('Docker Hub short names normalize to docker.io/library/<name>:latest', async (t) => {
  t.same(parseImageRef('alpine'), { registry: 'docker.io', name: 'library/alpine', tag: 'latest', digest: null });
  t.same(parseImageRef('alpine:3.19'), { registry: 'docker.io', name: 'library/alpine', tag: '3.19', digest: null });
  t.same(parseImageRef('bitnami/redis:7'), { registry: 'docker.io', name: 'bitnami/redis', tag: '7', digest: null });
  t.same(parseImageRef('index.docker.io/alpine').registry, 'docker.io');
});

t.test('a first segment with a dot, a port or localhost is the registry', async (t) => {
  t.same(parseImageRef('ghcr.io/org/app:v1'), { registry: 'ghcr.io', name: 'org/app', tag: 'v1', digest: null });
  t.same(parseImageRef('localhost:5000/x'), { registry: 'localhost:5000', name: 'x', tag: 'latest', digest: null });
  t.same(parseImageRef('localhost/x:1').registry, 'localhost');
  t.same(parseImageRef('registry.k8s.io/pause:3.9').name, 'pause', 'no library/ outside Docker Hub');
});

t.test('digests, with or without a tag', async (t) => {
  const d = `sha256:${'a'.repeat(64)}`;
  t.same(parseImageRef(`alpine@${d}`), { registry: 'docker.io', name: 'library/alpine', tag: null, digest: d });
  t.same(parseImageRef(`quay.io/x/y:1@${d}`), { registry: 'quay.io', name: 'x/y', tag: '1', digest: d });
  t.equal(formatImageRef(parseImageRef(`quay.io/x/y:1@${d}`)), `quay.io/x/y:1@${d}`);
});

t.test('bad references are refused with NAME_INVALID', async (t) => {
  for (const bad of ['', 'Alpine', 'alpine:', 'alpine@sha256:short', 'a//b', '../x', 'x:-bad', 'ghcr.io/', 'bad_host.io:99999999/x']) {
    t.throws(() => parseImageRef(bad), { code: 'NAME_INVALID' }, JSON.stringify(bad));
  }
});
