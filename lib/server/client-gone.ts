/**
 * A signal that aborts when the client of a request goes away before its answer is complete: work
 * done only for that answer (following an upstream's tag list pages) stops with it.
 */
import type { ServerResponse } from 'node:http';

export function clientGone(res: ServerResponse): AbortSignal {
  const controller = new AbortController();
  // 'close' comes when the answer is complete, or when the connection ended before it was.
  res.once('close', () => {
    if (!res.writableFinished) controller.abort(new DOMException('the client went away', 'AbortError'));
  });
  return controller.signal;
}
