// /metrics in Prometheus text format: requests by route, status and cache result; bytes served;
// upstream requests; what the store holds; evictions; downloads in flight.
import t from 'tap';
import { buildDockerImage, MANIFEST_ACCEPT, pushImage } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore } from '../fixtures/stevedore.js';

function metric(text: string, name: string, labels: Record<string, string> = {}): number | null {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries((m[2] ?? '').split(',').filter(Boolean).map((kv) => {
      const [k, v] = kv.split('=') as [string, string];
      return [k, v.replace(/^"|"$/g, '')];
    }));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return null;
}

t.test('metrics count requests, cache results, bytes, upstream requests and the store', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const img = buildDockerImage('metrics/app', { layers: 1 });
  await pushImage(reg.directUrl, 'library/app', 'v1', img);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } }, config: { storage: { maxSize: '1MiB' } } });
  const layer = img.layers[0]!;
  for (let i = 0; i < 2; i++) {
    const r = await fetch(`${sd.url}/v2/library/app/blobs/${layer.digest}?ns=docker.io`);
    await r.arrayBuffer();
  }
  await (await fetch(`${sd.url}/v2/library/app/manifests/v1?ns=docker.io`)).arrayBuffer();
  await (await fetch(`${sd.url}/v2/library/app/manifests/nope?ns=docker.io`)).arrayBuffer();

  const res = await fetch(`${sd.url}/metrics`);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/plain/);
  const text = await res.text();
  t.equal(metric(text, 'stevedore_http_requests_total', { route: 'blob', method: 'GET', status: '200', cache: 'miss' }), 1, 'one blob miss');
  t.equal(metric(text, 'stevedore_http_requests_total', { route: 'blob', method: 'GET', status: '200', cache: 'hit' }), 1, 'one blob hit');
  t.equal(metric(text, 'stevedore_http_requests_total', { route: 'manifest', status: '404' }), 1, 'the unknown tag');
  t.equal(metric(text, 'stevedore_http_response_bytes_total', { route: 'blob', cache: 'hit' }), layer.size, 'bytes served from the store');
  t.equal(metric(text, 'stevedore_upstream_requests_total', { upstream: 'docker.io', method: 'GET', status: '200' }), 2, 'blob + manifest fetched upstream');
  t.equal(metric(text, 'stevedore_upstream_requests_total', { upstream: 'docker.io', method: 'GET', status: '404' }), 1);
  t.ok((metric(text, 'stevedore_store_bytes', { kind: 'cached' }) ?? 0) >= layer.size, 'the store holds the layer');
  t.equal(metric(text, 'stevedore_store_evictions_total'), 0);
  t.equal(metric(text, 'stevedore_downloads_in_flight'), 0);
  t.equal(metric(text, 'stevedore_send_buffer_bytes', { state: 'in_use' }), 0, 'no send buffer held once the answers are done');
  t.ok((metric(text, 'stevedore_send_buffer_bytes', { state: 'pooled' }) ?? 0) > 0, 'the hit was sent through a pooled buffer, kept for reuse');
  t.ok(metric(text, 'stevedore_process_resident_memory_bytes') !== null, 'process metrics too');
  t.notMatch(text, /library\/app/, 'no repository names in labels');
});

t.test('a cold, a warm and a coalesced pull move the counters by what each cost', async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const cold = buildDockerImage('metrics/cold', { layers: 2 });
  const together = buildDockerImage('metrics/together', { layers: 1, layerSize: 2 * 1024 * 1024 });
  await pushImage(reg.directUrl, 'library/cold', 'v1', cold);
  await pushImage(reg.directUrl, 'library/together', 'v1', together);
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } } });
  // A client has its last byte a moment before the server counts that request: scrape once
  // nothing but the scrape itself is in flight (every earlier request counted).
  const scrape = async (): Promise<string> => {
    for (let i = 0; ; i++) {
      const text = await (await fetch(`${sd.url}/metrics`)).text();
      if (metric(text, 'stevedore_http_requests_in_flight') === 1 || i === 100) return text;
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const pull = async (name: string, img: typeof cold): Promise<void> => {
    const m = await fetch(`${sd.url}/v2/library/${name}/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
    t.equal(m.status, 200);
    await m.arrayBuffer();
    for (const b of [img.config, ...img.layers]) {
      const r = await fetch(`${sd.url}/v2/library/${name}/blobs/${b.digest}`);
      t.ok(Buffer.from(await r.arrayBuffer()).equals(b.data), `${name}: ${b.digest} right bytes`);
    }
  };
  const blobBytes = (img: typeof cold): number => [img.config, ...img.layers].reduce((n, b) => n + b.size, 0);

  await pull('cold', cold);
  let text = await scrape();
  t.equal(metric(text, 'stevedore_http_requests_total', { route: 'blob', method: 'GET', status: '200', cache: 'miss' }), 3, 'cold: config and two layers missed');
  t.equal(metric(text, 'stevedore_http_requests_total', { route: 'manifest', method: 'GET', status: '200', cache: 'miss' }), 1, 'cold: the manifest missed');
  t.equal(metric(text, 'stevedore_upstream_requests_total', { upstream: 'docker.io', method: 'GET', status: '200' }), 4, 'cold: four GETs upstream');
  t.equal(metric(text, 'stevedore_upstream_blob_bytes_total', { upstream: 'docker.io' }), blobBytes(cold), 'cold: the blob bytes fetched');
  t.equal(metric(text, 'stevedore_http_response_bytes_total', { route: 'blob', cache: 'hit' }), null, 'cold: nothing from the store yet');

  await pull('cold', cold);
  text = await scrape();
  t.equal(metric(text, 'stevedore_http_requests_total', { route: 'blob', method: 'GET', status: '200', cache: 'hit' }), 3, 'warm: three blob hits');
  t.equal(metric(text, 'stevedore_http_response_bytes_total', { route: 'blob', cache: 'hit' }), blobBytes(cold), 'warm: every blob byte from the store');
  t.equal(metric(text, 'stevedore_upstream_blob_bytes_total', { upstream: 'docker.io' }), blobBytes(cold), 'warm: no blob byte fetched again');
  const upstreamGets = metric(text, 'stevedore_upstream_requests_total', { upstream: 'docker.io', method: 'GET', status: '200' });
  t.equal(upstreamGets, 4, 'warm: no GET upstream (the tag is fresh)');

  const layer = together.layers[0]!;
  const m = await fetch(`${sd.url}/v2/library/together/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
  await m.arrayBuffer();
  const bodies = await Promise.all([0, 1, 2, 3, 4].map(async () => Buffer.from(await (await fetch(`${sd.url}/v2/library/together/blobs/${layer.digest}`)).arrayBuffer())));
  for (const b of bodies) t.ok(b.equals(layer.data), 'coalesced: each client got the layer');
  text = await scrape();
  t.equal(metric(text, 'stevedore_upstream_requests_total', { upstream: 'docker.io', method: 'GET', status: '200' }), 4 + 2, 'coalesced: one manifest and one blob GET upstream for five clients');
  t.equal(metric(text, 'stevedore_upstream_blob_bytes_total', { upstream: 'docker.io' }), blobBytes(cold) + layer.size, 'coalesced: the layer fetched once');
  t.equal(metric(text, 'stevedore_http_response_bytes_total', { route: 'blob', cache: 'miss' }), blobBytes(cold) + 5 * layer.size, 'coalesced: five clients served while it downloaded');
  t.equal(metric(text, 'stevedore_http_requests_total', { route: 'blob', method: 'GET', status: '200', cache: 'miss' }), 3 + 5);
});
