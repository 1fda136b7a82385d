/**
 * Buffers kept for reuse that follow the load: `trim()` (called every few seconds) releases the
 * ones that stayed in the pool since the last trim — the fewest it held meanwhile — oldest first.
 * Nothing taken: all of them go (a burst does not keep its memory); busy: what the load no longer
 * reaches goes, rather than keeping what the busiest moment ever needed. Used by the send buffers
 * (storage/file-sender.ts) and the S3 slabs (storage/s3/pooled-get.ts).
 */
export class LowWaterPool {
  private readonly items: Buffer[] = [];
  /** The fewest buffers held since the last trim (never more than held now). */
  private lowest = 0;

  get length(): number {
    return this.items.length;
  }

  pop(): Buffer | undefined {
    const b = this.items.pop();
    if (this.items.length < this.lowest) this.lowest = this.items.length;
    return b;
  }

  push(b: Buffer): void {
    this.items.push(b);
  }

  /** Releases the buffers not taken since the last trim; how many went. */
  trim(): number {
    // pop() takes from the end, so the start holds the ones not taken.
    const n = Math.min(this.lowest, this.items.length);
    this.items.splice(0, n);
    this.lowest = this.items.length;
    return n;
  }

  /** Counts from now: the next trim releases only what stays untaken until then. */
  mark(): void {
    this.lowest = this.items.length;
  }
}
