// Several sources for one upstream, asked in order with health per source (issue 14). A real
// registry as the last source; before it a central stevedore that is down, then comes back, or a
// source that accepts connections and never answers.
import t from 'tap';
import { buildDockerImage, pushImage } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { blobRequestsAtLeast, logged, metric, pullImage } from '../fixtures/node-tier.js';
import { freePort, tmpDir } from '../fixtures/util.js';
import { startFake } from '../fixtures/fake-upstream.js';

const FAILING = 'source central of docker.io is failing; not asked until its circuit breaker lets a request through';

t.test('first source down: pulls succeed from the second with one failed attempt, not one per blob; back: used again once its breaker closes', async (t) => {
  const registry = await startRegistry();
  t.teardown(() => registry.stop());
  const centralPort = await freePort();
  const node = await spawnStevedore(t, {
    storage: { path: await tmpDir(t) },
    upstreamPolicy: { breakerOpenFor: '2s' },
    upstreams: {
      'docker.io': {
        sources: [
          { url: `http://127.0.0.1:${centralPort}`, name: 'central', namespace: 'ns' },
          { url: registry.url },
        ],
      },
    },
  });
  const one = buildDockerImage('ordered-one', { layers: 4 });
  const two = buildDockerImage('ordered-two', { layers: 4 });
  await pushImage(registry.directUrl, 'library/one', 'v1', one);
  await pushImage(registry.directUrl, 'library/two', 'v1', two);
  registry.resetCounts();

  const first = await pullImage(node.url, 'library/one', 'v1');
  for (const [d, got] of first.blobs) t.equal(got, d, `served ${d} intact from the second source`);
  t.equal((await logged(node, (l) => l.msg === FAILING, 1)).length, 1, 'one failure in the log');
  t.equal(await metric(node, 'stevedore_source_requests_total', { source: 'central' }), 1, 'one request sent to the dead source in all');
  t.equal(registry.count('GET', /\/blobs\//), 5, 'every blob came from the registry');

  // The central stevedore comes up on that port; once the breaker lets a request through, it is used again.
  const central = await spawnStevedore(t, { listen: `127.0.0.1:${centralPort}`, storage: { path: await tmpDir(t) }, upstreams: { 'docker.io': { url: registry.url } } });
  await new Promise((r) => setTimeout(r, 2_200));
  registry.resetCounts();
  const second = await pullImage(node.url, 'library/two', 'v1');
  for (const [d, got] of second.blobs) t.equal(got, d, `served ${d} intact through the first source`);
  t.equal((await blobRequestsAtLeast(central, 5)).length, 5, 'the first source served every blob of the second image');
  t.equal(registry.count('GET', /\/blobs\//), 5, 'the registry sent each blob once, to the first source');
  t.equal((await logged(node, (l) => l.msg === 'source central of docker.io answers again', 1)).length, 1, 'its return is logged');
  t.equal((await logged(node, (l) => l.msg === FAILING, 1)).length, 1, 'no further failure');
});

t.test('a source that accepts and never answers costs one timeout, then is skipped: not one timeout per blob', async (t) => {
  const registry = await startRegistry();
  t.teardown(() => registry.stop());
  const silent = await startFake(t, () => new Promise<void>(() => undefined));
  const node = await spawnStevedore(t, {
    storage: { path: await tmpDir(t) },
    upstreams: {
      'docker.io': {
        sources: [
          { url: silent.url, name: 'central', namespace: 'ns', timeouts: { firstByte: '1s', request: '1s' } },
          { url: registry.url },
        ],
      },
    },
  });
  const img = buildDockerImage('ordered-silent', { layers: 6 });
  await pushImage(registry.directUrl, 'library/silent', 'v1', img);
  const started = Date.now();
  const pulled = await pullImage(node.url, 'library/silent', 'v1');
  const ms = Date.now() - started;
  for (const [d, got] of pulled.blobs) t.equal(got, d, `served ${d} intact`);
  t.equal(silent.count('*', /./), 1, 'the silent source was asked once');
  t.ok(ms < 5_000, `the pull took ${ms} ms: one 1 s timeout, not one per blob (7 objects)`);
  t.equal((await logged(node, (l) => l.msg === FAILING, 1)).length, 1, 'one failure in the log');
});
