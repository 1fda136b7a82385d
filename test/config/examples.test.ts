// The examples in config/ work verbatim: each is checked against what stevedore generates or
// accepts (the podman and containerd e2e tests use the same files / generator).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { renderHostsToml } from '../../lib/cli/containerd-config.js';
import { parseConfig } from '../../lib/config/config.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const read = (p: string): string => readFileSync(path.join(ROOT, p), 'utf8');
const REGISTRIES = ['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io'];

t.test('containerd hosts.toml examples are exactly what containerd-config writes', async (t) => {
  for (const reg of REGISTRIES) {
    t.equal(read(`config/containerd/certs.d/${reg}/hosts.toml`), renderHostsToml(reg, 'http://stevedore.example:5000'), reg);
  }
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

interface K8sDoc {
  kind: string;
  metadata: { name: string };
  data?: Record<string, string>;
  spec?: Record<string, unknown>;
}

t.test('the Kubernetes manifests: a valid stevedore config, probes, store on the volume', async (t) => {
  const docs = parseAllDocuments(read('config/kubernetes/stevedore.yaml')).map((d) => d.toJS() as K8sDoc);
  t.same(docs.map((d) => d.kind), ['Namespace', 'ConfigMap', 'Service', 'StatefulSet']);
  const cm = docs.find((d) => d.kind === 'ConfigMap')!;
  const config = parseConfig(parseYaml(cm.data!['stevedore.yaml']!), { env: {} });
  t.equal(config.listen.port, 5000);
  const sts = docs.find((d) => d.kind === 'StatefulSet')!;
  const pod = (sts.spec as { template: { spec: { restartPolicy?: string; containers: Array<Record<string, unknown>> } } }).template.spec;
  t.equal(pod.restartPolicy, 'Always', 'the pod is restarted when stevedore exits after an uncaught exception');
  const c = pod.containers[0] as {
    args: string[];
    readinessProbe: { httpGet: { path: string } };
    livenessProbe: { httpGet: { path: string } };
    volumeMounts: Array<{ name: string; mountPath: string }>;
  };
  t.same(c.args, ['serve', '--config', '/etc/stevedore/stevedore.yaml']);
  t.equal(c.readinessProbe.httpGet.path, '/readyz');
  t.equal(c.livenessProbe.httpGet.path, '/healthz');
  t.equal(c.volumeMounts.find((v) => v.name === 'data')?.mountPath, config.storage.path, 'the store is on the persistent volume');
  const svc = docs.find((d) => d.kind === 'Service')!;
  t.equal((svc.spec as { clusterIP: string }).clusterIP, '10.96.0.50');
});

t.test('the README runs the container image with a restart policy', async (t) => {
  t.match(read('README.md'), /docker run -d --restart unless-stopped /);
});

t.test('the DaemonSet installs what containerd-config writes for the Service address', async (t) => {
  const docs = parseAllDocuments(read('config/kubernetes/containerd-hosts-daemonset.yaml')).map((d) => d.toJS() as K8sDoc);
  t.same(docs.map((d) => d.kind), ['ConfigMap', 'DaemonSet']);
  const data = docs[0]!.data!;
  for (const reg of REGISTRIES) t.equal(data[`${reg.replace(/\./g, '_')}.toml`], renderHostsToml(reg, 'http://10.96.0.50:5000'), reg);
});
