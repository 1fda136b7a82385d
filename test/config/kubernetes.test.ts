// The Kubernetes manifests (config/kubernetes/: a kustomize base and overlays) as a cluster gets
// them: each overlay rendered by the real `kubectl kustomize` (Debian's kubernetes-client, from
// `npm run test:setup`; a missing kubectl fails this test), every object validated against the
// Kubernetes schemas (kubernetes-models), then what the README promises about them checked on the
// rendered objects: non-root, read-only root filesystems, probes, resources sized from
// bench/RESULTS.md, the PodDisruptionBudget, the TLS Secret, and a stevedore.yaml in every
// ConfigMap that stevedore itself accepts.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { renderHostsToml } from '../../lib/cli/containerd-config.js';
import { parseConfig } from '../../lib/config/config.js';
import { configSchema } from '../../lib/config/schema.js';
import { parseSize } from '../../lib/config/units.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const read = (p: string): string => readFileSync(path.join(ROOT, p), 'utf8');
const KUBECTL = process.env.KUBECTL ?? 'kubectl';
const OVERLAYS = ['single', 'single-tls', 'cluster', 'cluster-s3', 'node', 'containerd-hosts'] as const;
type Overlay = (typeof OVERLAYS)[number];
const REGISTRIES = ['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io'];
const hostsKey = (reg: string): string => `${reg.replace(/\./g, '_')}.toml`;
/** Stand-ins for what the pods get from the downward API and from Secrets (the manifests hold no secret). */
const STAND_INS = {
  NODE_IP: '192.0.2.7',
  POD_IP: '192.0.2.8',
  STEVEDORE_PEER_TOKEN: 'a-token-of-32-characters-000000',
  STEVEDORE_CLUSTER_TOKEN: 'a-token-of-32-characters-111111',
  AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
  AWS_SECRET_ACCESS_KEY: 'a-secret-key-example',
  STEVEDORE_REDIS_PASSWORD: 'a-redis-password-of-the-secret',
};

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string } };
}
interface Probe {
  httpGet?: { path: string; port: string | number; scheme?: string };
  exec?: unknown;
  tcpSocket?: unknown;
}
interface SecurityContext {
  runAsNonRoot?: boolean;
  runAsUser?: number;
  runAsGroup?: number;
  fsGroup?: number;
  readOnlyRootFilesystem?: boolean;
  allowPrivilegeEscalation?: boolean;
  privileged?: boolean;
  capabilities?: { drop?: string[]; add?: string[] };
  seccompProfile?: { type: string };
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: EnvVar[];
  ports?: Array<{ name?: string; containerPort: number; hostPort?: number }>;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: SecurityContext;
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
}
interface Volume {
  name: string;
  configMap?: { name: string };
  secret?: { secretName: string; optional?: boolean };
  persistentVolumeClaim?: { claimName: string };
  emptyDir?: { sizeLimit?: string };
  hostPath?: { path: string; type?: string };
}
interface PodSpec {
  hostNetwork?: boolean;
  dnsPolicy?: string;
  automountServiceAccountToken?: boolean;
  tolerations?: unknown[];
  restartPolicy?: string;
  terminationGracePeriodSeconds?: number;
  securityContext?: SecurityContext;
  affinity?: {
    podAntiAffinity?: {
      preferredDuringSchedulingIgnoredDuringExecution?: Array<{ podAffinityTerm: { topologyKey: string; labelSelector: { matchLabels: Record<string, string> } } }>;
    };
  };
  initContainers?: Container[];
  containers: Container[];
  volumes?: Volume[];
}
interface WorkloadSpec {
  replicas?: number;
  selector: { matchLabels: Record<string, string> };
  strategy?: { type: string; rollingUpdate?: { maxUnavailable?: number | string; maxSurge?: number | string } };
  template: { metadata: { labels: Record<string, string> }; spec: PodSpec };
  volumeClaimTemplates?: Array<{ metadata: { name: string }; spec: { accessModes: string[]; resources: { requests: { storage: string } } } }>;
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  data?: Record<string, string>;
  spec?: unknown;
}
interface ServiceSpec {
  selector: Record<string, string>;
  clusterIP?: string;
  ports: Array<{ name?: string; port: number; targetPort?: string | number }>;
}

/**
 * `kubectl kustomize config/kubernetes/overlays/NAME`, parsed; fails on any warning but those kubectl
 * 1.27+ gives for `bases:` and `patchesStrategicMerge:` (the fields Debian's kubectl 1.20, kustomize
 * v2.0.3, understands; their successors it does not).
 */
function render(overlay: Overlay): K8sObject[] {
  const dir = path.join(ROOT, 'config/kubernetes/overlays', overlay);
  const r = spawnSync(KUBECTL, ['kustomize', dir], { encoding: 'utf8' });
  if (r.error) throw new Error(`${KUBECTL} kustomize: ${r.error.message} (npm run test:setup installs Debian's kubernetes-client)`);
  if (r.status !== 0) throw new Error(`${KUBECTL} kustomize ${dir} exited ${r.status}: ${r.stderr}`);
  const unexpected = r.stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith("# Warning: 'bases' is deprecated.") && !l.startsWith("# Warning: 'patchesStrategicMerge' is deprecated."));
  if (unexpected.length > 0) throw new Error(`${KUBECTL} kustomize ${dir} warned:\n${unexpected.join('\n')}`);
  return parseAllDocuments(r.stdout).map((d) => {
    if (d.errors.length > 0) throw new Error(`${overlay}: ${d.errors.map((e) => e.message).join('; ')}`);
    return d.toJS() as K8sObject;
  });
}

const rendered = new Map<Overlay, K8sObject[]>(OVERLAYS.map((o) => [o, render(o)]));
const objects = (overlay: Overlay): K8sObject[] => rendered.get(overlay)!;
const find = (overlay: Overlay, kind: string, name: string): K8sObject => {
  const o = objects(overlay).find((d) => d.kind === kind && d.metadata.name === name);
  if (!o) throw new Error(`${overlay}: no ${kind} ${name}`);
  return o;
};
const workload = (overlay: Overlay, kind: string, name: string): WorkloadSpec => find(overlay, kind, name).spec as WorkloadSpec;
const WORKLOADS = new Set(['Deployment', 'StatefulSet', 'DaemonSet']);
const workloads = (overlay: Overlay): Array<{ obj: K8sObject; spec: WorkloadSpec }> =>
  objects(overlay).filter((o) => WORKLOADS.has(o.kind)).map((obj) => ({ obj, spec: obj.spec as WorkloadSpec }));

/** A selector matches a pod when every one of its labels is on the pod. */
const selects = (selector: Record<string, string>, labels: Record<string, string>): boolean =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

/** A Kubernetes memory quantity in bytes (the binary suffixes used here). */
function quantity(q: string): number {
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(q);
  if (!m) throw new Error(`not a quantity this test reads: ${q}`);
  return Number(m[1]) * { '': 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30 }[m[2] ?? '']!;
}

/** The image's environment (Dockerfile ENV): what the container starts with before its own env. */
function imageEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const m of read('Dockerfile').matchAll(/^ENV\s+((?:.*\\\n)*.*)$/gm)) {
    for (const pair of m[1]!.replace(/\\\n/g, ' ').trim().split(/\s+/)) {
      const [k, v] = pair.split('=');
      env[k!] = v!;
    }
  }
  return env;
}

/** The image's stevedore user (Dockerfile `USER uid:gid`). */
const IMAGE_USER = (() => {
  const m = /^USER (\d+):(\d+)$/m.exec(read('Dockerfile'));
  if (!m) throw new Error('Dockerfile: no USER uid:gid');
  return { uid: Number(m[1]), gid: Number(m[2]) };
})();

/** Largest peak RSS (MiB) among bench/RESULTS.md's "peak RSS" targets whose label matches. */
function benchPeak(label: RegExp): number {
  const peaks = [...read('bench/RESULTS.md').matchAll(/^\| 6\. stevedore peak RSS[^|]*?: ([^|]+) \| ([\d.]+) MiB/gm)]
    .filter((m) => label.test(m[1]!))
    .map((m) => Number(m[2]));
  if (peaks.length === 0) throw new Error(`bench/RESULTS.md: no peak RSS target matching ${label}`);
  return Math.max(...peaks);
}

/** Validates one rendered object with the kubernetes-models class for its apiVersion and kind. */
async function validate(o: K8sObject): Promise<void> {
  const mod = (await import(`kubernetes-models/${o.apiVersion}/${o.kind}`)) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = mod[o.kind];
  if (!Model) throw new Error(`kubernetes-models has no ${o.apiVersion} ${o.kind}`);
  new Model(o).validate();
}

t.test('every overlay renders with kubectl kustomize, and every object validates against the Kubernetes schemas', async (t) => {
  for (const overlay of OVERLAYS) {
    t.ok(objects(overlay).length > 0, `${overlay}: objects rendered`);
    for (const o of objects(overlay)) {
      const what = `${overlay}: ${o.apiVersion} ${o.kind} ${o.metadata.name}`;
      await t.resolves(validate(o), `${what} is valid`);
      t.equal(o.metadata.labels?.['app.kubernetes.io/part-of'], 'stevedore', `${what} is labelled part-of stevedore`);
      if (o.kind !== 'Namespace') t.equal(o.metadata.namespace, 'stevedore', `${what} is in the stevedore namespace`);
    }
  }
});

t.test('the schemas catch a broken object (the validator is not a no-op)', async (t) => {
  const sts = structuredClone(find('single', 'StatefulSet', 'stevedore'));
  (sts.spec as WorkloadSpec).template.spec.containers[0]!.ports![0]!.containerPort = 'http' as unknown as number;
  await t.rejects(validate(sts), /containerPort/);
});

t.test('every pod: non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp, requests and limits', async (t) => {
  for (const overlay of OVERLAYS) {
    for (const { obj, spec } of workloads(overlay)) {
      const pod = spec.template.spec;
      t.ok(selects(spec.selector.matchLabels, spec.template.metadata.labels), `${overlay} ${obj.kind} ${obj.metadata.name}: its selector matches its pods`);
      t.equal(pod.automountServiceAccountToken, false, `${overlay} ${obj.kind} ${obj.metadata.name}: no Kubernetes API token`);
      t.equal(pod.securityContext?.seccompProfile?.type, 'RuntimeDefault', `${overlay} ${obj.kind} ${obj.metadata.name}: seccomp RuntimeDefault`);
      for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
        const what = `${overlay} ${obj.metadata.name}/${c.name}`;
        const sc = c.securityContext ?? {};
        // The one exception: the installer's init container writes the node's root-owned
        // /etc/containerd/certs.d, as root without any capability.
        const installsOnHost = obj.metadata.name === 'containerd-hosts' && c.name === 'install';
        if (installsOnHost) {
          t.equal(sc.runAsUser, 0, `${what}: root, for the node's /etc/containerd/certs.d`);
        } else {
          t.equal(sc.runAsNonRoot ?? pod.securityContext?.runAsNonRoot, true, `${what}: runs as non-root`);
          t.ok((sc.runAsUser ?? pod.securityContext?.runAsUser ?? 0) > 0, `${what}: with a non-zero uid`);
        }
        t.equal(sc.readOnlyRootFilesystem, true, `${what}: read-only root filesystem`);
        t.equal(sc.allowPrivilegeEscalation, false, `${what}: no privilege escalation`);
        t.notOk(sc.privileged, `${what}: not privileged`);
        t.same(sc.capabilities, { drop: ['ALL'] }, `${what}: every capability dropped, none added`);
        const res = c.resources;
        t.ok(res?.requests?.cpu && res.requests.memory, `${what}: cpu and memory requests`);
        t.ok(res?.limits?.memory && quantity(res.limits.memory) > quantity(res.requests!.memory!), `${what}: a memory limit above the request`);
      }
    }
  }
});

t.test('single, cluster and cluster-s3 pods meet the Pod Security "restricted" level (node mode needs "privileged")', async (t) => {
  for (const overlay of ['single', 'cluster', 'cluster-s3'] as const) {
    for (const { obj, spec } of workloads(overlay)) {
      const pod = spec.template.spec;
      t.notOk(pod.hostNetwork, `${overlay} ${obj.metadata.name}: no hostNetwork`);
      t.notOk(pod.volumes?.some((v) => v.hostPath), `${overlay} ${obj.metadata.name}: no hostPath`);
      t.notOk(pod.containers.some((c) => c.ports?.some((p) => p.hostPort)), `${overlay} ${obj.metadata.name}: no hostPort`);
    }
  }
});

interface StevedorePod {
  overlay: Overlay;
  obj: K8sObject;
  spec: WorkloadSpec;
  c: Container;
  configMap: K8sObject;
  /** The embedded stevedore.yaml as written. */
  yamlText: string;
  /** The environment the container starts with: the image's, its own literal values, then STAND_INS. */
  env: Record<string, string>;
}
/** Every stevedore container (image stevedore) of every overlay, with its ConfigMap. */
const stevedorePods = (): StevedorePod[] =>
  OVERLAYS.flatMap((overlay) =>
    workloads(overlay).flatMap(({ obj, spec }) =>
      spec.template.spec.containers
        .filter((c) => c.name === 'stevedore')
        .map((c) => {
          const cmName = spec.template.spec.volumes?.find((v) => v.name === 'config')?.configMap?.name;
          const configMap = objects(overlay).find((o) => o.kind === 'ConfigMap' && o.metadata.name === cmName);
          if (!configMap) throw new Error(`${overlay} ${obj.metadata.name}: its config volume names no rendered ConfigMap (${cmName})`);
          const own = Object.fromEntries((c.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));
          const env = { ...imageEnv(), ...own, ...STAND_INS };
          return { overlay, obj, spec, c, configMap, yamlText: configMap.data!['stevedore.yaml']!, env };
        }),
    ),
  );

t.test("every stevedore container: probes on /healthz and /readyz, its ConfigMap's stevedore.yaml valid and in force", async (t) => {
  const pods = stevedorePods();
  t.same(
    pods.map((p) => `${p.overlay} ${p.obj.kind} ${p.obj.metadata.name}`),
    ['single StatefulSet stevedore', 'single-tls StatefulSet stevedore', 'cluster Deployment stevedore', 'cluster-s3 Deployment stevedore', 'node Deployment stevedore', 'node DaemonSet stevedore-node'],
  );
  for (const { overlay, obj, spec, c, configMap, yamlText, env } of pods) {
    const what = `${overlay} ${obj.kind} ${obj.metadata.name}`;
    t.match(c.image, /^registry\.example\/stevedore@sha256:[0-9a-f]{64}$/, `${what}: the image set in the overlay's images:, by digest`);
    // The probes speak what stevedore serves: HTTPS when its stevedore.yaml sets tls.
    const scheme = parseYaml(yamlText)?.tls ? { scheme: 'HTTPS' } : {};
    t.same(c.readinessProbe?.httpGet, { path: '/readyz', port: 'http', ...scheme }, `${what}: readiness on /readyz`);
    t.same(c.livenessProbe?.httpGet, { path: '/healthz', port: 'http', ...scheme }, `${what}: liveness on /healthz`);
    t.equal(spec.template.spec.restartPolicy, 'Always', `${what}: restarted when stevedore exits after an uncaught exception`);
    const podSc = spec.template.spec.securityContext;
    t.same([podSc?.runAsUser, podSc?.runAsGroup, podSc?.fsGroup], [IMAGE_USER.uid, IMAGE_USER.gid, IMAGE_USER.gid], `${what}: the image's stevedore user, its group owning the volumes`);

    // As the container sees it: the image's env (STEVEDORE_LISTEN, STEVEDORE_STORAGE_PATH win
    // over the file) and its own. And the file alone says the same (it does not mislead).
    const config = parseConfig(parseYaml(yamlText), { env });
    const fileAlone = parseConfig(parseYaml(yamlText), { env: STAND_INS });
    t.same([fileAlone.listen, fileAlone.storage.path], [config.listen, config.storage.path], `${what}: listen and storage.path in the file are the ones in force`);
    const http = c.ports?.find((p) => p.name === 'http');
    t.equal(config.listen.port, http?.containerPort, `${what}: stevedore listens on the port named http`);
    t.equal(c.volumeMounts?.find((v) => v.name === 'data')?.mountPath, config.storage.path, `${what}: the store is on the data volume`);
    const configMount = c.volumeMounts?.find((v) => v.name === 'config');
    t.same(c.args, ['serve', '--config', `${configMount?.mountPath}/stevedore.yaml`], `${what}: --config is the ConfigMap's file`);
    t.equal(configMount?.readOnly, true, `${what}: the configuration is mounted read-only`);
    t.match(configMap.metadata.name, /-[a-z0-9]{10}$/, `${what}: the ConfigMap's name carries its hash (a changed configuration rolls the pods)`);
  }
});

t.test('memory requests cover the peak RSS bench/RESULTS.md measured, limits leave room above it', async (t) => {
  const peaks: Record<string, number> = {
    'single StatefulSet stevedore': benchPeak(/scenario 2 |scenario 5 |cold 1,024 MiB blob|scenario 7 /),
    'single-tls StatefulSet stevedore': benchPeak(/scenario 2 |scenario 5 |cold 1,024 MiB blob|scenario 7 /),
    'cluster Deployment stevedore': benchPeak(/scenario 9 /),
    'cluster-s3 Deployment stevedore': benchPeak(/scenario 9 |scenario 11 /),
    'node DaemonSet stevedore-node': benchPeak(/scenario 10 \(rollout; busiest/),
  };
  for (const { overlay, obj, c } of stevedorePods()) {
    const what = `${overlay} ${obj.kind} ${obj.metadata.name}`;
    const peak = peaks[what] ?? peaks[`cluster ${obj.kind} ${obj.metadata.name}`]!;
    const request = quantity(c.resources!.requests!.memory!);
    const limit = quantity(c.resources!.limits!.memory!);
    t.ok(request >= peak * 2 ** 20, `${what}: request ${c.resources!.requests!.memory} ≥ measured peak ${peak} MiB`);
    t.ok(limit >= 1.5 * peak * 2 ** 20, `${what}: limit ${c.resources!.limits!.memory} ≥ 1.5 × measured peak`);
  }
});

t.test('the central stevedore: the Service at 10.96.0.50:5000, the TLS Secret mounted when it exists', async (t) => {
  for (const overlay of ['single', 'cluster', 'cluster-s3', 'node'] as const) {
    const svc = find(overlay, 'Service', 'stevedore').spec as ServiceSpec;
    t.equal(svc.clusterIP, '10.96.0.50', `${overlay}: the ClusterIP the installer points containerd at`);
    t.same(svc.ports.map((p) => [p.port, p.targetPort]), [[5000, 'http']], `${overlay}: port 5000 to the pods' http port`);
    const central = workloads(overlay).filter(({ spec }) => selects(svc.selector, spec.template.metadata.labels));
    t.same(central.map(({ obj }) => obj.metadata.name), ['stevedore'], `${overlay}: the Service selects the central stevedore's pods only`);
  }
  const tlsSchema = 'tls' in configSchema.shape;
  for (const { overlay, obj, spec, c, yamlText, env } of stevedorePods().filter((p) => p.obj.metadata.name === 'stevedore' && p.overlay !== 'single-tls')) {
    const what = `${overlay} ${obj.kind} ${obj.metadata.name}`;
    const vol = spec.template.spec.volumes?.find((v) => v.secret?.secretName === 'stevedore-tls');
    t.same(vol?.secret && { optional: vol.secret.optional }, { optional: true }, `${what}: the Secret stevedore-tls, optional (plain HTTP without it)`);
    const mount = c.volumeMounts?.find((m) => m.name === vol?.name);
    t.equal(mount?.readOnly, true, `${what}: mounted read-only`);
    // The commented tls: block, uncommented, names the Secret's files where they are mounted.
    const block = /^# tls:\n(?:# {2}.*\n)+/m.exec(yamlText)?.[0];
    t.ok(block, `${what}: stevedore.yaml has a commented tls: block`);
    const uncommented = (block ?? '').replace(/^# /gm, '').replace(/^#/gm, '');
    t.same(parseYaml(uncommented), { tls: { cert: `${mount?.mountPath}/tls.crt`, key: `${mount?.mountPath}/tls.key` } }, `${what}: tls.cert and tls.key are the Secret's files`);
    if (tlsSchema) {
      t.doesNotThrow(() => parseConfig(parseYaml(yamlText.replace(block ?? '', uncommented)), { env }), `${what}: stevedore accepts the uncommented tls: block`);
    } else {
      t.comment(`${what}: the configuration has no tls key yet; the uncommented block is checked once it does`);
    }
  }
});

t.test('single-tls: the single instance serving HTTPS with the Secret stevedore-tls, required, probes over HTTPS', async (t) => {
  const pod = stevedorePods().find((p) => p.overlay === 'single-tls')!;
  const config = parseConfig(parseYaml(pod.yamlText), { env: pod.env });
  const vol = pod.spec.template.spec.volumes?.find((v) => v.secret?.secretName === 'stevedore-tls');
  t.same(vol?.secret && { optional: vol.secret.optional }, { optional: false }, 'the Secret is required (the pod waits for it)');
  const mount = pod.c.volumeMounts?.find((m) => m.name === vol?.name);
  t.equal(mount?.readOnly, true, 'mounted read-only');
  t.same(config.tls && { cert: config.tls.cert, key: config.tls.key }, { cert: `${mount?.mountPath}/tls.crt`, key: `${mount?.mountPath}/tls.key` }, 'stevedore serves the Secret\'s certificate and key');
  t.equal(pod.c.readinessProbe?.httpGet?.scheme, 'HTTPS');
  t.equal(pod.c.livenessProbe?.httpGet?.scheme, 'HTTPS');
  // Otherwise the single overlay: same objects, same Service.
  t.same(objects('single-tls').map((o) => o.kind).sort(), objects('single').map((o) => o.kind).sort());
  const plain = parseConfig(parseYaml(stevedorePods().find((p) => p.overlay === 'single')!.yamlText), { env: pod.env });
  t.same({ ...config, tls: null }, { ...plain, tls: null }, 'the same configuration as single, apart from tls');
});

t.test('single: one StatefulSet with its own persistent volume', async (t) => {
  t.same(objects('single').map((o) => o.kind).sort(), ['ConfigMap', 'Namespace', 'Service', 'StatefulSet']);
  const sts = workload('single', 'StatefulSet', 'stevedore');
  t.equal(sts.replicas, 1);
  const claim = sts.volumeClaimTemplates?.find((v) => v.metadata.name === 'data');
  t.same(claim?.spec.accessModes, ['ReadWriteOnce']);
  const config = parseConfig(parseYaml(find('single', 'ConfigMap', sts.template.spec.volumes!.find((v) => v.name === 'config')!.configMap!.name).data!['stevedore.yaml']!), { env: {} });
  t.ok(config.storage.maxSize! < quantity(claim!.spec.resources.requests.storage), 'storage.maxSize is below the volume size');
  t.equal(config.metadata.redis, null, 'no Redis: a single instance');
});

t.test('cluster: 3 replicas on a ReadWriteMany volume, a PodDisruptionBudget, spread over nodes, one Redis', async (t) => {
  const unhashed = (o: K8sObject): string => `${o.kind} ${o.kind === 'ConfigMap' ? o.metadata.name.replace(/-[a-z0-9]{10}$/, '') : o.metadata.name}`;
  t.same(
    objects('cluster').map(unhashed).sort(),
    ['ConfigMap stevedore-config', 'Deployment stevedore', 'Deployment stevedore-redis', 'Namespace stevedore', 'NetworkPolicy stevedore-redis', 'PersistentVolumeClaim stevedore-store', 'PodDisruptionBudget stevedore', 'Service stevedore', 'Service stevedore-redis'],
  );
  const dep = workload('cluster', 'Deployment', 'stevedore');
  const pod = dep.template.spec;
  const podLabels = dep.template.metadata.labels;
  const configMap = find('cluster', 'ConfigMap', pod.volumes!.find((v) => v.name === 'config')!.configMap!.name);
  const config = parseConfig(parseYaml(configMap.data!['stevedore.yaml']!), { env: STAND_INS });
  const redisSvc = find('cluster', 'Service', 'stevedore-redis');
  const redisSvcSpec = redisSvc.spec as ServiceSpec;

  // Cluster mode: Redis at the Redis Service, eviction bounded.
  t.ok(config.storage.maxSize, 'storage.maxSize is set (one replica evicts for all)');
  const redisUrl = new URL(config.metadata.redis!);
  t.equal(redisUrl.protocol, 'redis:');
  t.equal(redisUrl.hostname.split('.')[0], redisSvc.metadata.name, 'metadata.redis names the Redis Service');
  t.equal(Number(redisUrl.port || 6379), redisSvcSpec.ports[0]!.port, "on the Redis Service's port");

  // The shared store.
  const pvc = find('cluster', 'PersistentVolumeClaim', 'stevedore-store');
  t.same((pvc.spec as { accessModes: string[] }).accessModes, ['ReadWriteMany'], 'every replica mounts the same volume');
  t.equal(pod.volumes?.find((v) => v.name === 'data')?.persistentVolumeClaim?.claimName, pvc.metadata.name, 'the data volume is the ReadWriteMany claim');

  // The replicas.
  t.equal(dep.replicas, 3);
  t.ok((pod.terminationGracePeriodSeconds ?? 30) >= 30, 'time to drain and hand downloads over');
  t.equal(dep.strategy?.type, 'RollingUpdate');
  t.equal(Number(dep.strategy?.rollingUpdate?.maxUnavailable), 0, 'a rollout keeps every ready replica until its successor is ready');
  const anti = pod.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution ?? [];
  t.ok(
    anti.some((a) => a.podAffinityTerm.topologyKey === 'kubernetes.io/hostname' && selects(a.podAffinityTerm.labelSelector.matchLabels, podLabels)),
    'replicas are spread over nodes',
  );
  t.same(pod.securityContext, workload('single', 'StatefulSet', 'stevedore').template.spec.securityContext, "the single instance's pod securityContext");

  // Disruptions take one replica at a time.
  const pdb = find('cluster', 'PodDisruptionBudget', 'stevedore');
  t.equal(pdb.apiVersion, 'policy/v1');
  const pdbSpec = pdb.spec as { selector: { matchLabels: Record<string, string> }; minAvailable?: number; maxUnavailable?: number };
  t.ok(selects(pdbSpec.selector.matchLabels, podLabels), "the PDB selects the Deployment's pods");
  t.equal(pdbSpec.maxUnavailable, 1, 'the PDB lets one replica go at a time');

  // Redis: one instance, coordination state only, not behind the stevedore Service.
  const redis = workload('cluster', 'Deployment', 'stevedore-redis');
  t.equal(redis.replicas, 1);
  t.equal(redis.strategy?.type, 'Recreate', 'never two Redis instances behind the Service');
  t.ok(selects(redisSvcSpec.selector, redis.template.metadata.labels), 'the Redis Service selects the Redis pod');
  t.notOk(selects(redisSvcSpec.selector, podLabels), "and not stevedore's pods");
  t.notOk(selects((find('cluster', 'Service', 'stevedore').spec as ServiceSpec).selector, redis.template.metadata.labels), 'the stevedore Service does not select Redis');
  const r = redis.template.spec.containers[0]!;
  t.match(r.image, /^redis:7/);
  t.same(r.args?.slice(0, 5), ['redis-server', '--save', '', '--appendonly', 'no'], 'persistence off');
  t.ok(r.readinessProbe?.exec ?? r.readinessProbe?.tcpSocket, 'a readiness probe');
});

interface NetworkPolicySpec {
  podSelector: { matchLabels: Record<string, string> };
  policyTypes?: string[];
  ingress?: Array<{
    from?: Array<{ podSelector?: { matchLabels: Record<string, string> }; namespaceSelector?: unknown; ipBlock?: { cidr: string; except?: string[] } }>;
    ports?: Array<{ protocol?: string; port?: string | number }>;
  }>;
}

/** Whether an IPv4 address is inside a CIDR. */
function inCidr(ip: string, cidr: string): boolean {
  const [net, bits] = cidr.split('/');
  const n = (a: string): number => a.split('.').reduce((acc, x) => acc * 256 + Number(x), 0);
  const mask = 2 ** 32 - 2 ** (32 - Number(bits));
  return (n(ip) & mask) >>> 0 === (n(net!) & mask) >>> 0;
}

t.test('Redis requires the password of the Secret stevedore-redis, which every stevedore on it reads; only stevedore pods (and, node mode, the nodes) reach it', async (t) => {
  for (const overlay of ['cluster', 'cluster-s3', 'node'] as const) {
    const redis = workload(overlay, 'Deployment', 'stevedore-redis');
    const r = redis.template.spec.containers[0]!;
    const env = (c: Container, name: string): EnvVar | undefined => c.env?.find((e) => e.name === name);
    const fromSecret = { name: 'stevedore-redis', key: 'password' };
    // Redis: requirepass from the Secret, through the environment ($(VAR) expanded by the kubelet).
    t.same(r.args?.slice(-2), ['--requirepass', '$(REDIS_PASSWORD)'], `${overlay}: Redis requires a password`);
    t.same(env(r, 'REDIS_PASSWORD')?.valueFrom?.secretKeyRef, fromSecret, `${overlay}: Redis's password comes from the Secret stevedore-redis`);
    t.same(env(r, 'REDISCLI_AUTH')?.valueFrom?.secretKeyRef, fromSecret, `${overlay}: the readiness probe's redis-cli authenticates with it`);
    t.notOk(r.env?.some((e) => e.value !== undefined), `${overlay}: no password written in the manifest`);

    // Every stevedore that uses Redis: the same Secret, in force in its configuration.
    const users = stevedorePods().filter((p) => p.overlay === overlay && parseConfig(parseYaml(p.yamlText), { env: p.env }).metadata.redis !== null);
    t.ok(users.length >= 1, `${overlay}: stevedore pods use Redis`);
    for (const p of users) {
      const what = `${overlay} ${p.obj.kind} ${p.obj.metadata.name}`;
      const config = parseConfig(parseYaml(p.yamlText), { env: p.env });
      t.equal((parseYaml(p.yamlText) as { metadata: { password?: string } }).metadata.password, '${STEVEDORE_REDIS_PASSWORD}', `${what}: metadata.password from the environment`);
      t.same(env(p.c, 'STEVEDORE_REDIS_PASSWORD')?.valueFrom?.secretKeyRef, fromSecret, `${what}: STEVEDORE_REDIS_PASSWORD from the Secret stevedore-redis`);
      t.equal(config.metadata.password, STAND_INS.STEVEDORE_REDIS_PASSWORD, `${what}: the password stevedore sends is the Secret's`);
    }

    // NetworkPolicies selecting the Redis pod: Ingress only from stevedore's pods (or node addresses), on Redis's port.
    const policies = objects(overlay).filter((o) => o.kind === 'NetworkPolicy').map((o) => ({ name: o.metadata.name, spec: o.spec as NetworkPolicySpec }));
    const onRedis = policies.filter((p) => selects(p.spec.podSelector.matchLabels, redis.template.metadata.labels));
    t.ok(onRedis.length >= 1, `${overlay}: a NetworkPolicy selects the Redis pod`);
    const redisPort = r.ports!.find((x) => x.name === 'redis')!;
    const central = workload(overlay, 'Deployment', 'stevedore').template.metadata.labels;
    const others = workloads(overlay).filter(({ obj }) => obj.metadata.name !== 'stevedore' && !obj.metadata.name.startsWith('stevedore-node'));
    const nodeDs = overlay === 'node' ? workload('node', 'DaemonSet', 'stevedore-node') : null;
    let centralAllowed = false;
    let nodesAllowed = false;
    for (const p of onRedis) {
      t.ok(p.spec.policyTypes?.includes('Ingress'), `${overlay} ${p.name}: governs ingress`);
      for (const rule of p.spec.ingress ?? []) {
        t.ok(rule.from && rule.from.length > 0, `${overlay} ${p.name}: every rule names its sources (none is open to all)`);
        t.ok(rule.ports?.length && rule.ports.every((x) => x.port === 'redis' || x.port === redisPort.containerPort), `${overlay} ${p.name}: on Redis's port only`);
        for (const from of rule.from ?? []) {
          t.notOk(from.namespaceSelector, `${overlay} ${p.name}: no other namespace`);
          if (from.podSelector) {
            t.ok(selects(from.podSelector.matchLabels, central), `${overlay} ${p.name}: the pods let in are stevedore's`);
            for (const { obj, spec } of others) t.notOk(selects(from.podSelector.matchLabels, spec.template.metadata.labels), `${overlay} ${p.name}: not ${obj.metadata.name}'s pods`);
            centralAllowed = true;
          } else {
            t.ok(from.ipBlock && nodeDs?.template.spec.hostNetwork, `${overlay} ${p.name}: addresses only for stevedores in the host network`);
            if (from.ipBlock && inCidr(STAND_INS.NODE_IP, from.ipBlock.cidr)) nodesAllowed = true;
          }
        }
      }
    }
    t.ok(centralAllowed, `${overlay}: the central stevedore's pods reach Redis`);
    if (nodeDs) t.ok(nodesAllowed, `${overlay}: the node-local stevedores (host network, NODE_IP ${STAND_INS.NODE_IP}) reach Redis`);
  }
});

/** The keys of cluster-s3's stevedore.yaml this test reads, before parsing. */
interface ClusterS3Yaml {
  storage: { s3: { accessKeyId?: string; secretAccessKey?: string } };
  cluster: { advertise: string; token: string };
}

t.test('cluster-s3: 3 replicas sharing a bucket, each with an emptyDir of working space, streaming from the holder of a download', async (t) => {
  const unhashed = (o: K8sObject): string => `${o.kind} ${o.kind === 'ConfigMap' ? o.metadata.name.replace(/-[a-z0-9]{10}$/, '') : o.metadata.name}`;
  t.same(
    objects('cluster-s3').map(unhashed).sort(),
    ['ConfigMap stevedore-config', 'Deployment stevedore', 'Deployment stevedore-redis', 'Namespace stevedore', 'NetworkPolicy stevedore-redis', 'PodDisruptionBudget stevedore', 'Service stevedore', 'Service stevedore-redis'],
    "the cluster overlay's objects without the ReadWriteMany claim",
  );
  const pod = stevedorePods().find((p) => p.overlay === 'cluster-s3')!;
  const spec = pod.spec.template.spec;
  const env = (name: string): EnvVar | undefined => pod.c.env?.find((e) => e.name === name);
  const raw = parseYaml(pod.yamlText) as ClusterS3Yaml;
  const config = parseConfig(parseYaml(pod.yamlText), { env: pod.env });

  // The store is the bucket; storage.path is an emptyDir of working space.
  t.equal(config.storage.backend, 's3');
  t.ok(config.storage.s3?.bucket, 'storage.s3.bucket is set');
  t.ok(config.storage.maxSize, 'storage.maxSize is set (one replica evicts for the whole bucket)');
  const data = spec.volumes?.find((v) => v.name === 'data');
  t.ok(data?.emptyDir?.sizeLimit, 'the data volume (storage.path) is an emptyDir with a sizeLimit');
  t.notOk(spec.volumes?.some((v) => v.persistentVolumeClaim), 'no claim: replicas share the bucket, not a disk');

  // Cluster mode on S3: this replica's URL and the shared token, which start-up requires.
  t.equal(new URL(config.metadata.redis!).hostname.split('.')[0], 'stevedore-redis', 'metadata.redis names the Redis Service');
  t.equal(raw.cluster.advertise, `http://\${POD_IP}:${config.listen.port}`, 'the others reach this replica on its pod IP and the port it listens on');
  t.same(env('POD_IP')?.valueFrom, { fieldRef: { fieldPath: 'status.podIP' } }, 'POD_IP from the downward API');
  t.equal(config.cluster.advertise, `http://${STAND_INS.POD_IP}:${config.listen.port}`, 'cluster.advertise as stevedore reads it');
  t.equal(raw.cluster.token, '${STEVEDORE_CLUSTER_TOKEN}');
  t.notOk(env('STEVEDORE_CLUSTER_TOKEN')?.value, 'the cluster token is not written in the manifest');
  t.same(env('STEVEDORE_CLUSTER_TOKEN')?.valueFrom?.secretKeyRef, { name: 'stevedore-cluster-token', key: 'token' }, 'the cluster token comes from the Secret stevedore-cluster-token');
  t.equal(config.cluster.token, STAND_INS.STEVEDORE_CLUSTER_TOKEN);

  // The bucket's credentials: from the Secret stevedore-s3 through the environment.
  t.same([raw.storage.s3.accessKeyId, raw.storage.s3.secretAccessKey], ['${AWS_ACCESS_KEY_ID}', '${AWS_SECRET_ACCESS_KEY}']);
  for (const [name, key] of [['AWS_ACCESS_KEY_ID', 'accessKeyId'], ['AWS_SECRET_ACCESS_KEY', 'secretAccessKey']] as const) {
    t.notOk(env(name)?.value, `${name} is not written in the manifest`);
    t.same(env(name)?.valueFrom?.secretKeyRef, { name: 'stevedore-s3', key }, `${name} comes from the Secret stevedore-s3`);
  }
  t.same([config.storage.s3?.accessKeyId, config.storage.s3?.secretAccessKey], [STAND_INS.AWS_ACCESS_KEY_ID, STAND_INS.AWS_SECRET_ACCESS_KEY]);

  // Otherwise the cluster overlay: the same configuration apart from the store and the two keys ...
  const clusterPod = stevedorePods().find((p) => p.overlay === 'cluster')!;
  const clusterConfig = parseConfig(parseYaml(clusterPod.yamlText), { env: clusterPod.env });
  const common = (c: typeof config): unknown => ({ ...c, storage: null, cluster: { ...c.cluster, advertise: null, token: null } });
  t.same(common(config), common(clusterConfig), "the cluster overlay's configuration apart from storage and cluster.advertise / token");
  // ... the same pods apart from the environment and the data volume (and the volume ownership change policy, for a claim) ...
  const podOf = (dep: WorkloadSpec): unknown => {
    const p = structuredClone(dep.template.spec) as PodSpec & { securityContext?: Record<string, unknown> };
    for (const c of p.containers) delete c.env;
    // The data volume differs, and the ConfigMap's hash (its stevedore.yaml does).
    p.volumes = p.volumes?.filter((v) => v.name !== 'data').map((v) => (v.configMap ? { ...v, configMap: { ...v.configMap, name: v.configMap.name.replace(/-[a-z0-9]{10}$/, '') } } : v));
    if (p.securityContext) delete p.securityContext.fsGroupChangePolicy;
    return { ...dep, template: { ...dep.template, spec: p } };
  };
  t.same(podOf(workload('cluster-s3', 'Deployment', 'stevedore')), podOf(workload('cluster', 'Deployment', 'stevedore')), "the cluster overlay's Deployment apart from env and the data volume");
  // ... and the same Redis, PodDisruptionBudget and Services.
  for (const [kind, name] of [['Deployment', 'stevedore-redis'], ['Service', 'stevedore-redis'], ['NetworkPolicy', 'stevedore-redis'], ['PodDisruptionBudget', 'stevedore'], ['Service', 'stevedore']] as const) {
    t.same(find('cluster-s3', kind, name), find('cluster', kind, name), `the cluster overlay's ${kind} ${name}`);
  }
});

/** The keys of the node's stevedore.yaml this test reads, before parsing. */
interface NodeYaml {
  listen: string;
  storage: { path: string; maxSize: string };
  metadata: { redis: string };
  node: { central: { url: string }; peers: { advertise: string; token: string } };
}

t.test('node: the cluster overlay plus a stevedore on every node, and containerd pointed at it first and at the central one second', async (t) => {
  // Everything of the cluster overlay, unchanged; the installer's files differ (two hosts).
  const key = (o: K8sObject): string => `${o.kind} ${o.metadata.name}`;
  const nodeObjects = new Map(objects('node').map((o) => [key(o), o]));
  for (const o of objects('cluster')) t.same(nodeObjects.get(key(o)), o, `node includes the cluster's ${key(o)}`);
  const installerDs = objects('containerd-hosts').find((o) => o.kind === 'DaemonSet')!;
  t.ok(nodeObjects.has(key(installerDs)), 'node includes the installer DaemonSet');

  const ds = workload('node', 'DaemonSet', 'stevedore-node');
  const pod = ds.template.spec;
  const c = pod.containers[0]!;
  const env = (name: string): EnvVar | undefined => c.env?.find((e) => e.name === name);
  const yamlText = find('node', 'ConfigMap', pod.volumes!.find((v) => v.name === 'config')!.configMap!.name).data!['stevedore.yaml']!;
  const raw = parseYaml(yamlText) as NodeYaml;
  const centralSvc = find('node', 'Service', 'stevedore');
  const central = centralSvc.spec as ServiceSpec;

  // Listening on 5001 in the node's network namespace.
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
  t.same(token?.valueFrom?.secretKeyRef, { name: 'stevedore-peer-token', key: 'token' }, 'the peer token comes from the Secret stevedore-peer-token');
  t.equal(new URL(raw.metadata.redis).hostname.split('.')[0], 'stevedore-redis', 'metadata.redis names the Redis Service');
  t.ok(nodeObjects.has('Service stevedore-redis'), 'which the overlay includes');

  // The store: a small emptyDir, storage.maxSize below its sizeLimit.
  const sizeLimit = pod.volumes?.find((v) => v.name === 'data')?.emptyDir?.sizeLimit;
  t.ok(sizeLimit, 'the data volume is an emptyDir with a sizeLimit');
  t.ok(parseSize(raw.storage.maxSize)! < quantity(sizeLimit ?? '0'), `storage.maxSize ${raw.storage.maxSize} is below the sizeLimit ${sizeLimit}`);
  t.notOk(selects(central.selector, ds.template.metadata.labels), 'the central Service does not send traffic to the node-local pods');

  // The installer: the containerd-hosts overlay's DaemonSet, its files naming this node's stevedore first.
  const installer = workload('node', 'DaemonSet', 'containerd-hosts');
  const hosts = find('node', 'ConfigMap', installer.template.spec.volumes!.find((v) => v.name === 'hosts')!.configMap!.name).data!;
  const mirrors = [`http://127.0.0.1:${port}`, `http://${central.clusterIP}:${central.ports[0]!.port}`];
  t.same(Object.keys(hosts).sort(), REGISTRIES.map(hostsKey).sort());
  for (const reg of REGISTRIES) t.equal(hosts[hostsKey(reg)], renderHostsToml(reg, mirrors), `${reg}: what containerd-config writes for ${mirrors.join(', ')}`);
  t.equal(objects('node').filter((o) => o.kind === 'ConfigMap' && o.data?.[hostsKey('docker.io')]).length, 1, 'one set of hosts.toml files (the one-host set is replaced)');
  t.same(installer.template.spec.tolerations, pod.tolerations, 'on the same nodes as the node-local stevedore');
  const plain = installerDs.spec as WorkloadSpec;
  const withoutHosts = (s: WorkloadSpec): unknown => ({ ...s.template.spec, volumes: s.template.spec.volumes?.filter((v) => v.name !== 'hosts') });
  t.same(withoutHosts(installer), withoutHosts(plain), 'the same installer as overlays/containerd-hosts apart from its files');
});

t.test('containerd-hosts: the installer alone, writing what containerd-config writes for the Service address', async (t) => {
  t.same(objects('containerd-hosts').map((o) => o.kind).sort(), ['ConfigMap', 'DaemonSet'], 'no Namespace or Service: deleting it removes only the installer');
  const svc = find('single', 'Service', 'stevedore').spec as ServiceSpec;
  const ds = workload('containerd-hosts', 'DaemonSet', 'containerd-hosts');
  const hosts = find('containerd-hosts', 'ConfigMap', ds.template.spec.volumes!.find((v) => v.name === 'hosts')!.configMap!.name).data!;
  t.same(Object.keys(hosts).sort(), REGISTRIES.map(hostsKey).sort());
  for (const reg of REGISTRIES) t.equal(hosts[hostsKey(reg)], renderHostsToml(reg, `http://${svc.clusterIP}:${svc.ports[0]!.port}`), reg);
  const pod = ds.template.spec;
  t.same(pod.volumes?.find((v) => v.name === 'certs-d')?.hostPath, { path: '/etc/containerd/certs.d', type: 'DirectoryOrCreate' }, "into the node's /etc/containerd/certs.d");
  t.same(pod.tolerations, [{ operator: 'Exists' }], 'on every node');
  const install = pod.initContainers?.find((c) => c.name === 'install');
  t.same(install?.volumeMounts?.map((m) => m.mountPath).sort(), ['/certs.d', '/hosts']);
});

t.test('the README applies each overlay and shows the files the tests use', async (t) => {
  const readme = read('README.md');
  for (const overlay of OVERLAYS) t.match(readme, new RegExp(`^kubectl apply -k config/kubernetes/overlays/${overlay}$`, 'm'), `README applies overlays/${overlay}`);
  for (const m of readme.matchAll(/config\/kubernetes\/[\w./-]*[\w/]/g)) t.ok(existsSync(path.join(ROOT, m[0])), `${m[0]} (named in the README) exists`);
  t.notMatch(readme, /kubectl apply -f config\/kubernetes/, 'no single-file manifests any more');
  // The node instance's configuration the README shows is the node overlay's.
  const shown = /A node instance's configuration[^\n]*\n\n```yaml\n([\s\S]*?)```/.exec(readme)?.[1];
  t.ok(shown, "the README shows a node instance's configuration");
  const file = read('config/kubernetes/overlays/node/stevedore.yaml');
  t.same(parseYaml(shown ?? ''), parseYaml(file), 'the same keys and values as overlays/node/stevedore.yaml');
});
