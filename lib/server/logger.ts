/** The process's logger (pino): used by `serve`, its workers and their supervisor. */
import pino, { type Logger } from 'pino';
import type { Config } from '../config/config.js';

/**
 * Where `serve` writes its log: JSON lines on stdout, or (`log.format` pretty, or auto on a
 * terminal) one readable line per event through pino-pretty, in this thread (synchronous: nothing
 * is lost when the process exits). pino-pretty is loaded only then.
 *
 * JSON lines go to pino's own destination for stdout (sonic-boom: asynchronous writes of up to
 * 16 KiB, flushed when the process exits), as Buffers: in its default (string) mode sonic-boom
 * measures the whole string gathered so far again for every line added while a write is in
 * flight, which under load grew to 6 % of a warm manifest request's CPU; in buffer mode it keeps
 * the lengths. Same bytes, same writes.
 */
export async function logDestination(format: Config['log']['format'], isTTY = process.stdout.isTTY === true): Promise<pino.DestinationStream | undefined> {
  if (format === 'json' || (format === 'auto' && !isTTY)) {
    // A stdout whose write was replaced (a test harness) is written to as it is, as pino does.
    if (process.stdout.write !== (Object.getPrototypeOf(process.stdout) as { write: unknown }).write) return undefined;
    const out = pino.destination({ dest: process.stdout.fd || 1, minLength: 0, sync: false, contentMode: 'buffer' });
    const write = out.write.bind(out) as unknown as (line: Buffer) => boolean;
    return { write: (line: string) => write(Buffer.from(line)), flush: (cb?: (err?: Error) => void) => out.flush(cb) } as pino.DestinationStream;
  }
  const { default: pretty } = await import('pino-pretty');
  return pretty({ colorize: isTTY, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service' });
}

export function createLogger(level: Config['log']['level'], destination?: pino.DestinationStream): Logger {
  const opts: pino.LoggerOptions = {
    level,
    base: { service: 'stevedore' },
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers.cookie',
        'headers.authorization',
        'authorization',
        'password',
        '*.password',
        'token',
        'access_token',
        'refresh_token',
      ],
      censor: '[redacted]',
    },
  };
  return destination ? pino(opts, destination) : pino(opts);
}
