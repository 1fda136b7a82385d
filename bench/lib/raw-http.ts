/**
 * A minimal HTTP/1.1 GET client for throughput measurements: one keep-alive connection, one
 * request at a time, bodies read with `onread` into one reused buffer and only counted. undici
 * parses in WebAssembly and copies every chunk into it, which caps one connection near 1 GiB/s on
 * this machine — below what nginx serves — so the warm-blob scenarios also run with this client.
 * Answers must carry Content-Length (every contender's blob answers do); chunked bodies are refused.
 */
import net from 'node:net';

export interface RawGot {
  status: number;
  bytes: number;
  ms: number;
}

const READ_BUFFER = 256 * 1024;
const CRLFCRLF = Buffer.from('\r\n\r\n');

export class RawConnection {
  private readonly socket: net.Socket;
  private readonly connected: Promise<void>;
  private head: Buffer[] = [];
  private headLen = 0;
  private state: 'idle' | 'head' | 'body' = 'idle';
  private remaining = 0;
  private current: { status: number; bytes: number; t0: number; resolve: (g: RawGot) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;

  constructor(
    private readonly host: string,
    port: number,
  ) {
    const buffer = Buffer.allocUnsafe(READ_BUFFER);
    this.socket = net.connect({ host, port, noDelay: true, onread: { buffer, callback: (n: number, buf: Buffer) => this.onData(buf, n) } });
    this.connected = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
    this.connected.catch(() => undefined);
    this.socket.on('error', (e) => this.fail(e));
    this.socket.on('close', () => this.fail(new Error('connection closed')));
  }

  private fail(e: Error): void {
    this.failure ??= e;
    const c = this.current;
    this.current = null;
    this.state = 'idle';
    c?.reject(e);
  }

  private onData(buf: Buffer, n: number): boolean {
    const c = this.current;
    if (!c) return true;
    let off = 0;
    if (this.state === 'head') {
      // Headers are small: copy until the blank line shows up.
      const part = Buffer.from(buf.subarray(0, n));
      this.head.push(part);
      this.headLen += n;
      const all = this.head.length === 1 ? part : Buffer.concat(this.head, this.headLen);
      const end = all.indexOf(CRLFCRLF);
      if (end === -1) return true;
      const text = all.subarray(0, end).toString('latin1');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? NaN);
      const cl = /\r\ncontent-length:\s*(\d+)/i.exec(text);
      if (/\r\ntransfer-encoding:\s*chunked/i.test(text) || !cl) {
        this.socket.destroy();
        this.fail(new Error(`raw client: answer without Content-Length (status ${status})`));
        return false;
      }
      c.status = status;
      this.remaining = Number(cl[1]);
      this.state = 'body';
      this.head = [];
      this.headLen = 0;
      // Body bytes that came with the headers.
      const bodyInAll = all.length - (end + 4);
      c.bytes += Math.min(bodyInAll, this.remaining);
      this.remaining -= Math.min(bodyInAll, this.remaining);
      off = n; // consumed
    }
    if (this.state === 'body' && off < n) {
      const take = Math.min(n - off, this.remaining);
      c.bytes += take;
      this.remaining -= take;
    }
    if (this.state === 'body' && this.remaining === 0) {
      this.state = 'idle';
      this.current = null;
      c.resolve({ status: c.status, bytes: c.bytes, ms: performance.now() - c.t0 });
    }
    return true;
  }

  async get(path: string, headers: Record<string, string> = {}): Promise<RawGot> {
    await this.connected;
    if (this.failure) throw this.failure;
    if (this.current) throw new Error('raw client: one request at a time');
    const lines = [`GET ${path} HTTP/1.1`, `Host: ${this.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), '', ''];
    return new Promise<RawGot>((resolve, reject) => {
      this.current = { status: 0, bytes: 0, t0: performance.now(), resolve, reject };
      this.state = 'head';
      this.socket.write(lines.join('\r\n'));
    });
  }

  close(): void {
    this.failure ??= new Error('closed');
    this.socket.destroy();
  }
}
