/** Reading a small request body (a form, a JSON document) with a bound. */
import type { IncomingMessage } from 'node:http';

/**
 * The request's body as UTF-8, read up to `max` bytes: a declared or actual body past it rejects
 * with `tooLarge()` at once, and reading stops (the edge closes the connection rather than read the
 * rest: create-server's closeIfBodyUnread). A client that hangs up mid-body rejects too (neither
 * 'end' nor, without a reader, always 'error' follows).
 */
export function readBoundedBody(req: IncomingMessage, max: number, tooLarge: () => Error): Promise<string> {
  if (Number(req.headers['content-length'] ?? NaN) > max) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= max) return void chunks.push(chunk);
      req.off('data', onData);
      req.pause();
      reject(tooLarge());
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
    req.once('close', () => reject(new Error('the client closed the connection before the end of its request body')));
  });
}
