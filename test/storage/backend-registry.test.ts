// Backends are registered by name (lib/storage/backends.ts) and `storage.backend` picks one:
// open-store.ts looks the name up, so a new backend needs no edit anywhere else. A registration is
// a loader: a backend's module is loaded when a configuration names it, not before.
import t from 'tap';
import type { Config } from '../../lib/config/config.js';
import { createBackend, registerBackend, registeredBackends } from '../../lib/storage/backend.js';
import { openStore } from '../../lib/storage/open-store.js';
import { MemoryBackend } from '../../lib/storage/memory/memory-backend.js';
import { tmpDir } from '../fixtures/util.js';

function storage(backend: string, path = '/nonexistent'): Config['storage'] {
  return { path, maxSize: null, backend, s3: null } as unknown as Config['storage'];
}

t.test('the built-in backends are registered under their names', async (t) => {
  await openStore(storage('memory'), { maxSize: null }); // loads the registrations
  t.same(registeredBackends().sort(), ['filesystem', 'memory', 's3']);
});

t.test('openStore opens the backend storage.backend names, and it reports that name', async (t) => {
  const dir = await tmpDir(t, 'stevedore-registry-');
  const fs = await openStore(storage('filesystem', dir), { maxSize: null });
  t.equal(fs.blobs.info().kind, 'filesystem');
  t.equal(fs.blobs.info().location, dir);
  const mem = await openStore(storage('memory'), { maxSize: null });
  t.equal(mem.blobs.info().kind, 'memory');
  t.ok(mem.blobs.backend instanceof MemoryBackend);
});

t.test('a backend registered under a new name is opened by that name', async (t) => {
  let made = 0;
  let loaded = 0;
  registerBackend('registry-test', async () => {
    loaded++;
    return () => {
      made++;
      return new MemoryBackend();
    };
  });
  t.equal(loaded, 0, 'registering loads nothing');
  const store = await openStore(storage('registry-test'), { maxSize: null });
  t.equal(loaded, 1);
  t.equal(made, 1);
  await store.init();
  t.teardown(() => store.blobs.close());
  t.same(store.blobs.stats(), { cachedBytes: 0, cachedCount: 0, pinnedBytes: 0, pinnedCount: 0 });
});

t.test('an unknown name, or a name registered twice, is an error', async (t) => {
  await t.rejects(createBackend(storage('tape')), /no backend named "tape"/);
  t.throws(() => registerBackend('filesystem', async () => () => new MemoryBackend()), /registered twice/);
});
