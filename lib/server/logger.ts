/** The process's logger (pino): used by `serve`, its workers and their supervisor. */
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';
import type { Config } from '../config/config.js';

/**
 * Where `serve` writes its log: JSON lines on stdout, or (`log.format` pretty, or auto on a
 * terminal) one readable line per event through pino-pretty, in this thread (synchronous: nothing
 * is lost when the process exits).
 */
export function logDestination(format: Config['log']['format'], isTTY = process.stdout.isTTY === true): pino.DestinationStream | undefined {
  if (format === 'json' || (format === 'auto' && !isTTY)) return undefined;
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
