/** Piping a body to an HTTP answer, stopping when the client is gone whatever state the answer is in. */
import type { ServerResponse } from 'node:http';
import type { Readable, Writable } from 'node:stream';
import { buffersPassed } from './buffer-churn.js';
import { DestinationClosedError } from './destination-closed.js';

/**
 * Pipes a body (an S3 object, a stream from another replica) to an HTTP answer and ends it. Also
 * stops when the client's connection closes while the answer still waits its turn (a pipelined
 * request): Node gives such a response the connection only after the previous one, so it never
 * sees the close, and destroying it emits nothing; a plain pipeline would wait for ever, holding
 * an S3 connection. When the body fails, `dest` is left to the caller (respond.ts destroys it).
 */
export async function pump(body: Readable, dest: Writable): Promise<void> {
  await relay(body, dest, () => undefined);
  await endAnswer(dest);
}

/**
 * Writes a body into `dest` without ending it, and without destroying it when the body fails
 * (the caller may go on from another source at the byte reached): resolves when the body ended,
 * rejects when it failed, or when the client is gone (DestinationClosedError). `onBytes` counts
 * what was handed to `dest`.
 */
export function relay(body: Readable, dest: Writable, onBytes: (n: number) => void): Promise<void> {
  const socket = (dest as Partial<ServerResponse>).req?.socket;
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const done = (err?: Error): void => {
      if (settled) return;
      settled = true;
      body.off('data', onData);
      body.off('end', onEnd);
      body.off('error', onError);
      body.off('close', onPrematureClose);
      dest.off('drain', onDrain);
      dest.off('close', onGone);
      socket?.off('close', onGone);
      if (err) reject(err);
      else resolve();
    };
    const onData = (chunk: Buffer): void => {
      onBytes(chunk.length);
      buffersPassed(chunk.length);
      if (!dest.write(chunk)) body.pause();
    };
    const onDrain = (): void => void body.resume();
    const onEnd = (): void => done();
    const onError = (err: Error): void => done(err);
    const onPrematureClose = (): void => done(new Error('the body closed before its end'));
    const onGone = (): void => {
      if (dest.writableFinished) return;
      body.destroy();
      done(new DestinationClosedError());
    };
    if (dest.destroyed || socket?.destroyed) {
      onGone();
      return;
    }
    body.on('data', onData);
    body.once('end', onEnd);
    body.once('error', onError);
    body.once('close', onPrematureClose);
    dest.on('drain', onDrain);
    dest.once('close', onGone);
    socket?.once('close', onGone);
  });
}

/** Ends `dest` and resolves once it finished, or once its client is gone (whichever comes first). */
export function endAnswer(dest: Writable): Promise<void> {
  const socket = (dest as Partial<ServerResponse>).req?.socket;
  return new Promise<void>((resolve) => {
    const done = (): void => {
      socket?.off('close', done);
      dest.off('close', done);
      resolve();
    };
    socket?.once('close', done);
    dest.once('close', done);
    dest.end(done);
  });
}
