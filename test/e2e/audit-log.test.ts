// The audit log (config audit, lib/events/audit-log.ts): one JSON line per security-relevant act,
// in a file of its own (rotated by size) or beside the access log with "log":"audit"; never a
// password or a token.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { readAudit, type AuditLine } from '../fixtures/audit.js';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { buildOciImage, pushImageWithBasic } from '../fixtures/images.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { tmpDir, waitFor, type Teardownable } from '../fixtures/util.js';

const USERS = { alice: 'Al1ce-audit-passw0rd', bob: 'B0b-audit-passw0rd' };
const WRONG = 'Wr0ng-audit-guess-123';
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;


async function auditedStevedore(t: Teardownable, audit: Record<string, unknown>): Promise<{ sd: Stevedore; file: string }> {
  const dir = await tmpDir(t);
  const htpasswd = path.join(dir, 'htpasswd');
  await writeFile(htpasswd, Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 5)}`).join('\n') + '\n');
  const file = path.join(dir, 'audit.log');
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: {
      registry: { hosted: ['lab/*'], delete: true },
      audit: { enabled: true, file, ...audit },
      auth: {
        htpasswd,
        rules: [
          { repository: '**', users: ['*', 'anonymous'], actions: ['pull'] },
          { repository: 'lab/*', users: ['alice'], actions: ['pull', 'push', 'delete'] },
        ],
      },
    },
  });
  return { sd, file };
}

t.test('pushes, deletes, refusals, logins and tokens are audit lines naming who, from where, what and the request', async (t) => {
  const { sd, file } = await auditedStevedore(t, {});
  const img = buildOciImage('audit/app', { layers: 1 });
  const tokens: string[] = [];
  const find = async (what: string, pred: (l: AuditLine) => boolean): Promise<AuditLine> => {
    await waitFor(what, async () => readAudit(file).some(pred), 5_000);
    return readAudit(file).find(pred)!;
  };

  await t.test('a push: the manifest and tag with its digest, the previous digest, the user, address and request id', async (t) => {
    await pushImageWithBasic(sd.url, 'lab/app', 'v1', basic('alice', USERS.alice), img);
    const push = await find('the push line', (l) => l.act === 'push');
    t.match(push, { log: 'audit', act: 'push', user: 'alice', address: '127.0.0.1', repository: 'lab/app', tag: 'v1', digest: img.manifest.digest, previousDigest: null });
    t.match(push.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const put = sd.requestLogs().find((l) => l.method === 'PUT' && /manifests\/v1$/.test(String(l.path)));
    t.ok(put, 'the manifest PUT is in the access log');
    t.equal(push.reqId, put!.reqId, 'the audit line carries the request id of the access line');
    t.ok(readAudit(file).some((l) => l.act === 'login' && l.user === 'alice' && l.via === 'basic'), 'the password check is a login line');
    const again = buildOciImage('audit/app-2', { layers: 1 });
    await pushImageWithBasic(sd.url, 'lab/app', 'v1', basic('alice', USERS.alice), again);
    const second = await find('the second push', (l) => l.act === 'push' && l.digest === again.manifest.digest);
    t.equal(second.previousDigest, img.manifest.digest, 'a tag moved by a push names the digest it had');
  });

  await t.test('a delete', async (t) => {
    const r = await fetch(`${sd.url}/v2/lab/app/manifests/v1`, { method: 'DELETE', headers: { authorization: basic('alice', USERS.alice) } });
    t.equal(r.status, 202);
    t.match(await find('the delete line', (l) => l.act === 'delete'), { act: 'delete', target: 'tag', user: 'alice', repository: 'lab/app', tag: 'v1' });
  });

  await t.test('a mount names the blob and the repository it came from', async (t) => {
    const layer = img.layers[0]!.digest;
    const r = await fetch(`${sd.url}/v2/lab/copy/blobs/uploads/?mount=${layer}&from=lab/app`, { method: 'POST', headers: { authorization: basic('alice', USERS.alice) } });
    t.equal(r.status, 201, 'mounted');
    t.match(await find('the mount line', (l) => l.act === 'mount'), { act: 'mount', user: 'alice', repository: 'lab/copy', digest: layer, from: 'lab/app' });
  });

  await t.test('access denied: a user the rules refuse', async (t) => {
    const r = await fetch(`${sd.url}/v2/lab/app/blobs/uploads/`, { method: 'POST', headers: { authorization: basic('bob', USERS.bob) } });
    t.equal(r.status, 403);
    t.match(await find('the denied line', (l) => l.act === 'access.denied'), { act: 'access.denied', user: 'bob', repository: 'lab/app', reason: /bob may not push/ });
  });

  await t.test('a failed login names the user and the reason, never the password', async (t) => {
    const r = await fetch(`${sd.url}/v2/lab/app/tags/list`, { headers: { authorization: basic('alice', WRONG) } });
    t.equal(r.status, 401);
    t.match(await find('the failed login', (l) => l.act === 'login.failed'), { act: 'login.failed', user: 'alice', via: 'basic', reason: 'bad-password', address: '127.0.0.1' });
  });

  await t.test('a token issued names its scopes', async (t) => {
    const r = await fetch(`${sd.url}/token?service=stevedore&scope=repository:lab/app:pull,push`, { headers: { authorization: basic('alice', USERS.alice) } });
    t.equal(r.status, 200);
    const { token } = (await r.json()) as { token: string };
    tokens.push(token);
    const used = await fetch(`${sd.url}/v2/lab/app/tags/list`, { headers: { authorization: `Bearer ${token}` } });
    await used.arrayBuffer();
    t.match(await find('the token line', (l) => l.act === 'token.issued'), { act: 'token.issued', user: 'alice', scopes: ['repository:lab/app:pull,push'] });
    const bad = await fetch(`${sd.url}/v2/lab/app/tags/list`, { headers: { authorization: `Bearer ${token.slice(0, -4)}AAAA` } });
    t.equal(bad.status, 401);
    await find('the forged token', (l) => l.act === 'login.failed' && l.via === 'bearer');
  });

  await t.test('no password and no token is in the audit log; audit lines are not in the process log', async (t) => {
    await sd.stop();
    const text = readFileSync(file, 'utf8');
    for (const secret of [...Object.values(USERS), WRONG, ...tokens]) t.notOk(text.includes(secret), 'a secret is absent from the audit log');
    t.notOk(/Basic [A-Za-z0-9+/=]{8,}|Bearer /.test(text), 'no Authorization value');
    t.ok(readAudit(file).every((l) => l.log === 'audit' && typeof l.act === 'string' && typeof l.id === 'string'), 'every line is an audit line');
    t.notOk(sd.logs.some((l) => l.log === 'audit'), 'the process log holds no audit line');
  });
});

t.test('the audit file is rotated by size and keeps maxFiles old files', async (t) => {
  const { sd, file } = await auditedStevedore(t, { maxSize: '4KiB', maxFiles: 2 });
  // About 200 bytes a line: 120 lines are more than three files of 4 KiB hold.
  const LINES = 120;
  for (let i = 0; i < LINES; i++) {
    const r = await fetch(`${sd.url}/token?service=stevedore&scope=repository:lab/r${i}:pull`);
    t.equal(r.status, 200);
    await r.arrayBuffer();
  }
  await sd.stop();
  t.ok(existsSync(`${file}.1`) && existsSync(`${file}.2`), 'file.1 and file.2 exist');
  t.notOk(existsSync(`${file}.3`), 'nothing past maxFiles is kept');
  for (const f of [file, `${file}.1`, `${file}.2`]) t.ok(statSync(f).size <= 4096, `${path.basename(f)} is within maxSize (${statSync(f).size} bytes)`);
  const newest = readAudit(file);
  t.match(newest.at(-1), { act: 'token.issued', scopes: ['repository:lab/r119:pull'] }, 'the newest line is in the current file');
  const kept = [...readAudit(`${file}.2`), ...readAudit(`${file}.1`), ...newest].map((l) => (l.scopes as string[])[0]);
  const firstKept = Number(/r(\d+)/.exec(kept[0]!)![1]);
  t.ok(firstKept > 0, 'the oldest lines were deleted with the oldest file');
  t.same(kept, Array.from({ length: LINES - firstKept }, (_, i) => `repository:lab/r${firstKept + i}:pull`), 'the files kept hold the newest lines, in order, none lost between them');
});

t.test('with no audit.file, audit lines go beside the access log with "log":"audit"; a configuration reload is one', async (t) => {
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, config: { audit: { enabled: true } } });
  const r = await fetch(`${sd.url}/token?service=stevedore&scope=repository:docker.io/library/x:pull`);
  t.equal(r.status, 200);
  await r.arrayBuffer();
  await waitFor('the audit line', async () => sd.logs.some((l) => l.log === 'audit'), 5_000);
  const line = sd.logs.find((l) => l.log === 'audit')!;
  t.match(line, { log: 'audit', act: 'token.issued', user: null, scopes: ['repository:docker.io/library/x:pull'] });
  t.notOk('level' in line, 'an audit line is not a leveled log line (no log level filters it)');
  // What SIGHUP does in `serve` (lib/cli/main.ts): the signature policies are read again.
  await sd.app.reloadSignaturePolicies(sd.config.verify);
  t.match(sd.logs.find((l) => l.log === 'audit' && l.act === 'config.reloaded'), { act: 'config.reloaded', reason: /signature policies/ });
});
