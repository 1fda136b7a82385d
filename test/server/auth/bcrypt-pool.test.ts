import bcrypt from 'bcryptjs';
import t from 'tap';
import { BcryptPool, HashQueueFullError } from '../../../lib/server/auth/bcrypt-pool.js';

const HASH4 = bcrypt.hashSync('wonderland', 4);

t.test('compare tells a matching password from a wrong one, like bcrypt', async (t) => {
  const pool = new BcryptPool({ threads: 2 });
  t.teardown(() => pool.close());
  t.equal(await pool.compare('wonderland', HASH4), true);
  t.equal(await pool.compare('Wonderland', HASH4), false);
  t.equal(await pool.compare('wonderland', HASH4.replace(/^\$2b\$/, '$2y$')), true, "Apache's $2y$ prefix");
});

t.test('at most `threads` compares run at once and `maxQueue` wait; one more is refused at once with a wait estimate', async (t) => {
  const pool = new BcryptPool({ threads: 2, maxQueue: 3 });
  t.teardown(() => pool.close());
  const slow = bcrypt.hashSync('x', 10);
  const accepted = Array.from({ length: 5 }, () => pool.compare('guess', slow));
  t.equal(pool.running, 2);
  t.equal(pool.queued, 3);
  const refusedAt = performance.now();
  const err = await pool.compare('guess', slow).catch((e: unknown) => e);
  t.ok(performance.now() - refusedAt < 50, 'refused without waiting');
  t.ok(err instanceof HashQueueFullError, 'HashQueueFullError');
  t.ok((err as HashQueueFullError).retryAfterMs > 0, 'with how long to wait');
  t.same(await Promise.all(accepted), [false, false, false, false, false], 'the accepted compares all ran');
  t.equal(pool.completed, 5);
  t.equal(await pool.compare('x', slow), true, 'once they are done, the pool takes compares again');
});

t.test('a hash bcrypt cannot read fails that compare only', async (t) => {
  const pool = new BcryptPool({ threads: 1 });
  t.teardown(() => pool.close());
  await t.rejects(pool.compare('x', `$3b$04$${'a'.repeat(53)}`), /bcrypt compare failed: .*salt version/);
  t.equal(await pool.compare('wonderland', HASH4), true);
});

t.test('close rejects the compares still waiting and running', async (t) => {
  const pool = new BcryptPool({ threads: 1, maxQueue: 5 });
  const slow = bcrypt.hashSync('x', 12);
  const running = t.rejects(pool.compare('x', slow), /closed/);
  const waiting = t.rejects(pool.compare('x', slow), /closed/);
  await pool.close();
  await Promise.all([running, waiting]);
  await t.rejects(pool.compare('x', HASH4), /closed/);
});
