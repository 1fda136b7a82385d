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

t.test('the node-local tier hosts.toml examples name the node-local stevedore first, the central one second', async (t) => {
  for (const reg of REGISTRIES) {
    t.equal(
      read(`config/containerd/node/certs.d/${reg}/hosts.toml`),
      renderHostsToml(reg, ['http://127.0.0.1:5001', 'http://stevedore.example:5000']),
      reg,
    );
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

interface PodSpec {
  securityContext?: unknown;
  terminationGracePeriodSeconds?: number;
  restartPolicy?: string;
  affinity?: {
    podAntiAffinity?: {
      preferredDuringSchedulingIgnoredDuringExecution?: Array<{ podAffinityTerm: { topologyKey: string; labelSelector: { matchLabels: Record<string, string> } } }>;
    };
  };
  containers: Array<Record<string, unknown> & { name: string; volumeMounts?: Array<{ name: string; mountPath: string }> }>;
  volumes?: Array<{ name: string; persistentVolumeClaim?: { claimName: string }; configMap?: { name: string } }>;
}
interface Workload {
  replicas?: number;
  selector: { matchLabels: Record<string, string> };
  strategy?: { type: string; rollingUpdate?: { maxUnavailable?: number | string; maxSurge?: number | string } };
  template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
}
interface ClusterDoc extends K8sDoc {
  apiVersion: string;
  metadata: { name: string; namespace?: string };
}

/** A selector matches a pod when every one of its labels is on the pod. */
const selects = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

t.test('the Kubernetes cluster-mode manifests: replicas on a shared volume, one Redis', async (t) => {
  const parsed = parseAllDocuments(read('config/kubernetes/cluster.yaml'));
  for (const d of parsed) t.same(d.errors, [], 'every document parses');
  const docs = parsed.map((d) => d.toJS() as ClusterDoc);
  t.same(
    docs.map((d) => d.kind),
    ['Namespace', 'ConfigMap', 'PersistentVolumeClaim', 'Deployment', 'PodDisruptionBudget', 'Service', 'Deployment', 'Service'],
  );
  for (const d of docs) {
    t.ok(d.apiVersion && d.kind && d.metadata?.name, `${d.kind} ${d.metadata?.name}: apiVersion, kind, metadata.name`);
    if (d.kind !== 'Namespace') t.equal(d.metadata.namespace, 'stevedore', `${d.kind} ${d.metadata.name} is in the stevedore namespace`);
  }
  const named = (kind: string, name: string): ClusterDoc => {
    const doc = docs.find((d) => d.kind === kind && d.metadata.name === name);
    if (!doc) throw new Error(`no ${kind} ${name}`);
    return doc;
  };

  const single = parseAllDocuments(read('config/kubernetes/stevedore.yaml')).map((d) => d.toJS() as K8sDoc);
  const sts = (single.find((d) => d.kind === 'StatefulSet')!.spec as unknown as Workload).template.spec;
  const deploy = named('Deployment', 'stevedore');
  const dep = deploy.spec as unknown as Workload;
  const pod = dep.template.spec;
  const podLabels = dep.template.metadata.labels;
  const redisDeploy = named('Deployment', 'stevedore-redis');
  const redis = redisDeploy.spec as unknown as Workload;
  const redisSvc = named('Service', 'stevedore-redis');
  const redisSvcSpec = redisSvc.spec as { selector: Record<string, string>; ports: Array<{ port: number }> };

  // The embedded configuration: valid, cluster mode on, Redis at the Redis Service.
  const cm = named('ConfigMap', 'stevedore-cluster-config');
  const config = parseConfig(parseYaml(cm.data!['stevedore.yaml']!), { env: {} });
  t.equal(config.listen.port, 5000);
  t.ok(config.storage.maxSize, 'storage.maxSize is set (one replica evicts for all)');
  t.ok(config.metadata.redis, 'metadata.redis is set: cluster mode');
  const redisUrl = new URL(config.metadata.redis!);
  t.equal(redisUrl.protocol, 'redis:');
  t.equal(redisUrl.hostname.split('.')[0], redisSvc.metadata.name, 'metadata.redis names the Redis Service');
  t.equal(Number(redisUrl.port || 6379), redisSvcSpec.ports[0]!.port, "on the Redis Service's port");

  // The shared store.
  const pvc = named('PersistentVolumeClaim', 'stevedore-store');
  t.same((pvc.spec as { accessModes: string[] }).accessModes, ['ReadWriteMany'], 'every replica mounts the same volume');

  // The stevedore replicas.
  t.ok((dep.replicas ?? 1) >= 2, 'several replicas');
  t.ok(selects(dep.selector.matchLabels, podLabels), "the Deployment's selector matches its pods");
  t.equal(pod.restartPolicy, 'Always', 'the pod is restarted when stevedore exits after an uncaught exception');
  t.ok((pod.terminationGracePeriodSeconds ?? 30) >= (sts.terminationGracePeriodSeconds ?? 30), 'at least the single instance\'s grace period to drain');
  t.equal(dep.strategy?.type, 'RollingUpdate');
  t.ok([0, 1].includes(Number(dep.strategy?.rollingUpdate?.maxUnavailable)), 'a rollout keeps replicas available');
  const anti = pod.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution ?? [];
  t.ok(
    anti.some((a) => a.podAffinityTerm.topologyKey === 'kubernetes.io/hostname' && selects(a.podAffinityTerm.labelSelector.matchLabels, podLabels)),
    'replicas are spread over nodes',
  );
  t.same(pod.securityContext, sts.securityContext, 'the same pod securityContext as the single instance');
  const c = pod.containers[0] as PodSpec['containers'][number] & {
    readinessProbe: { httpGet: { path: string } };
    livenessProbe: { httpGet: { path: string } };
  };
  const single0 = sts.containers[0]!;
  for (const key of ['image', 'args', 'ports', 'readinessProbe', 'livenessProbe', 'resources', 'securityContext']) {
    t.same(c[key], single0[key], `the container's ${key} is the single instance's`);
  }
  t.equal(c.readinessProbe.httpGet.path, '/readyz');
  t.equal(c.livenessProbe.httpGet.path, '/healthz');
  t.equal(c.volumeMounts?.find((v) => v.name === 'data')?.mountPath, config.storage.path, 'the store is on the shared volume');
  t.equal(pod.volumes?.find((v) => v.name === 'data')?.persistentVolumeClaim?.claimName, pvc.metadata.name, 'the data volume is the ReadWriteMany claim');
  const configMount = c.volumeMounts?.find((v) => v.name === 'config')?.mountPath;
  t.same((c.args as string[]).slice(-1), [`${configMount}/stevedore.yaml`], 'the --config file is on the config mount');
  t.equal(pod.volumes?.find((v) => v.name === 'config')?.configMap?.name, cm.metadata.name);

  // Disruptions take one replica at a time.
  const pdb = named('PodDisruptionBudget', 'stevedore');
  t.equal(pdb.apiVersion, 'policy/v1');
  const pdbSpec = pdb.spec as { selector: { matchLabels: Record<string, string> }; minAvailable?: number; maxUnavailable?: number };
  t.ok(selects(pdbSpec.selector.matchLabels, podLabels), "the PDB selects the Deployment's pods");
  t.ok(pdbSpec.maxUnavailable === 1 || (pdbSpec.minAvailable !== undefined && pdbSpec.minAvailable >= 1 && pdbSpec.minAvailable < dep.replicas!), 'the PDB lets one replica go at a time');

  // The Service: stevedore's pods only, at the address containerd-hosts-daemonset.yaml uses.
  const svc = named('Service', 'stevedore').spec as { selector: Record<string, string>; clusterIP: string; ports: Array<{ port: number }> };
  t.ok(selects(svc.selector, podLabels), "the Service selects stevedore's pods");
  t.notOk(selects(svc.selector, redis.template.metadata.labels), 'and not the Redis pod');
  t.equal(svc.clusterIP, '10.96.0.50', 'the ClusterIP the DaemonSet points containerd at');
  t.same(svc.ports.map((p) => p.port), [5000]);

  // Redis: one instance, coordination state only.
  t.equal(redis.replicas, 1);
  t.equal(redis.strategy?.type, 'Recreate', 'never two Redis instances behind the Service');
  t.ok(selects(redis.selector.matchLabels, redis.template.metadata.labels), "the Redis Deployment's selector matches its pod");
  t.ok(selects(redisSvcSpec.selector, redis.template.metadata.labels), 'the Redis Service selects the Redis pod');
  t.notOk(selects(redisSvcSpec.selector, podLabels), "and not stevedore's pods");
  t.same(redisSvcSpec.ports.map((p) => p.port), [6379]);
  const r = redis.template.spec.containers[0]! as PodSpec['containers'][number] & { image: string; args: string[]; readinessProbe?: { exec?: unknown; tcpSocket?: unknown }; resources?: unknown };
  t.match(r.image, /^redis:7/);
  t.same(r.args, ['redis-server', '--save', '', '--appendonly', 'no'], 'persistence off');
  t.ok(r.readinessProbe?.exec ?? r.readinessProbe?.tcpSocket, 'a readiness probe');
  t.ok(r.resources, 'resources');
  t.equal((redis.template.spec.securityContext as { runAsNonRoot?: boolean }).runAsNonRoot, true, 'Redis runs as non-root');
});
