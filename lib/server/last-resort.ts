/**
 * What happens when a defect escapes every handler. The policy, and why (README, "When something
 * fails unexpectedly"):
 *
 * - A request whose handling throws where nothing expected it (create-server's `handle`): that
 *   request fails (500, or its connection is cut if the answer had begun), the error is logged with
 *   the request id and counted; every other request goes on.
 * - A promise rejected with no handler: logged with its stack and counted; serving goes on. The
 *   work that promise belonged to has already stopped; nothing else shares its state, so ending
 *   the process would only cut every other transfer for one lost result.
 * - An exception thrown out of an event callback (uncaught): logged, counted, then the process
 *   stops taking requests, lets the transfers in flight finish (a short grace) and exits 1 for its
 *   supervisor to restart it. Such a throw may have left shared state (the store's index, a
 *   download, a session lock) half-updated; a restart rebuilds that state from the disk, which is
 *   crash-safe by construction (docs/ARCHITECTURE.md rule 6), and is the one state known to be right.
 *
 * Each is a bug: `stevedore_internal_errors_total{kind}` above 0 is worth an alert, and the test
 * suite fails on any of them in a process it starts.
 */
import type { Logger } from 'pino';
import type { Metrics } from './metrics.js';

/** The `event` field of the log line each process-level defect writes (tests look for it). */
export const DEFECT_EVENTS = ['unhandledRejection', 'uncaughtException'] as const;

export function installLastResort(opts: { log: Logger; metrics?: Metrics; fatal: (err: unknown) => void }): () => void {
  const { log, metrics } = opts;
  const onRejection = (reason: unknown): void => {
    metrics?.internalError('unhandled_rejection');
    log.error({ err: reason, event: 'unhandledRejection' }, 'unhandled promise rejection (a defect; serving goes on)');
  };
  const onException = (err: unknown): void => {
    metrics?.internalError('uncaught_exception');
    log.fatal({ err, event: 'uncaughtException' }, 'uncaught exception (a defect): draining, then exiting for a restart');
    opts.fatal(err);
  };
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return () => {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  };
}
