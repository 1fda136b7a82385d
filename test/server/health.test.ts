// Liveness and readiness endpoints, and closing.
import t from 'tap';
import { startStevedore } from '../fixtures/stevedore.js';

t.test('/healthz answers 200 and /readyz answers 200 while serving', async (t) => {
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } } });
  const h = await fetch(`${sd.url}/healthz`);
  t.equal(h.status, 200);
  t.same(await h.json(), { status: 'ok' });
  const r = await fetch(`${sd.url}/readyz`);
  t.equal(r.status, 200);
  t.same(await r.json(), { status: 'ready' });
  const v2 = await fetch(`${sd.url}/v2/`);
  t.equal(v2.status, 200);
  t.equal(v2.headers.get('docker-distribution-api-version'), 'registry/2.0');
});

t.test('after close() the server accepts no new connections', async (t) => {
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } } });
  await sd.stop();
  await t.rejects(fetch(`${sd.url}/healthz`), 'connection refused');
});
