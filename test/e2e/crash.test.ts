// Crash safety (rule 6 of docs/ARCHITECTURE.md): kill -9 during concurrent cold pulls leaves a store in which
// every file verifies; a restart sweeps the temp files and the same pulls then succeed.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { makeBlob, pushBlob } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { tmpDir } from '../fixtures/util.js';

const MiB = 1024 * 1024;

async function hashFile(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file) as AsyncIterable<Buffer>) h.update(c);
  return h.digest('hex');
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(path.join(e.parentPath, e.name));
  }
  return out;
}

async function getDigest(url: string): Promise<string> {
  const res = await request(url);
  const h = createHash('sha256');
  for await (const c of res.body as AsyncIterable<Buffer>) h.update(c);
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
  return `sha256:${h.digest('hex')}`;
}

t.test('kill -9 during concurrent cold pulls, then restart', async (t) => {
  const reg = await startRegistry({ bytesPerSecond: 16 * MiB });
  t.teardown(() => reg.stop());
  const small = [0, 1, 2].map(() => makeBlob(randomBytes(64 * 1024), 'application/octet-stream'));
  const large = [0, 1, 2, 3].map(() => makeBlob(randomBytes(8 * MiB), 'application/octet-stream'));
  for (const b of [...small, ...large]) await pushBlob(reg.directUrl, 'library/crash', b);
  const storage = path.join(await tmpDir(t, 'stevedore-crash-'), 'data');
  const config = { storage: { path: storage }, defaultUpstream: 'docker.io', upstreams: { 'docker.io': { url: reg.url } } };
  const blobUrl = (base: string, digest: string): string => `${base}/v2/library/crash/blobs/${digest}?ns=docker.io`;

  const first = await spawnStevedore(t, config);
  for (const b of small) t.equal(await getDigest(blobUrl(first.url, b.digest)), b.digest, 'small blob stored before the crash');
  // Three clients per large blob, mid-download when the process dies.
  const inflight = large.flatMap((b) => [0, 1, 2].map(() => getDigest(blobUrl(first.url, b.digest)).catch((err: unknown) => err)));
  await new Promise((r) => setTimeout(r, 400));
  const tmpBefore = await fsp.readdir(path.join(storage, 'tmp'));
  t.ok(tmpBefore.length > 0, `downloads were in progress (${tmpBefore.length} temp files)`);
  await first.kill('SIGKILL');
  const outcomes = await Promise.all(inflight);
  t.ok(outcomes.every((o) => o instanceof Error), 'every in-flight transfer failed visibly (none looked complete)');

  const stored = await filesUnder(path.join(storage, 'blobs'));
  t.ok(stored.length >= small.length, `${stored.length} files in the store after the crash`);
  for (const f of stored) t.equal(await hashFile(f), path.basename(f), `${path.basename(f).slice(0, 12)} verifies`);

  const second = await spawnStevedore(t, config);
  t.same(await fsp.readdir(path.join(storage, 'tmp')), [], 'temp files swept at start-up');
  const swept = second.logs.find((l) => l.msg === 'removed temp files of interrupted downloads');
  t.ok(swept, 'the sweep was logged');
  reg.resetCounts();
  for (const b of small) t.equal(await getDigest(blobUrl(second.url, b.digest)), b.digest, 'small blob served after restart');
  t.equal(reg.count('GET', /\/blobs\//), 0, 'from the store: the index was rebuilt');
  const again = await Promise.all(large.map((b) => getDigest(blobUrl(second.url, b.digest))));
  t.same(again, large.map((b) => b.digest), 'the interrupted pulls now succeed');
  for (const f of await filesUnder(path.join(storage, 'blobs'))) t.equal(await hashFile(f), path.basename(f));
});
