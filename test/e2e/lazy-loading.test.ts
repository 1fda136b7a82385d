// A module a configuration does not use is not loaded (docs/ARCHITECTURE.md): a fresh `serve` with
// the defaults loads no AWS SDK (the S3 backend, the ECR credential provider), no Redis client,
// no pino-pretty (JSON logs), no jose (nobody has asked for a token), no OpenTelemetry SDK (tracing
// is off) and, when it is off, no dashboard. Nor, until it first connects somewhere, undici; nor,
// without a signature check, sigstore's libraries; nor ever Node's own bundled undici (an ES import
// of node:http would load it: lib/util/node-http.ts). The process logs every module it loads (test/fixtures/module-log.mjs).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { tmpDir } from '../fixtures/util.js';

const HOOK = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'module-log.mjs');

/**
 * Starts serve with `config`, asks /healthz and then each of `paths` (answered with any status),
 * and returns the URLs of the modules it loaded, then `builtin:<name>` for each of the runtime's own.
 */
async function loadedBy(t: Test, config: Record<string, unknown>, paths: string[] = []): Promise<string[]> {
  const dir = await tmpDir(t, 'stevedore-lazy-');
  const log = path.join(dir, 'modules.txt');
  const p = await spawnStevedore(t, { storage: { path: path.join(dir, 'store') }, ...config }, { nodeArgs: ['--import', HOOK], env: { STEVEDORE_MODULE_LOG: log } });
  for (const at of ['/healthz', ...paths]) {
    const res = await fetch(`${p.url}${at}`);
    if (at === '/healthz') t.equal(res.status, 200);
    await res.arrayBuffer();
  }
  process.kill(p.pid, 'SIGUSR2');
  let text = '';
  for (let i = 0; i < 100 && !text.includes('builtin-end\n'); i++) {
    await new Promise((r) => setTimeout(r, 50));
    text = await readFile(log, 'utf8');
  }
  t.ok(text.includes('builtin-end\n'), "the runtime's modules were listed");
  await p.kill();
  return text.split('\n').filter(Boolean);
}

/** Node's own copy of undici, loaded by its fetch, WebSocket, and an ES import of node:http. */
const NODE_UNDICI = 'builtin:NativeModule internal/deps/undici/undici';

/**
 * The OpenTelemetry SDK (tracing: off by default). `@opentelemetry/api` is not in the list:
 * prom-client loads it whatever the configuration (its process CPU metric reads the active span).
 */
const OPENTELEMETRY_SDK = ['@opentelemetry/sdk-trace/', '@opentelemetry/exporter-trace-otlp-http/', '@opentelemetry/otlp-', '@opentelemetry/core/', '@opentelemetry/resources/', '@opentelemetry/semantic-conventions/'];
const PACKAGES_NOT_USED = ['@aws-sdk/', '@smithy/', '@redis/client/', 'pino-pretty/', 'jose/', 'cli-progress/', 'tar-stream/', '@peculiar/x509/', ...OPENTELEMETRY_SDK];
/** A module of stevedore's own: `lib/<rest>` through a TypeScript loader, `dist/<rest>` compiled. */
const ours = (url: string, rest: string): boolean => url.includes(`/lib/${rest}`) || url.includes(`/dist/${rest}`);
const packageOf = (url: string): string | null => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1] ?? null;

t.test('a fresh serve with the default configuration loads no AWS SDK, Redis client, pino-pretty or jose', async (t) => {
  const urls = await loadedBy(t, {});
  const packages = new Set(urls.map(packageOf).filter((p) => p !== null));
  // What it uses is in the log: the log works.
  t.ok(packages.has('prom-client') && packages.has('zod'), 'prom-client and zod are loaded');
  t.ok(urls.some((u) => ours(u, 'storage/fs/fs-backend.')), 'the filesystem backend is loaded');
  t.ok(urls.some((u) => ours(u, 'server/dashboard/dashboard.')), 'the dashboard (on by default) is loaded');
  t.same(urls.filter((u) => PACKAGES_NOT_USED.some((p) => u.includes(`/node_modules/${p}`))), [], 'none of those packages');
  t.same(urls.filter((u) => ours(u, 'storage/s3/')), [], 'no module of the S3 backend');
});

t.test('with the dashboard off, no module of the dashboard is loaded', async (t) => {
  const urls = await loadedBy(t, { dashboard: { enabled: false } });
  t.ok(urls.some((u) => ours(u, 'storage/fs/fs-backend.')), 'the log works');
  t.same(urls.filter((u) => ours(u, 'server/dashboard/')), []);
});

t.test('with tracing off (the default), no OpenTelemetry SDK module and no tracer of stevedore is loaded', async (t) => {
  const urls = await loadedBy(t, {});
  t.ok(urls.some((u) => ours(u, 'server/create-server.')), 'the log works');
  t.same(urls.filter((u) => OPENTELEMETRY_SDK.some((p) => u.includes(`/node_modules/${p}`))), [], 'no module of the OpenTelemetry SDK');
  t.same(urls.filter((u) => ours(u, 'server/otel-tracer.')), [], "no module of stevedore's tracer");
});

t.test('with tracing on, the OpenTelemetry SDK and the OTLP/HTTP exporter are loaded', async (t) => {
  // Nothing listens there: spans are dropped, serving goes on.
  const urls = await loadedBy(t, { tracing: { enabled: true, endpoint: 'http://127.0.0.1:9/v1/traces' } });
  const packages = new Set(urls.map(packageOf).filter((p) => p !== null));
  t.ok(packages.has('@opentelemetry/sdk-trace'), 'the SDK is loaded');
  t.ok(packages.has('@opentelemetry/exporter-trace-otlp-http'), 'the OTLP/HTTP exporter is loaded');
  t.ok(urls.some((u) => ours(u, 'server/otel-tracer.')), "stevedore's tracer is loaded");
});

t.test('a fresh serve loads neither undici, Node\'s bundled undici nor sigstore; the first upstream request loads undici', async (t) => {
  // An upstream nobody listens on: the request fails (502/503/504), after undici tried to connect.
  const config = { upstreams: { 'docker.io': { url: 'http://127.0.0.1:9' } }, dashboard: { enabled: false } };
  const fresh = await loadedBy(t, config);
  const packagesFresh = new Set(fresh.map(packageOf).filter((p) => p !== null));
  t.ok(fresh.includes('builtin:NativeModule http'), 'node:http is loaded (the list works)');
  t.notOk(packagesFresh.has('undici'), 'no undici before the first connection');
  t.notOk(fresh.includes(NODE_UNDICI), "no Node's bundled undici");
  t.same([...packagesFresh].filter((p) => p.startsWith('@sigstore/')), [], 'no sigstore library without a signature check');

  const used = await loadedBy(t, config, ['/v2/library/alpine/manifests/3.20']);
  const packagesUsed = new Set(used.map(packageOf).filter((p) => p !== null));
  t.ok(packagesUsed.has('undici'), 'undici is loaded once an upstream is asked');
  t.notOk(used.includes(NODE_UNDICI), "still no Node's bundled undici");
});
