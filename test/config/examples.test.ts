// The examples in config/ work verbatim: each is checked against what stevedore generates or
// accepts (the podman and containerd e2e tests use the same files / generator).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { configTomlSnippet, renderDefaultHostsToml, renderHostsToml } from '../../lib/cli/containerd-config.js';
import { parseConfig } from '../../lib/config/config.js';
import { parseSize } from '../../lib/config/units.js';

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

interface Container {
  name: string;
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string } } }>;
  ports?: Array<{ name: string; containerPort: number; hostPort?: number }>;
  readinessProbe?: { httpGet: { path: string; port: string | number } };
  livenessProbe?: { httpGet: { path: string; port: string | number } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean };
  volumeMounts?: Array<{ name: string; mountPath: string }>;
}
interface NodePodSpec {
  hostNetwork?: boolean;
  dnsPolicy?: string;
  tolerations?: unknown[];
  restartPolicy?: string;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  initContainers?: Container[];
  containers: Container[];
  volumes?: Array<{ name: string; emptyDir?: { sizeLimit?: string }; configMap?: { name: string }; hostPath?: unknown }>;
}
interface DaemonSetSpec {
  selector: { matchLabels: Record<string, string> };
  template: { metadata: { labels: Record<string, string> }; spec: NodePodSpec };
}
/** The keys of the node's stevedore.yaml this test reads, before parsing (`node:` is not in Config yet). */
interface NodeYaml {
  listen: string;
  storage: { path: string; maxSize: string };
  metadata: { redis: string };
  node: { central: { url: string }; peers: { advertise: string; token: string } };
}

t.test('the Kubernetes node-local tier: a stevedore on every node, containerd pointed at it first and at the central one second', async (t) => {
  const parsed = parseAllDocuments(read('config/kubernetes/node.yaml'));
  for (const d of parsed) t.same(d.errors, [], 'every document parses');
  const docs = parsed.map((d) => d.toJS() as ClusterDoc);
  t.same(docs.map((d) => d.kind), ['ConfigMap', 'DaemonSet', 'ConfigMap', 'DaemonSet']);
  for (const d of docs) {
    t.ok(d.apiVersion && d.kind && d.metadata?.name, `${d.kind} ${d.metadata?.name}: apiVersion, kind, metadata.name`);
    t.equal(d.metadata.namespace, 'stevedore', `${d.kind} ${d.metadata.name} is in the stevedore namespace`);
  }
  const named = (kind: string, name: string, from: ClusterDoc[] = docs): ClusterDoc => {
    const doc = from.find((d) => d.kind === kind && d.metadata.name === name);
    if (!doc) throw new Error(`no ${kind} ${name}`);
    return doc;
  };
  // What it sits in front of: the central stevedore's Service and Redis (cluster.yaml; the
  // single-instance stevedore.yaml has the same Service).
  const cluster = parseAllDocuments(read('config/kubernetes/cluster.yaml')).map((d) => d.toJS() as ClusterDoc);
  const centralSvc = named('Service', 'stevedore', cluster);
  const central = centralSvc.spec as { selector: Record<string, string>; clusterIP: string; ports: Array<{ port: number }> };
  const redisSvc = named('Service', 'stevedore-redis', cluster);

  const ds = named('DaemonSet', 'stevedore-node').spec as unknown as DaemonSetSpec;
  const pod = ds.template.spec;
  const podLabels = ds.template.metadata.labels;
  const c = pod.containers[0]!;
  const env = (name: string): NonNullable<Container['env']>[number] | undefined => c.env?.find((e) => e.name === name);

  // The embedded configuration, as the container sees it: its literal env values, NODE_IP and the token.
  const cm = named('ConfigMap', 'stevedore-node-config');
  const yamlText = cm.data!['stevedore.yaml']!;
  const raw = parseYaml(yamlText) as NodeYaml;
  const containerEnv = Object.fromEntries((c.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value]));
  t.doesNotThrow(
    () => parseConfig(parseYaml(yamlText), { env: { ...containerEnv, NODE_IP: '192.0.2.7', STEVEDORE_PEER_TOKEN: 'a-token-of-32-characters-000000' } }),
    'the embedded stevedore.yaml is a valid configuration, node: keys included',
  );

  // Listening: the same port in the config, the env override the image needs, and the pod.
  const port = Number(raw.listen.split(':').pop());
  t.equal(port, 5001);
  t.equal(env('STEVEDORE_LISTEN')?.value, raw.listen, "the image's STEVEDORE_LISTEN (which wins over listen) is set to listen");
  t.same(c.ports, [{ name: 'http', containerPort: port, hostPort: port }], 'the port, declared as a hostPort');
  t.equal(pod.hostNetwork, true, "hostNetwork: 127.0.0.1:5001 in the node's network namespace is this pod");
  t.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet', 'cluster DNS (for the central Service and Redis) despite hostNetwork');

  // node: the central Service, this node's address for its peers, the token from the Secret.
  const centralUrl = new URL(raw.node.central.url);
  t.equal(centralUrl.hostname, `${centralSvc.metadata.name}.${centralSvc.metadata.namespace}.svc`, 'node.central.url names the central Service');
  t.equal(Number(centralUrl.port || 80), central.ports[0]!.port, "on the central Service's port");
  t.equal(raw.node.peers.advertise, `http://\${NODE_IP}:${port}`, 'peers reach this stevedore on the node address and its port');
  t.same(env('NODE_IP')?.valueFrom, { fieldRef: { fieldPath: 'status.hostIP' } }, 'NODE_IP from the downward API');
  t.equal(raw.node.peers.token, '${STEVEDORE_PEER_TOKEN}');
  const token = env('STEVEDORE_PEER_TOKEN');
  t.notOk(token?.value, 'the peer token is not written in the manifest');
  t.ok(token?.valueFrom?.secretKeyRef?.name && token.valueFrom.secretKeyRef.key, 'the peer token comes from a Secret');
  const redisUrl = new URL(raw.metadata.redis);
  t.equal(redisUrl.hostname.split('.')[0], redisSvc.metadata.name, 'metadata.redis names the Redis Service');

  // The store: a small emptyDir, storage.maxSize below its sizeLimit.
  t.equal(c.volumeMounts?.find((v) => v.name === 'data')?.mountPath, raw.storage.path, 'the store is on the data volume');
  const sizeLimit = pod.volumes?.find((v) => v.name === 'data')?.emptyDir?.sizeLimit;
  t.ok(sizeLimit, 'the data volume is an emptyDir with a sizeLimit');
  t.ok(parseSize(raw.storage.maxSize)! < parseSize(sizeLimit ?? '0')!, `storage.maxSize ${raw.storage.maxSize} is below the sizeLimit ${sizeLimit}`);
  const configMount = c.volumeMounts?.find((v) => v.name === 'config')?.mountPath;
  t.same(c.args, ['serve', '--config', `${configMount}/stevedore.yaml`], 'the --config file is on the config mount');
  t.equal(pod.volumes?.find((v) => v.name === 'config')?.configMap?.name, cm.metadata.name);

  // The pod: probes, resources, non-root, read-only root, selected by its DaemonSet and not by the central Service.
  t.same(c.readinessProbe?.httpGet, { path: '/readyz', port: 'http' });
  t.same(c.livenessProbe?.httpGet, { path: '/healthz', port: 'http' });
  t.ok(c.resources?.requests?.cpu && c.resources.requests.memory && c.resources.limits?.memory, 'cpu and memory requests, a memory limit');
  t.equal(pod.securityContext?.runAsNonRoot, true, 'runs as non-root');
  t.equal(c.securityContext?.readOnlyRootFilesystem, true, 'read-only root filesystem');
  t.equal(c.securityContext?.allowPrivilegeEscalation, false);
  t.equal(pod.restartPolicy, 'Always', 'the pod is restarted when stevedore exits after an uncaught exception');
  t.ok(selects(ds.selector.matchLabels, podLabels), "the DaemonSet's selector matches its pods");
  t.notOk(selects(central.selector, podLabels), 'the central Service does not send traffic to the node-local pods');

  // The installer: containerd-hosts-daemonset.yaml with this node's stevedore first, the central Service second.
  const hosts = named('ConfigMap', 'containerd-hosts-node').data!;
  const mirrors = [`http://127.0.0.1:${port}`, `http://${central.clusterIP}:${central.ports[0]!.port}`];
  t.same(Object.keys(hosts).sort(), REGISTRIES.map((r) => `${r.replace(/\./g, '_')}.toml`).sort());
  for (const reg of REGISTRIES) t.equal(hosts[`${reg.replace(/\./g, '_')}.toml`], renderHostsToml(reg, mirrors), `${reg}: what containerd-config writes for ${mirrors.join(', ')}`);
  const installer = named('DaemonSet', 'containerd-hosts-node').spec as unknown as DaemonSetSpec;
  const single = parseAllDocuments(read('config/kubernetes/containerd-hosts-daemonset.yaml')).map((d) => d.toJS() as ClusterDoc);
  const singlePod = (named('DaemonSet', 'containerd-hosts', single).spec as unknown as DaemonSetSpec).template.spec;
  t.ok(selects(installer.selector.matchLabels, installer.template.metadata.labels), "the installer's selector matches its pods");
  t.same(installer.template.spec.initContainers, singlePod.initContainers, 'the same install step as containerd-hosts-daemonset.yaml');
  t.same(installer.template.spec.volumes?.find((v) => v.name === 'certs-d'), singlePod.volumes?.find((v) => v.name === 'certs-d'), "into the node's /etc/containerd/certs.d");
  t.equal(installer.template.spec.volumes?.find((v) => v.name === 'hosts')?.configMap?.name, 'containerd-hosts-node', 'from the two-host files');
  t.same(installer.template.spec.tolerations, pod.tolerations, 'on the same nodes as the node-local stevedore');
});
