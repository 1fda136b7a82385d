/** Small helpers for HTTP answers read with undici (an upstream's, a peer's). */
import type { Readable } from 'node:stream';

/** A header's first value (undici gives repeated headers as an array). */
export function header(h: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Drops a body we will not read. undici reports a destroyed, unread body as an error event; with
 * nobody listening that would crash the process.
 */
export function discard(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}
