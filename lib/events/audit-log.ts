/**
 * The audit log (config `audit`): one JSON line per audited act (acts.ts, AUDITED), in a sink of
 * its own — never the debug log, whatever `log.level` says:
 *
 *   audit.file set    that file, appended; before a line would take it past audit.maxSize it is
 *                     rotated: file.N-1 → file.N … file → file.1, and file.(maxFiles+1) is deleted.
 *                     With server.workers above 1 each worker writes `<file>-w<slot>` (one writer
 *                     per file: rotation by two processes at once would lose lines).
 *   audit.file null   stdout, beside the access log, each line with `"log":"audit"`.
 *
 * Every line: {"log":"audit","time","act","id","user","address","reqId", then what the act has:
 * repository, digest, tag, previousDigest, from, tags, scopes, target, reason, via}. Lines are
 * written asynchronously; if the disk falls behind by more than MAX_BUFFERED bytes, a line is
 * dropped and counted (stevedore_audit_lines_dropped_total) rather than held in memory.
 */
import { createWriteStream, renameSync, rmSync, statSync, type WriteStream } from 'node:fs';
import type { Logger } from 'pino';
import { AUDITED, type Act } from './acts.js';

const MAX_BUFFERED = 4 * 1024 * 1024;

export interface AuditSinkOptions {
  /** null: stdout. */
  file: string | null;
  maxSize: number;
  maxFiles: number;
  log: Logger;
  /** A line dropped (the sink behind) or written. */
  onLine?: (outcome: 'written' | 'dropped') => void;
  /** For tests and stdout: where lines go when `file` is null (default process.stdout). */
  stdout?: NodeJS.WritableStream & { writableLength?: number };
}

/** The line for an act: fixed keys first, then the act's own; undefined keys left out. */
export function auditLine(act: Readonly<Act>): string {
  const { type, id, time, user, address, reqId, ...rest } = act;
  return `${JSON.stringify({ log: 'audit', time, act: type, id, user, address, reqId, ...rest })}\n`;
}

export class AuditLog {
  private stream: WriteStream | null = null;
  private size = 0;
  private broken = false;

  constructor(private readonly opts: AuditSinkOptions) {
    if (opts.file !== null) this.open();
  }

  /** The consumer of Acts: audited acts only. */
  readonly consume = (act: Readonly<Act>): void => {
    if (!AUDITED.has(act.type)) return;
    this.write(auditLine(act));
  };

  private open(): void {
    const file = this.opts.file!;
    try {
      this.size = statSync(file).size;
    } catch {
      this.size = 0;
    }
    const stream = createWriteStream(file, { flags: 'a', mode: 0o640 });
    stream.on('error', (err) => {
      // A failing audit file is loud and stays failed for this stream (reopened at the next rotation).
      if (!this.broken) this.opts.log.error({ err, file }, 'the audit log cannot be written: audit lines are dropped');
      this.broken = true;
    });
    this.stream = stream;
  }

  private write(line: string): void {
    const bytes = Buffer.byteLength(line);
    if (this.opts.file === null) {
      const out = this.opts.stdout ?? process.stdout;
      if ((out.writableLength ?? 0) > MAX_BUFFERED) return this.opts.onLine?.('dropped');
      out.write(line);
      return this.opts.onLine?.('written');
    }
    if (this.size > 0 && this.size + bytes > this.opts.maxSize) this.rotate();
    const stream = this.stream;
    if (!stream || this.broken || stream.writableLength > MAX_BUFFERED) return this.opts.onLine?.('dropped');
    stream.write(line);
    this.size += bytes;
    this.opts.onLine?.('written');
  }

  /**
   * file → file.1 (file.1 → file.2 …), the oldest beyond maxFiles deleted, a new file opened. The
   * old stream's pending lines still land in file.1: renaming keeps its open descriptor.
   */
  private rotate(): void {
    const file = this.opts.file!;
    this.stream?.end();
    this.stream = null;
    try {
      rmSync(`${file}.${this.opts.maxFiles}`, { force: true });
      for (let i = this.opts.maxFiles - 1; i >= 1; i--) {
        try {
          renameSync(`${file}.${i}`, `${file}.${i + 1}`);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
      renameSync(file, `${file}.1`);
    } catch (err) {
      this.opts.log.error({ err, file }, 'rotating the audit log failed; writing on to the same file');
    }
    this.broken = false;
    this.open();
  }

  /** Flushes and closes the file (at shutdown). */
  async close(): Promise<void> {
    const stream = this.stream;
    this.stream = null;
    if (!stream) return;
    await new Promise<void>((resolve) => stream.end(() => resolve()));
  }
}
