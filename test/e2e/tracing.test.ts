// Traces (config tracing, issue 31 item 4): spans exported over OTLP/HTTP (JSON) to a receiver the
// test starts (test/fixtures/otlp-receiver.ts), from real stevedore processes in front of a real
// registry (CNCF distribution); the node tier with a real redis-server.
import t from 'tap';
import { request } from 'undici';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage } from '../fixtures/images.js';
import { logged, pullImage, startTiers } from '../fixtures/node-tier.js';
import { SPAN_KIND, startOtlpReceiver, type ReceivedSpan } from '../fixtures/otlp-receiver.js';
import { startRegistry } from '../fixtures/registry.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { tmpDir, waitFor } from '../fixtures/util.js';

const MANIFEST_TEMPLATE = '/v2/{name}/manifests/{reference}';
const MANIFEST_ROUTE = `GET ${MANIFEST_TEMPLATE}`;

function tracing(endpoint: string, serviceName: string): Record<string, unknown> {
  return { tracing: { enabled: true, endpoint, serviceName, exportInterval: '200ms' } };
}

/** `span`'s ancestors in `spans`, nearest first (across processes: parent ids are span ids of the same trace). */
function ancestors(span: ReceivedSpan, spans: ReceivedSpan[]): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  let at: ReceivedSpan | undefined = span;
  while (at && at.parentSpanId !== '') {
    const parent: ReceivedSpan | undefined = spans.find((s) => s.traceId === at!.traceId && s.spanId === at!.parentSpanId);
    if (!parent) break;
    out.push(parent);
    at = parent;
  }
  return out;
}

t.test('a cold pull through a node instance and the central one is one trace, with the upstream requests of both inside it', async (t) => {
  const rx = await startOtlpReceiver(t);
  const tier = await startTiers(t, { nodes: 1, nodeConfig: tracing(rx.url, 'node'), centralConfig: tracing(rx.url, 'central') });
  const img = buildDockerImage('tracing-tier', { layers: 1, layerSize: 64 * 1024 });
  await pushImage(tier.registry.directUrl, 'library/traced', 'v1', img);
  const registryPort = Number(new URL(tier.registry.url).port);

  await pullImage(tier.nodes[0]!.url, 'library/traced', 'v1');

  // The client's request to the node: a server span that starts the trace (the client sent no traceparent).
  const [nodeServer] = await rx.waitForSpans((s) => s.service === 'node' && s.kind === SPAN_KIND.server && s.name === MANIFEST_ROUTE);
  t.ok(nodeServer, 'the node exported the manifest request as a server span');
  t.equal(nodeServer!.parentSpanId, '', 'the node starts the trace');
  const trace = nodeServer!.traceId;
  // The central instance's request to the registry, in the node's trace.
  const [toRegistry] = await rx.waitForSpans((s) => s.service === 'central' && s.kind === SPAN_KIND.client && s.traceId === trace && s.attributes['server.port'] === registryPort);
  t.ok(toRegistry, "the central instance's upstream request to the registry is in the node's trace");
  // Its ancestors, nearest first, up to the root: every span exported by then (the parents end after their children).
  let chain: ReceivedSpan[] = [];
  await waitFor("the registry request's ancestors up to a root", async () => {
    chain = ancestors(toRegistry!, rx.spans);
    return chain.at(-1)?.parentSpanId === '';
  }).catch(() => undefined);
  t.equal(chain.at(-1)?.spanId, nodeServer!.spanId, "the registry request's ancestors lead to the node's server span: one tree");
  const at = chain.findIndex((s) => s.service === 'central' && s.kind === SPAN_KIND.server);
  const centralServer = chain[at];
  t.equal(centralServer?.attributes['http.route'], MANIFEST_TEMPLATE, "… through the central instance's server span of a manifest request");
  const nodeClient = chain[at + 1];
  t.equal(nodeClient?.service, 'node', "whose parent is the node's span");
  t.equal(nodeClient?.kind, SPAN_KIND.client, '… of its upstream request (a client span)');
  t.equal(nodeClient?.attributes['server.port'], Number(new URL(tier.central.url).port), '… to the central instance');
  t.ok(chain.slice(0, at).some((s) => s.name === 'cache.manifest_by_tag' && s.attributes['stevedore.cache'] === 'miss'), "the central instance's cache decision, a miss, holds the registry request");
});

t.test("with tracing on, the access line's request id is the trace id of the request's span", async (t) => {
  const rx = await startOtlpReceiver(t);
  const registry = await startRegistry();
  t.teardown(() => registry.stop());
  const img = buildDockerImage('tracing-reqid', { layers: 1, layerSize: 16 * 1024 });
  await pushImage(registry.directUrl, 'library/ids', 'v1', img);
  const p = await spawnStevedore(t, {
    storage: { path: await tmpDir(t, 'stevedore-tracing-') },
    upstreams: { 'docker.io': { url: registry.url } },
    ...tracing(rx.url, 'alone'),
  });
  const res = await request(`${p.url}/v2/library/ids/manifests/v1?ns=docker.io`, { headers: { accept: MANIFEST_ACCEPT } });
  await res.body.arrayBuffer();
  t.equal(res.statusCode, 200);
  const given = String(res.headers['x-request-id']);
  t.match(given, /^[0-9a-f]{32}$/, 'the request id is a trace id (32 hex digits)');
  const [line] = await logged(p, (l) => l.msg === 'request' && typeof l.path === 'string' && l.path.includes('/manifests/v1'), 1);
  t.equal(line?.reqId, given, 'the access line carries it');
  const [span] = await rx.waitForSpans((s) => s.kind === SPAN_KIND.server && s.name === MANIFEST_ROUTE);
  t.equal(span?.traceId, given, "it is the trace id of the request's server span");
  t.equal(span?.attributes['http.response.status_code'], 200, 'the span says the status answered');
});

t.test("at sampleRatio 0 a request is not recorded unless its traceparent says its caller sampled it, and then it continues the caller's trace", async (t) => {
  const rx = await startOtlpReceiver(t);
  const registry = await startRegistry();
  t.teardown(() => registry.stop());
  const img = buildDockerImage('tracing-sampling', { layers: 1, layerSize: 16 * 1024 });
  await pushImage(registry.directUrl, 'library/sampled', 'v1', img);
  const p = await spawnStevedore(t, {
    storage: { path: await tmpDir(t, 'stevedore-tracing-') },
    upstreams: { 'docker.io': { url: registry.url } },
    tracing: { enabled: true, endpoint: rx.url, serviceName: 'central', sampleRatio: 0, exportInterval: '200ms' },
  });
  const ask = async (headers: Record<string, string>): Promise<string> => {
    const res = await request(`${p.url}/v2/library/sampled/manifests/v1?ns=docker.io`, { headers: { accept: MANIFEST_ACCEPT, ...headers } });
    await res.body.arrayBuffer();
    t.equal(res.statusCode, 200);
    return String(res.headers['x-request-id']);
  };
  // First a request of its own (no traceparent): a trace id all the same, and nothing recorded.
  const alone = await ask({});
  t.match(alone, /^[0-9a-f]{32}$/, 'an unsampled request still has a trace id as its request id');
  // Then one from a caller that sampled its trace (flags 01).
  const caller = { trace: '4bf92f3577b34da6a3ce929d0e0e4736', span: '00f067aa0ba902b7' };
  const continued = await ask({ traceparent: `00-${caller.trace}-${caller.span}-01` });
  t.equal(continued, caller.trace, "the request id is the caller's trace id");
  const [server] = await rx.waitForSpans((s) => s.kind === SPAN_KIND.server && s.traceId === caller.trace);
  t.equal(server?.parentSpanId, caller.span, "the server span's parent is the caller's span");
  // Spans are exported in the order they ended: the first request's would have come by now.
  t.same(rx.spans.filter((s) => s.traceId === alone), [], 'nothing of the unsampled request was exported');
});
