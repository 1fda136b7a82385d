/**
 * One promise for everyone waiting on the next event of something (a chunk written, a file grown):
 * every waiter shares it, so a wake-up costs one allocation however many wait. `fire()` resolves
 * it (or rejects it with an error) and the next `wait()` makes a new one. A rejection nobody
 * waited for is never unhandled.
 */
export class NextEvent {
  private next: { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } | null = null;

  wait(): Promise<void> {
    if (!this.next) {
      let resolve!: () => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => undefined);
      this.next = { promise, resolve, reject };
    }
    return this.next.promise;
  }

  fire(err?: Error): void {
    const next = this.next;
    this.next = null;
    if (!next) return;
    if (err) next.reject(err);
    else next.resolve();
  }
}
