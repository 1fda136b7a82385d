/**
 * A byte meter in front of a server: a TCP pass-through on 127.0.0.1 that counts every byte the
 * server sends back through it, HTTP heads included (scenario 10: what the central cache serves
 * to the node instances).
 *
 *   node instances ─► meter (counts server → client) ─► central stevedore
 *
 * Counted on the wire as it is read from the server, not from the server's own access log: a
 * transfer cut short counts the bytes it sent (stevedore logs `bytes: 0` for an aborted answer),
 * and a server that sent more than it logged cannot hide it. Below HTTP: no parsing, one copy.
 */
import net, { type AddressInfo } from 'node:net';

export interface Meter {
  /** http://127.0.0.1:PORT: give this to the clients instead of the server's URL. */
  url: string;
  /** Bytes the server sent since the last reset (heads and bodies, responses still streaming included). */
  bytes(): number;
  /** Connections opened through the meter since the last reset. */
  connections(): number;
  resetCounts(): void;
  stop(): Promise<void>;
}

export async function startMeter(target: string): Promise<Meter> {
  const u = new URL(target);
  const host = u.hostname;
  const port = Number(u.port);
  let bytes = 0;
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    connections++;
    const upstream = net.connect({ host, port });
    sockets.add(client);
    sockets.add(upstream);
    // Either side gone: the other one too (a reset from a client reaches the server as a close).
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', () => {
        sockets.delete(s);
        end();
      });
    }
    upstream.on('data', (c: Buffer) => {
      bytes += c.length;
    });
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  let stopped = false;
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    bytes: () => bytes,
    connections: () => connections,
    resetCounts() {
      bytes = 0;
      connections = 0;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}
