// The coordinator of a host's workers (lib/cluster/ipc/): the contract (coordinator-contract.ts)
// through a real IPC channel to a forked child holding the state, as workers reach their
// supervisor; then what only it does: a worker that dies gives its leases up at once.
import t, { type Test } from 'tap';
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { IpcCoordinator } from '../../lib/cluster/ipc/coordinator.js';
import { IpcCoordinatorHost } from '../../lib/cluster/ipc/host.js';
import type { IpcChannel } from '../../lib/cluster/ipc/protocol.js';
import { coordinatorContract } from './coordinator-contract.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'ipc-coordinator-child.ts');
const fresh = (): string => `test:${Math.random().toString(36).slice(2)}:`;

function forkChild(args: string[]): ChildProcess {
  return fork(CHILD, args, { execArgv: ['--import', '@tapjs/typescript/import'], env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

/** The child's next message to the test (not a coordinator call). */
async function nextMessage<T>(child: ChildProcess): Promise<T> {
  for (;;) {
    const [m] = (await once(child, 'message')) as [T & { stevedoreIpc?: unknown }];
    if (m.stevedoreIpc === undefined) return m;
  }
}

coordinatorContract(t, 'ipc coordinator', async (group) => {
  const host = forkChild(['host']);
  group.teardown(() => {
    host.kill('SIGKILL');
  });
  await nextMessage(host);
  return {
    replicas: async (t) => {
      // Two workers' coordinators on the channel to the primary (each its own client on it).
      const [a, b] = [new IpcCoordinator(host as unknown as IpcChannel), new IpcCoordinator(host as unknown as IpcChannel)];
      t.teardown(async () => {
        await a.close();
        await b.close();
      });
      return { a, b, ns: fresh() };
    },
  };
});

t.test('ipc: the leases of a worker killed with -9 are free at once, not after their TTL', async (t) => {
  const host = new IpcCoordinatorHost();
  t.teardown(() => host.close());
  const ns = fresh();
  const attach = (child: ChildProcess): void => {
    const { detach } = host.attach(child as unknown as IpcChannel);
    child.once('exit', detach);
  };
  const holder = forkChild(['hold', ns, 'blob:sha256:aa']);
  attach(holder);
  const { held } = await nextMessage<{ held: string | null }>(holder);
  t.type(held, 'string', 'the first worker holds the lease (TTL 60 s)');
  t.equal(host.leasesHeld(), 1);

  const early = forkChild(['take', ns, 'blob:sha256:aa']);
  attach(early);
  t.same(await nextMessage(early), { took: false }, 'another worker cannot take it while its holder lives');
  await once(early, 'exit');

  holder.kill('SIGKILL');
  await once(holder, 'exit');
  t.equal(host.leasesHeld(), 0, 'released when the holder exited');
  const taker = forkChild(['take', ns, 'blob:sha256:aa']);
  attach(taker);
  t.same(await nextMessage(taker), { took: true }, 'the next worker takes it, 60 s before the TTL would have freed it');
  await once(taker, 'exit');
});

/** A forked worker attached to `host`, subscribed to the bus of `ns` ('listen') or publishing on it ('publish'). */
async function busWorker(t: Test, host: IpcCoordinatorHost, mode: 'listen' | 'publish', ns: string): Promise<ChildProcess> {
  const child = forkChild([mode, ns]);
  const { detach } = host.attach(child as unknown as IpcChannel);
  child.once('exit', detach);
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  await nextMessage(child);
  return child;
}

t.test('ipc: a publish resolves once every other worker has handled the message (a push is answered after)', async (t) => {
  const host = new IpcCoordinatorHost();
  t.teardown(() => host.close());
  const ns = fresh();
  const listener = await busWorker(t, host, 'listen', ns);
  const publisher = await busWorker(t, host, 'publish', ns);
  // The listener is busy for 400 ms: the message waits in its channel meanwhile.
  listener.send({ spin: 400 });
  publisher.send({ publish: 'v1' });
  const [{ published }, { got }] = await Promise.all([nextMessage<{ published: number }>(publisher), nextMessage<{ got: number }>(listener)]);
  t.ok(published >= got, `the publish resolved (${published}) after the busy worker handled it (${got})`);
});

t.test('ipc: a publish does not wait for a worker that exited meanwhile', async (t) => {
  const host = new IpcCoordinatorHost();
  t.teardown(() => host.close());
  const ns = fresh();
  const listener = await busWorker(t, host, 'listen', ns);
  const publisher = await busWorker(t, host, 'publish', ns);
  // Busy for 5 s, then killed: its acknowledgement never comes; the publish is bounded.
  listener.send({ spin: 5_000 });
  const sent = Date.now();
  publisher.send({ publish: 'v1' });
  setTimeout(() => listener.kill('SIGKILL'), 100);
  const { published } = await nextMessage<{ published: number }>(publisher);
  t.ok(published - sent < 1_500, `resolved in ${published - sent} ms, not after the stuck worker`);
});
