// `log.format`: a person running `stevedore serve` on a terminal reads one line per event; a pipe
// (a container's stdout, a log shipper) gets JSON lines as before. The real `serve`, on a
// pseudo-terminal from util-linux `script` and on a pipe.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { request } from 'undici';
import { freePort, run, tmpDir, which } from '../fixtures/util.js';
import { stevedoreArgv } from '../fixtures/entry.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Runs `serve` on a terminal or a pipe, asks it for /healthz and /v2/ once it answers, then stops
 * it with SIGTERM (as a container runtime does; `timeout` only in case it never answers), and
 * returns everything it wrote to stdout. A loaded machine may take many seconds to start it through
 * the TypeScript loader: the test waits for it to answer, not for a fixed time.
 */
async function serveOutput(t: Parameters<typeof tmpDir>[0], opts: { tty: boolean; format?: string; env?: Record<string, string> }): Promise<string> {
  const dir = await tmpDir(t);
  const port = await freePort();
  const cfg = path.join(dir, 'stevedore.yaml');
  await fsp.writeFile(
    cfg,
    JSON.stringify({ listen: `127.0.0.1:${port}`, storage: { path: path.join(dir, 'store') }, upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, ...(opts.format ? { log: { format: opts.format } } : {}) }),
  );
  const argv = [which('timeout'), '-s', 'TERM', '60', ...stevedoreArgv(['serve', '--config', cfg])];
  const env = { ...process.env, STEVEDORE_CONFIG: '', TERM: 'xterm', ...opts.env };
  const running = opts.tty
    ? run(which('script'), ['-qec', argv.map((a) => `'${a}'`).join(' '), '/dev/null'], { cwd: ROOT, env, timeoutMs: 90_000 })
    : run(argv[0]!, argv.slice(1), { cwd: ROOT, env, timeoutMs: 90_000 });
  // Ask it something once it listens, so that request lines are logged too.
  for (let i = 0; i < 1_000; i++) {
    try {
      await (await request(`http://127.0.0.1:${port}/healthz`)).body.text();
      await (await request(`http://127.0.0.1:${port}/v2/`)).body.text();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  // The stevedore process alone (its command line starts with this node), not `timeout` or `script`.
  const self = `^${process.execPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} .*${cfg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`;
  await run(which('pkill'), ['-TERM', '-f', self], { cwd: ROOT, timeoutMs: 10_000 }).catch(() => undefined);
  const r = await running;
  return r.stdout;
}

const isJsonLine = (l: string): boolean => {
  try {
    return typeof JSON.parse(l) === 'object';
  } catch {
    return false;
  }
};
const lines = (out: string): string[] => out.split(/\r?\n/).filter((l) => l.trim() !== '');

t.test('on a terminal (format auto): one readable line per event, no JSON', async (t) => {
  const out = await serveOutput(t, { tty: true });
  const ls = lines(out);
  t.ok(ls.length >= 3, `${ls.length} lines`);
  t.equal(ls.filter(isJsonLine).length, 0, 'no JSON line');
  t.match(out, /INFO.*stevedore listening/, 'the start-up line, readable with its level');
  t.match(out, /request/, 'request lines');
  t.match(out, /GET/, 'with the method');
  t.match(out, /\/healthz/, 'and the path');
});

t.test('on a pipe (format auto): JSON lines, as log shippers read them', async (t) => {
  const out = await serveOutput(t, { tty: false });
  const ls = lines(out);
  t.ok(ls.length >= 3, `${ls.length} lines`);
  t.equal(ls.filter((l) => !isJsonLine(l)).length, 0, 'every line is JSON');
  t.ok(ls.map((l) => JSON.parse(l) as { msg?: string }).some((r) => r.msg === 'stevedore listening'));
});

t.test('format json on a terminal: JSON lines (STEVEDORE_LOG_FORMAT=json)', async (t) => {
  const out = await serveOutput(t, { tty: true, env: { STEVEDORE_LOG_FORMAT: 'json' } });
  const ls = lines(out);
  t.ok(ls.length >= 3);
  t.equal(ls.filter((l) => !isJsonLine(l)).length, 0, 'every line is JSON');
});

t.test('format pretty on a pipe: readable lines, without colour codes', async (t) => {
  const out = await serveOutput(t, { tty: false, format: 'pretty' });
  t.equal(lines(out).filter(isJsonLine).length, 0, 'no JSON line');
  t.match(out, /INFO.*stevedore listening/);
  t.notOk(out.includes('\u001b['), 'no escape sequences in a file or pipe');
});

t.test('an unknown log.format is refused under its key', async (t) => {
  const dir = await tmpDir(t);
  const cfg = path.join(dir, 'stevedore.yaml');
  await fsp.writeFile(cfg, JSON.stringify({ log: { format: 'fancy' } }));
  const [node, ...argv] = stevedoreArgv(['serve', '--config', cfg]);
  const r = await run(node!, argv, {
    cwd: ROOT,
    env: { ...process.env, STEVEDORE_CONFIG: '' },
    timeoutMs: 30_000,
  });
  t.equal(r.code, 2);
  t.match(r.stderr, /log\.format: /);
});
