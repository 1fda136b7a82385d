import { utimes, writeFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import bcrypt from 'bcryptjs';
import pino from 'pino';
import t from 'tap';
import { BcryptPool } from '../../../lib/server/auth/bcrypt-pool.js';
import { Htpasswd, parseHtpasswd } from '../../../lib/server/auth/htpasswd.js';

// Cost 4: the cheapest bcrypt, so the tests stay fast. $2y$ (Apache's htpasswd -B) is the same
// algorithm as $2b$, only the prefix differs.
const hashB = (pw: string): string => bcrypt.hashSync(pw, 4);
const hashY = (pw: string): string => hashB(pw).replace(/^\$2b\$/, '$2y$');
const hashA = (pw: string): string => hashB(pw).replace(/^\$2b\$/, '$2a$');

function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

// ---------------------------------------------------------------- parsing

t.test('bcrypt lines of all three prefixes are read, comments and blank lines skipped', async (t) => {
  const text = `# users\n\nalice:${hashY('a')}\nbob:${hashA('b')}\r\ncarol:${hashB('c')}\n`;
  const { users, problems } = parseHtpasswd(text);
  t.same([...users.keys()], ['alice', 'bob', 'carol']);
  t.same(problems, []);
});

t.test('non-bcrypt hashes are refused line by line, naming the kind but not the hash', async (t) => {
  const text = ['md5:$apr1$abc$0123456789012345678901', 'sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=', 'plain:secret', `ok:${hashB('x')}`].join('\n');
  const { users, problems } = parseHtpasswd(text);
  t.same([...users.keys()], ['ok']);
  t.equal(problems.length, 3);
  t.match(problems[0], /^line 1 \(user md5\): MD5/);
  t.match(problems[1], /^line 2 \(user sha\): SHA1/);
  t.match(problems[2], /^line 3 \(user plain\): not a bcrypt hash/);
  t.notOk(problems.join('\n').includes('secret'), 'the plain-text password is not repeated');
});

t.test('a line without user:hash, and reserved names, are refused', async (t) => {
  const { users, problems } = parseHtpasswd(`nocolon\n:${hashB('x')}\nanonymous:${hashB('x')}\n*:${hashB('x')}\n`);
  t.equal(users.size, 0);
  t.equal(problems.length, 4);
  t.match(problems[2], /reserved/);
});

t.test('a bcrypt hash with a wrong length or cost is refused', async (t) => {
  const h = hashB('x');
  const { users } = parseHtpasswd(`short:${h.slice(0, -1)}\ncost:${h.replace('$04$', '$99$')}\n`);
  t.equal(users.size, 0);
});

t.test('a repeated user: the last line wins and the repeat is reported', async (t) => {
  const second = hashB('two');
  const { users, problems } = parseHtpasswd(`u:${hashB('one')}\nu:${second}\n`);
  t.equal(users.get('u'), second);
  t.match(problems, [/line 2: user u appears again/]);
});

// ---------------------------------------------------------------- verification and reload

t.test('verify tells ok, wrong password and unknown user apart', async (t) => {
  const dir = t.testdir({ htpasswd: `alice:${hashY('wonderland')}\nbob:${hashA('builder')}\n` });
  const h = await Htpasswd.load(path.join(dir, 'htpasswd'), { log: capture().log });
  t.equal(h.size, 2);
  t.equal(await h.verify('alice', 'wonderland'), 'ok');
  t.equal(await h.verify('bob', 'builder'), 'ok');
  t.equal(await h.verify('alice', 'Wonderland'), 'bad-password');
  t.equal(await h.verify('alice', ''), 'bad-password');
  t.equal(await h.verify('mallory', 'wonderland'), 'unknown-user');
  t.ok(await h.has('alice'));
  t.notOk(await h.has('mallory'));
});

t.test('a password is checked again after it is remembered, when the hash changed', async (t) => {
  const dir = t.testdir({ htpasswd: `alice:${hashB('old')}\n` });
  const file = path.join(dir, 'htpasswd');
  const h = await Htpasswd.load(file, { log: capture().log, checkIntervalMs: 0 });
  t.equal(await h.verify('alice', 'old'), 'ok');
  t.equal(await h.verify('alice', 'old'), 'ok', 'remembered');
  await writeFile(file, `alice:${hashB('new')}\n# changed size too\n`);
  t.equal(await h.verify('alice', 'old'), 'bad-password', 'the old password no longer works');
  t.equal(await h.verify('alice', 'new'), 'ok');
});

t.test('the file is re-read when it changes: users added and removed without a restart', async (t) => {
  const dir = t.testdir({ htpasswd: `alice:${hashB('a')}\n` });
  const file = path.join(dir, 'htpasswd');
  const { log, lines } = capture();
  const h = await Htpasswd.load(file, { log, checkIntervalMs: 0 });
  t.equal(await h.verify('bob', 'b'), 'unknown-user');
  await writeFile(file, `bob:${hashB('b')}\n`);
  t.equal(await h.verify('bob', 'b'), 'ok', 'bob was added');
  t.equal(await h.verify('alice', 'a'), 'unknown-user', 'alice was removed');
  t.ok(lines.some((l) => l.msg === 'htpasswd reloaded' && l.users === 1));
});

t.test('a change of mtime alone (same size) is noticed', async (t) => {
  const one = hashB('one');
  const two = hashB('two');
  t.equal(one.length, two.length);
  const dir = t.testdir({ htpasswd: `u:${one}\n` });
  const file = path.join(dir, 'htpasswd');
  const h = await Htpasswd.load(file, { log: capture().log, checkIntervalMs: 0 });
  await writeFile(file, `u:${two}\n`);
  const later = new Date(Date.now() + 5000);
  await utimes(file, later, later);
  t.equal(await h.verify('u', 'two'), 'ok');
});

t.test('changes are looked for at most once per interval', async (t) => {
  let now = 1_000_000;
  const dir = t.testdir({ htpasswd: `alice:${hashB('a')}\n` });
  const file = path.join(dir, 'htpasswd');
  const h = await Htpasswd.load(file, { log: capture().log, checkIntervalMs: 1000, now: () => now });
  await writeFile(file, `bob:${hashB('b')}\n`);
  now += 500;
  t.ok(await h.has('alice'), 'within the interval the old users stay');
  now += 600;
  t.ok(await h.has('bob'), 'after it, the file is read again');
  t.notOk(await h.has('alice'));
});

t.test('a file that disappears keeps the users loaded and logs an error', async (t) => {
  const dir = t.testdir({ htpasswd: `alice:${hashB('a')}\n` });
  const file = path.join(dir, 'htpasswd');
  const { log, lines } = capture();
  const h = await Htpasswd.load(file, { log, checkIntervalMs: 0 });
  await rm(file);
  t.equal(await h.verify('alice', 'a'), 'ok');
  t.ok(lines.some((l) => l.level === 50 && /unreadable/.test(String(l.msg))));
});

t.test('a missing file at start-up is an error naming the key', async (t) => {
  const dir = t.testdir({});
  await t.rejects(Htpasswd.load(path.join(dir, 'nope'), { log: capture().log }), /auth\.htpasswd: cannot read .*nope: ENOENT/);
});

t.test('refused lines are logged with their line number, never the hash', async (t) => {
  const dir = t.testdir({ htpasswd: 'md5:$apr1$abc$0123456789012345678901\n' });
  const { log, lines } = capture();
  await Htpasswd.load(path.join(dir, 'htpasswd'), { log });
  const warn = lines.find((l) => l.level === 40);
  t.match(warn?.msg, /line 1 \(user md5\): MD5/);
  t.notOk(JSON.stringify(lines).includes('0123456789012345678901'));
});

// ---------------------------------------------------------------- bcrypt rounds and timing

t.test('the same credentials checked in parallel cost one bcrypt round', async (t) => {
  const pool = new BcryptPool({ threads: 1 });
  t.teardown(() => pool.close());
  const dir = t.testdir({ htpasswd: `alice:${hashB('wonderland')}\n` });
  const h = await Htpasswd.load(path.join(dir, 'htpasswd'), { log: capture().log, pool });
  t.same(await Promise.all(Array.from({ length: 20 }, () => h.verify('alice', 'a guess'))), Array(20).fill('bad-password'));
  t.equal(pool.completed, 1);
});

t.test('a remembered password costs no bcrypt round', async (t) => {
  const pool = new BcryptPool({ threads: 1 });
  t.teardown(() => pool.close());
  const dir = t.testdir({ htpasswd: `alice:${hashB('wonderland')}\n` });
  const h = await Htpasswd.load(path.join(dir, 'htpasswd'), { log: capture().log, pool });
  for (let i = 0; i < 5; i++) t.equal(await h.verify('alice', 'wonderland'), 'ok');
  t.equal(pool.completed, 1);
});

t.test('an unknown user takes as long to refuse as a known user with a wrong password', async (t) => {
  // The users' hashes have cost 6; the unknown user must be compared against a hash of that cost too.
  const dir = t.testdir({ htpasswd: `alice:${bcrypt.hashSync('wonderland', 6)}\nbob:${bcrypt.hashSync('builder', 6)}\n` });
  const h = await Htpasswd.load(path.join(dir, 'htpasswd'), { log: capture().log });
  const time = async (user: string): Promise<number> => {
    const started = performance.now();
    await h.verify(user, 'a wrong guess');
    return performance.now() - started;
  };
  await time('alice'); // warm-up (starts the hashing worker)
  const known: number[] = [];
  const unknown: number[] = [];
  for (let i = 0; i < 15; i++) {
    known.push(await time('alice'));
    unknown.push(await time(`mallory-${i}`));
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const ratio = median(unknown) / median(known);
  t.comment(`median: known user ${median(known).toFixed(1)} ms, unknown user ${median(unknown).toFixed(1)} ms (ratio ${ratio.toFixed(2)})`);
  t.ok(ratio > 0.5 && ratio < 2, `the same cost, within a factor of 2 (ratio ${ratio.toFixed(2)})`);
});
