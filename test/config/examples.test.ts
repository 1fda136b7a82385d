// The examples in config/ work verbatim: each is checked against what stevedore generates or
// accepts (the podman and containerd e2e tests use the same files / generator). The Kubernetes
// manifests are rendered and checked in kubernetes.test.ts.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse as parseYaml } from 'yaml';
import { parseConfig } from '../../lib/config/config.js';
import { configTomlSnippet, renderDefaultHostsToml, renderHostsToml } from '../../lib/cli/containerd-config.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const read = (p: string): string => readFileSync(path.join(ROOT, p), 'utf8');
const REGISTRIES = ['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io'];

t.test('containerd hosts.toml examples are exactly what containerd-config writes', async (t) => {
  for (const reg of REGISTRIES) {
    t.equal(read(`config/containerd/certs.d/${reg}/hosts.toml`), renderHostsToml(reg, 'http://stevedore.example:5000'), reg);
  }
});

t.test('the node-local tier hosts.toml examples name the node-local stevedore first, the central one second', async (t) => {
  for (const reg of REGISTRIES) {
    t.equal(
      read(`config/containerd/node/certs.d/${reg}/hosts.toml`),
      renderHostsToml(reg, ['http://127.0.0.1:5001', 'http://stevedore.example:5000']),
      reg,
    );
  }
});

t.test('the containerd config.toml lines and containerd 2.x _default/hosts.toml are what containerd-config prints and writes', async (t) => {
  t.equal(read('config/containerd/config.toml'), configTomlSnippet(1, '/etc/containerd/certs.d'), '1.6 / 1.7');
  t.equal(read('config/containerd/containerd2/config.toml'), configTomlSnippet(2, '/etc/containerd/certs.d'), '2.x');
  t.equal(read('config/containerd/containerd2/certs.d/_default/hosts.toml'), renderDefaultHostsToml('http://stevedore.example:5000'), '_default');
});

t.test('the Docker daemon.json mirrors Docker Hub through stevedore', async (t) => {
  const doc = JSON.parse(read('config/docker/daemon.json')) as { 'registry-mirrors': string[]; 'insecure-registries': string[] };
  t.same(doc['registry-mirrors'], ['http://stevedore.example:5000']);
  t.same(doc['insecure-registries'], ['stevedore.example:5000']);
});

t.test('the k3s registries.yaml points every registry at one endpoint (k3s sends ns)', async (t) => {
  const doc = parseYaml(read('config/k3s/registries.yaml')) as { mirrors: Record<string, { endpoint: string[] }> };
  t.same(Object.keys(doc.mirrors).sort(), [...REGISTRIES].sort());
  for (const m of Object.values(doc.mirrors)) t.same(m.endpoint, ['http://stevedore.example:5000']);
});

t.test('the podman registries.conf mirrors each registry under its own path prefix', async (t) => {
  const conf = read('config/podman/registries.conf');
  for (const reg of REGISTRIES) {
    t.match(conf, new RegExp(`prefix = "${reg.replace(/\./g, '\\.')}"\\nlocation = "${reg.replace(/\./g, '\\.')}"\\n\\[\\[registry\\.mirror\\]\\]\\nlocation = "stevedore\\.example:5000/${reg.replace(/\./g, '\\.')}"`), reg);
  }
});

t.test('the README runs the container image with a restart policy', async (t) => {
  t.match(read('README.md'), /docker run -d --restart unless-stopped /);
});

/** The first ```yaml block after `heading` in the README. */
function readmeYaml(heading: string): unknown {
  const text = read('README.md');
  const at = text.indexOf(`\n${heading}\n`);
  const m = /```yaml\n([\s\S]*?)```/.exec(text.slice(at));
  if (at < 0 || !m) throw new Error(`no yaml block under ${heading}`);
  return parseYaml(m[1]!);
}

t.test('the README\'s upstream credentials example is a valid configuration, one upstream per kind', async (t) => {
  const doc = readmeYaml('### Upstream credentials') as Record<string, unknown>;
  const c = parseConfig({ ...doc, defaultUpstream: null }, { env: { GHCR_PAT: 'ghp_x' } });
  const kinds = [...c.upstreams.values()].map((u) => [u.name, u.credentialSource?.type ?? (u.credentials ? 'password' : null)]);
  t.same(kinds, [
    ['registry.example.com', 'basic'],
    ['123456789012.dkr.ecr.eu-west-1.amazonaws.com', 'ecr'],
    ['europe-docker.pkg.dev', 'gcp'],
    ['myregistry.azurecr.io', 'acr'],
    ['ghcr.io', 'password'],
    ['quay.io', 'helper'],
  ]);
});

t.test('the README\'s refresh-ahead example is the defaults', async (t) => {
  const doc = readmeYaml('### Refresh-ahead for hot tags');
  t.same(parseConfig(doc).cache.refreshAhead, parseConfig({}).cache.refreshAhead);
});

t.test("the README's S3 example is a valid configuration, and its table lists every storage.s3 key with its default", async (t) => {
  const heading = '### Storing in S3 (or Ceph RGW, MinIO, R2)';
  const c = parseConfig(readmeYaml(heading));
  t.equal(c.storage.backend, 's3');
  t.equal(c.storage.s3?.bucket, 'stevedore-cache');
  // The table's rows: | `key`, `key` | default | what |
  const text = read('README.md');
  const section = text.slice(text.indexOf(`\n${heading}\n`), text.indexOf('\n### ', text.indexOf(`\n${heading}\n`) + 1));
  const rows = new Map<string, string>();
  for (const m of section.matchAll(/^\| ((?:`\w+`(?:, )?)+) \| ([^|]+) \|/gm)) for (const k of m[1]!.matchAll(/`(\w+)`/g)) rows.set(k[1]!, m[2]!.trim());
  const defaults = parseConfig({ storage: { backend: 's3', s3: { bucket: 'b-b' } } }).storage.s3!;
  t.same([...rows.keys()].sort(), Object.keys(defaults).sort(), 'one row for every key of storage.s3');
  // Defaults written as values are the schema's (sizes and durations as configured).
  const written: Record<string, unknown> = { prefix: '', region: 'us-east-1', forcePathStyle: false, redirect: false, redirectTTL: 20 * 60_000, partSize: 16 * 1024 * 1024, reconcileInterval: 3_600_000 };
  for (const [k, v] of Object.entries(written)) t.same(defaults[k as keyof typeof defaults], v, `storage.s3.${k} defaults to ${rows.get(k)}`);
  t.same([rows.get('prefix'), rows.get('region'), rows.get('forcePathStyle'), rows.get('redirect'), rows.get('redirectTTL'), rows.get('partSize'), rows.get('reconcileInterval')], ['`""`', '`us-east-1`', '`false`', '`false`', '`20m`', '`16MiB`', '`1h`']);
});
