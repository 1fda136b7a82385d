// undici's Agent made on first use (lib/util/lazy-undici.ts): one agent however many ask at once,
// nothing made to be closed, nothing made again after close.
import t from 'tap';
import { LazyAgent } from '../../lib/util/lazy-undici.js';

t.test('concurrent first uses get one agent, and later uses the same one synchronously', async (t) => {
  const lazy = new LazyAgent({ connections: 1 });
  t.notOk(lazy.created);
  const [a, b] = await Promise.all([lazy.get(), lazy.get()]);
  t.equal(a, b);
  t.equal(lazy.get(), a, 'no promise once made');
  await lazy.close();
});

t.test('closing one never used makes none; after close none is made', async (t) => {
  const lazy = new LazyAgent({});
  await lazy.close();
  t.notOk(lazy.created, 'closing made nothing');
  await t.rejects(Promise.resolve(lazy.get()), /closed/);
  t.notOk(lazy.created);
});

t.test('closing while it is being made closes it once made', async (t) => {
  const lazy = new LazyAgent({});
  const making = lazy.get();
  await lazy.close();
  const agent = await making;
  t.ok(agent.closed, 'the agent made meanwhile is closed');
});

t.test('a failed creation is not kept: the next use tries again', async (t) => {
  const lazy = new LazyAgent({ connect: 42 as never });
  await t.rejects(Promise.resolve(lazy.get()), /connect/i, "undici's own refusal of the options");
  t.notOk(lazy.created, 'nothing kept');
  await t.rejects(Promise.resolve(lazy.get()), /connect/i, 'tried again');
});

t.test('after close, a request gets the code undici gives a closed agent', async (t) => {
  const lazy = new LazyAgent({});
  await lazy.destroy();
  await t.rejects(Promise.resolve(lazy.get()), { code: 'UND_ERR_CLOSED' });
});
