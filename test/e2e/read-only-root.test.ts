// The Kubernetes manifests run stevedore with `readOnlyRootFilesystem: true`, only its store (and
// the read-only config) mounted: here it runs that way for real. In a mount namespace of its own
// every filesystem is remounted read-only and a fresh tmpfs is mounted as the store; stevedore
// then starts, answers its probes, pulls a blob through from the registry (temp file, verify,
// rename), serves it again from the store, and drains on SIGTERM.
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { makeBlob, pushBlob } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { tmpDir, which } from '../fixtures/util.js';

/** Remounts every mount but /proc, /sys and /dev read-only, proves it, mounts a tmpfs on $STORE, then execs the command after it. */
const READ_ONLY_ROOT = `
set -e
mount --make-rprivate /
for m in $(awk '{print $2}' /proc/self/mounts | sort -u); do
  case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/pts|/dev/mqueue) ;; *) mount -o remount,bind,ro "$m" 2>/dev/null || true ;; esac
done
for d in / "$PROBE" "$PWD"; do
  if ( : > "$d/.stevedore-rw-probe" ) 2>/dev/null; then echo "$d is still writable" >&2; rm -f "$d/.stevedore-rw-probe"; exit 97; fi
done
mount -t tmpfs -o size=64m,mode=0755 tmpfs "$STORE"
# tap's process-info hook (in NODE_OPTIONS) writes a record of every child under .tap/ when it
# exits, which the read-only disk refuses; the TypeScript loader is on the command line.
unset NODE_OPTIONS
exec "$@"
`;

t.test('stevedore runs with a read-only root filesystem, only its store writable', async (t) => {
  which('unshare');
  which('mount');
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const blob = makeBlob(randomBytes(3 * 1024 * 1024 + 17), 'application/octet-stream');
  await pushBlob(reg.directUrl, 'library/ro', blob);

  const dir = await tmpDir(t, 'stevedore-ro-');
  const store = path.join(dir, 'store');
  await fsp.mkdir(store);
  // Not root (a developer's machine): a user namespace maps this user to root for the mounts.
  const unshare = process.getuid?.() === 0 ? ['unshare', '--mount'] : ['unshare', '--mount', '--map-root-user'];
  process.env.STORE = store;
  process.env.PROBE = dir;
  t.teardown(() => {
    delete process.env.STORE;
    delete process.env.PROBE;
  });
  const p = await spawnStevedore(
    t,
    { storage: { path: store, maxSize: '32MiB' }, defaultUpstream: 'docker.io', upstreams: { 'docker.io': { url: reg.url } } },
    { wrapper: [...unshare, 'sh', '-c', READ_ONLY_ROOT, 'sh'] },
  );

  for (const probe of ['/healthz', '/readyz']) {
    const res = await request(`${p.url}${probe}`);
    await res.body.dump();
    t.equal(res.statusCode, 200, `${probe} answers 200`);
  }
  const get = async (): Promise<string> => {
    const res = await request(`${p.url}/v2/library/ro/blobs/${blob.digest}?ns=docker.io`);
    const h = createHash('sha256');
    for await (const c of res.body as AsyncIterable<Buffer>) h.update(c);
    t.equal(res.statusCode, 200);
    return `sha256:${h.digest('hex')}`;
  };
  t.equal(await get(), blob.digest, 'a cold blob is pulled through and verified');
  t.equal(await get(), blob.digest, 'and served again');
  t.equal(reg.count('GET', /\/blobs\//), 1, 'the second time from the store (written on the tmpfs)');
  await fsp.access(path.join(store, 'blobs')).then(
    () => t.fail('the store was written outside the mount namespace'),
    () => t.pass('the store lived on the tmpfs of the mount namespace, not on the (read-only) disk'),
  );
  await p.kill('SIGTERM');
  t.equal(p.child.exitCode, 0, 'drained and exited 0 on SIGTERM');
  const problems = p.logs.filter((l) => Number(l.level) >= 40 || /EROFS|read-only/i.test(JSON.stringify(l)));
  t.same(problems, [], 'no warning or error logged');
  t.same(p.defects, [], 'no defect');
});
