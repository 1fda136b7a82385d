/** A TCP connection attempt and nothing more (`stevedore doctor`'s reachability checks). */
import net from 'node:net';

/** Connects to host:port and hangs up; resolves with the address reached, rejects within `timeoutMs`. */
export function tcpConnect(host: string, port: number, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`timed out after ${timeoutMs / 1000} s`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      const addr = `${sock.remoteAddress ?? host}:${sock.remotePort ?? port}`;
      sock.destroy();
      resolve(addr);
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    });
  });
}
