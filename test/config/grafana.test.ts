// config/grafana/stevedore.json queries only what stevedore really exports: every metric a panel
// or variable names is in the /metrics of a real stevedore in cluster mode and of one in node mode (so the cluster metrics
// are there too), and every label a query groups or selects by is one that metric carries.
// Renaming a metric in lib/server/metrics.ts without the dashboard (or the reverse) fails here.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { startRedis } from '../fixtures/redis.js';
import { startStevedore } from '../fixtures/stevedore.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const read = (p: string): string => readFileSync(path.join(ROOT, p), 'utf8');

interface Target {
  expr?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  name: string;
  type: string;
  query?: string | { query?: string };
  datasource?: { type?: string; uid?: string };
}
interface Dashboard {
  schemaVersion: number;
  templating: { list: Variable[] };
  panels: Panel[];
}

const dashboard = JSON.parse(read('config/grafana/stevedore.json')) as Dashboard;

/** Every panel, those inside (collapsed) rows included. */
function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

/** Every PromQL expression: panel targets and query variables. */
function expressions(): Array<{ where: string; expr: string }> {
  const out: Array<{ where: string; expr: string }> = [];
  for (const p of allPanels(dashboard.panels)) {
    for (const target of p.targets ?? []) if (target.expr) out.push({ where: `panel "${p.title}"`, expr: target.expr });
  }
  for (const v of dashboard.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    if (q) out.push({ where: `variable $${v.name}`, expr: q });
  }
  return out;
}

/** Labels Prometheus adds at scrape time, and the histogram bucket label. */
const TARGET_LABELS = new Set(['instance', 'job']);

interface Exposition {
  types: Map<string, string>;
  /** Label names seen on each metric's samples (histogram samples under the base name). */
  labels: Map<string, Set<string>>;
}

function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const labels = new Map<string, Set<string>>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1]!, type[2]!);
  }
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+/.exec(line);
    if (!m) continue;
    const name = baseName(m[1]!, types);
    const set = labels.get(name) ?? new Set<string>();
    for (const kv of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) set.add(kv[1]!);
    labels.set(name, set);
  }
  return { types, labels };
}

/** `x_bucket` / `x_sum` / `x_count` → `x` when `x` is a histogram (or summary); else the name. */
function baseName(name: string, types: Map<string, string>): string {
  const m = /^(.+)_(bucket|sum|count)$/.exec(name);
  if (m && ['histogram', 'summary'].includes(types.get(m[1]!) ?? '')) return m[1]!;
  return name;
}

/** labelNames of each metric declared in lib/server/metrics.ts (for metrics with no sample yet). */
function declaredLabels(): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const block of read('lib/server/metrics.ts').split(/new (?:Counter|Gauge|Histogram)\(/).slice(1)) {
    const name = /name: '([a-z0-9_]+)'/.exec(block)?.[1];
    const labelNames = /labelNames: \[([^\]]*)\]/.exec(block.split(/registers,/)[0] ?? '')?.[1];
    if (name) out.set(name, new Set([...(labelNames ?? '').matchAll(/'([a-z_]+)'/g)].map((x) => x[1]!)));
  }
  return out;
}

const metricNames = (expr: string): string[] => [...new Set(expr.match(/\bstevedore_[a-z0-9_]+/g) ?? [])];

t.test('the dashboard imports anywhere: a Prometheus datasource variable, used by every query', async (t) => {
  t.ok(dashboard.schemaVersion >= 36, 'a current schema');
  const ds = dashboard.templating.list.find((v) => v.type === 'datasource');
  t.ok(ds, 'a datasource variable');
  t.equal(ds?.name, 'datasource');
  t.equal(ds?.query, 'prometheus');
  const instance = dashboard.templating.list.find((v) => v.name === 'instance');
  t.match(instance, { type: 'query', datasource: { uid: '${datasource}' } }, 'the instance variable queries the chosen datasource');
  for (const p of allPanels(dashboard.panels)) {
    if (p.type === 'row') continue;
    t.same(p.datasource, { type: 'prometheus', uid: '${datasource}' }, `panel "${p.title}" uses the datasource variable`);
    t.ok((p.targets ?? []).length > 0, `panel "${p.title}" has a query`);
    for (const target of p.targets ?? []) t.equal(target.datasource?.uid, '${datasource}', `panel "${p.title}" target`);
  }
});

t.test('panel ids are unique', async (t) => {
  const ids = allPanels(dashboard.panels).map((p) => p.id);
  t.ok(ids.every((id) => Number.isInteger(id)), 'every panel has an id');
  t.same([...new Set(ids)].sort((a, b) => a - b), [...ids].sort((a, b) => a - b), 'no id twice');
});

t.test('blob hit ratio and route selectors use real route kinds', async (t) => {
  const routeSource = read('lib/server/route.ts');
  const serverSource = read('lib/server/create-server.ts');
  const routes = new Set([
    ...[...routeSource.matchAll(/kind: '([a-z]+)'/g)].map((m) => m[1]!),
    ...[...serverSource.matchAll(/outcome\.route(?: =| \?\?) '([a-z]+)'/g)].map((m) => m[1]!),
  ]);
  t.ok(routes.has('blob'), 'blob is a route kind');
  for (const { where, expr } of expressions()) {
    for (const m of expr.matchAll(/\broute="([^"]*)"/g)) t.ok(routes.has(m[1]!), `${where}: route="${m[1]}" is a route kind`);
  }
  const hitRatio = expressions().filter((e) => /cache="hit"/.test(e.expr));
  t.ok(hitRatio.length > 0, 'a hit-ratio query');
  for (const { where, expr } of hitRatio) t.match(expr, /route="blob"/, `${where}: the hit ratio is of blob requests`);
});

t.test('every metric and label the dashboard queries is exported by a real stevedore (cluster mode)', async (t) => {
  const redis = await startRedis(t);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: { metadata: { redis: redis.url } },
  });
  // One blob request (its upstream is a closed port: a 502) puts samples in the request,
  // duration and upstream metrics.
  await (await fetch(`${sd.url}/v2/library/x/blobs/sha256:${'a'.repeat(64)}?ns=docker.io`)).arrayBuffer();
  const res = await fetch(`${sd.url}/metrics`);
  t.equal(res.status, 200, '/metrics is open to anonymous clients');
  // And a node instance (node mode with peers), for the node tier's metrics.
  const node = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: { metadata: { redis: redis.url }, node: { central: { url: 'http://127.0.0.1:1' }, peers: { advertise: 'http://127.0.0.1:1', token: 'grafana-test-peer-token-000000' } } },
  });
  const expo = parseExposition(`${await res.text()}\n${await (await fetch(`${node.url}/metrics`)).text()}`);
  t.ok(expo.types.has('stevedore_peer_transfers_total'), 'node mode is on');
  t.ok(expo.types.has('stevedore_redis_up'), 'cluster mode is on');
  const declared = declaredLabels();
  t.ok(declared.get('stevedore_http_requests_total')?.has('route'), 'labelNames read from lib/server/metrics.ts');

  const exprs = expressions();
  t.ok(exprs.length >= 20, `${exprs.length} queries`);
  const used = new Set<string>();
  for (const { where, expr } of exprs) {
    const names = metricNames(expr).map((n) => baseName(n, expo.types));
    t.ok(names.length > 0, `${where}: queries a stevedore metric: ${expr}`);
    for (const name of names) {
      used.add(name);
      t.ok(expo.types.has(name), `${where}: ${name} is exported (# TYPE ${name})`);
    }
    const known = (name: string): Set<string> =>
      new Set([...TARGET_LABELS, ...(expo.labels.get(name) ?? []), ...(declared.get(name) ?? []), ...(expo.types.get(name) === 'histogram' ? ['le'] : [])]);
    // by (a, b): each label is on every metric of the expression.
    for (const m of expr.matchAll(/\bby\s*\(([^)]*)\)/g)) {
      for (const label of m[1]!.split(',').map((s) => s.trim()).filter(Boolean)) {
        for (const name of names) t.ok(known(name).has(label), `${where}: ${name} has label "${label}" (by)`);
      }
    }
    // name{label="v", label=~"v"}: each label is on that metric.
    for (const m of expr.matchAll(/\b(stevedore_[a-z0-9_]+)\{([^}]*)\}/g)) {
      const name = baseName(m[1]!, expo.types);
      for (const sel of m[2]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)) {
        t.ok(known(name).has(sel[1]!), `${where}: ${name} has label "${sel[1]}" (selector)`);
      }
    }
  }
  // The panels the README promises.
  for (const name of [
    'stevedore_http_requests_total',
    'stevedore_http_response_bytes_total',
    'stevedore_http_request_duration_seconds',
    'stevedore_upstream_requests_total',
    'stevedore_upstream_range_requests_total',
    'stevedore_store_bytes',
    'stevedore_store_evictions_total',
    'stevedore_downloads_in_flight',
    'stevedore_http_requests_in_flight',
    'stevedore_connections_refused_total',
    'stevedore_internal_errors_total',
    'stevedore_send_buffer_bytes',
    'stevedore_process_resident_memory_bytes',
    'stevedore_redis_up',
    'stevedore_cluster_downloads_total',
    'stevedore_cluster_store_bytes',
    'stevedore_cluster_evictions_total',
    'stevedore_source_requests_total',
    'stevedore_peer_transfers_total',
  ]) {
    t.ok(used.has(name), `the dashboard shows ${name}`);
  }
});
