// The last-resort policy (lib/server/last-resort.ts, README "When something fails unexpectedly"),
// on a real `stevedore serve` process with defects planted by test/fixtures/plant-defects.mjs:
// an unhandled rejection is logged, counted, and serving goes on; an uncaught exception is logged,
// counted, the transfers in flight finish, and the process exits 1 for its supervisor.
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { request } from 'undici';
import { makeBlob, pushBlob } from '../fixtures/images.js';
import { startRegistry } from '../fixtures/registry.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { waitFor } from '../fixtures/util.js';

const PLANT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'plant-defects.mjs');
const MiB = 1024 * 1024;

async function metricsText(url: string): Promise<string> {
  return (await request(`${url}/metrics`)).body.text();
}

t.test('an unhandled rejection is logged with its stack and counted, and the process keeps serving', async (t) => {
  const proc = await spawnStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } } }, { nodeArgs: ['--import', PLANT], expectDefects: true });
  process.kill(proc.pid, 'SIGUSR2');
  await waitFor('the rejection to be logged', async () => proc.logs.some((l) => l.event === 'unhandledRejection'), 10_000);
  const line = proc.logs.find((l) => l.event === 'unhandledRejection')!;
  t.match((line.err as { stack: string }).stack, /planted: a rejection nobody handles/, 'the stack is logged');
  t.equal(line.level, 50, 'at level error');
  t.equal((await request(`${proc.url}/v2/`)).statusCode, 200, 'still answering');
  t.match(await metricsText(proc.url), /^stevedore_internal_errors_total\{kind="unhandled_rejection"\} 1$/m, 'counted');
  t.equal(proc.child.exitCode, null, 'still running');
});

t.test('an uncaught exception lets the transfer in flight finish, then exits 1', async (t) => {
  const reg = await startRegistry({ bytesPerSecond: 4 * MiB });
  t.teardown(() => reg.stop());
  const blob = makeBlob(randomBytes(3 * MiB), 'application/octet-stream');
  await pushBlob(reg.directUrl, 'library/drain', blob);
  const proc = await spawnStevedore(t, { defaultUpstream: 'docker.io', upstreams: { 'docker.io': { url: reg.url } } }, { nodeArgs: ['--import', PLANT], expectDefects: true });
  const exit = new Promise<number | null>((resolve) => proc.child.once('exit', (code) => resolve(code)));
  const res = await request(`${proc.url}/v2/library/drain/blobs/${blob.digest}`);
  t.equal(res.statusCode, 200);
  const hash = createHash('sha256');
  let signalled = false;
  for await (const c of res.body as AsyncIterable<Buffer>) {
    hash.update(c);
    if (!signalled) {
      // The download is under way: now the defect.
      signalled = true;
      process.kill(proc.pid, 'SIGHUP');
    }
  }
  t.equal(`sha256:${hash.digest('hex')}`, blob.digest, 'the transfer in flight finished with every byte');
  t.equal(await exit, 1, 'then the process exited with status 1');
  const fatal = proc.logs.find((l) => l.event === 'uncaughtException');
  t.ok(fatal, 'the exception was logged');
  t.equal(fatal?.level, 60, 'at level fatal');
  t.match((fatal?.err as { stack: string } | undefined)?.stack, /planted: an exception out of a callback/);
  t.ok(proc.logs.some((l) => l.msg === 'draining'), 'it drained first');
});
