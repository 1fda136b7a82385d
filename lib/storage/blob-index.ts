/**
 * The in-memory index of what the store holds: digest → size, in least-recently-served order
 * (lru-cache). Bounded by `storage.maxSize`: when new content would exceed it, the least recently
 * served content is deleted. Pinned content (hosted or seeded) is kept apart and never evicted.
 *
 * A reader that already opened a file keeps reading it after an eviction unlinks it (POSIX keeps
 * the data until the last descriptor closes), so eviction never cuts a transfer short; the space
 * is freed when that reader finishes.
 */
import { LRUCache } from 'lru-cache';

export interface IndexEntry {
  size: number;
  /** When the file's mtime was last set to record recency (ms since epoch). */
  touchedAt: number;
}

export interface BlobIndexOptions {
  /** Bytes of unpinned content the store may hold; null: unbounded. */
  maxSize: number | null;
  /** Called for each evicted digest: delete its file. */
  onEvict: (digest: string, entry: IndexEntry) => void;
}

export class BlobIndex {
  private readonly lru: LRUCache<string, IndexEntry>;
  private readonly pinned = new Map<string, number>();
  private pinnedBytes = 0;
  private readonly maxSize: number | null;
  private readonly onEvict: BlobIndexOptions['onEvict'];
  /** Evictions since start (metrics). */
  evictions = 0;

  constructor(opts: BlobIndexOptions) {
    this.maxSize = opts.maxSize;
    this.onEvict = opts.onEvict;
    this.lru = new LRUCache<string, IndexEntry>({
      // Unbounded still needs a bound for lru-cache: one no store reaches.
      maxSize: opts.maxSize ?? Number.MAX_SAFE_INTEGER,
      sizeCalculation: (e: IndexEntry) => Math.max(1, e.size),
      dispose: (entry, digest, reason) => {
        if (reason === 'evict') {
          this.evictions++;
          opts.onEvict(digest, entry);
        }
      },
    });
  }

  /** Records content just committed (or found at start-up), as the most recently used. */
  add(digest: string, size: number, touchedAt: number, pinned = false): void {
    if (pinned || this.pinned.has(digest)) {
      this.pin(digest, size);
      return;
    }
    if (this.maxSize !== null && size > this.maxSize) {
      // Larger than the whole cache: served to whoever is reading it now, then gone.
      this.evictions++;
      this.onEvict(digest, { size, touchedAt });
      return;
    }
    this.lru.set(digest, { size, touchedAt });
  }

  /** Size of stored content and, for cached content, refreshes its recency. */
  use(digest: string): IndexEntry | null {
    const p = this.pinned.get(digest);
    if (p !== undefined) return { size: p, touchedAt: Number.MAX_SAFE_INTEGER };
    return this.lru.get(digest) ?? null;
  }

  /** Size without touching recency. */
  peek(digest: string): number | null {
    return this.pinned.get(digest) ?? this.lru.peek(digest)?.size ?? null;
  }

  has(digest: string): boolean {
    return this.pinned.has(digest) || this.lru.has(digest);
  }

  /** Moves content out of the evictable set for good. */
  pin(digest: string, size?: number): void {
    const entry = this.lru.peek(digest);
    const bytes = size ?? entry?.size;
    if (bytes === undefined || this.pinned.has(digest)) return;
    if (entry) this.lru.delete(digest); // reason 'delete': no file is removed
    this.pinned.set(digest, bytes);
    this.pinnedBytes += bytes;
  }

  isPinned(digest: string): boolean {
    return this.pinned.has(digest);
  }

  /** Forgets content whose file is gone (deleted by hand, or by gc). */
  remove(digest: string): void {
    this.lru.delete(digest);
    const p = this.pinned.get(digest);
    if (p !== undefined) {
      this.pinned.delete(digest);
      this.pinnedBytes -= p;
    }
  }

  /** Every entry: cached ones from least to most recently used, then pinned ones. */
  *entries(): Generator<{ digest: string; size: number; touchedAt: number }> {
    for (const digest of this.lru.rkeys()) {
      const e = this.lru.peek(digest);
      if (e) yield { digest, size: e.size, touchedAt: e.touchedAt };
    }
    for (const [digest, size] of this.pinned) yield { digest, size, touchedAt: 0 };
  }

  /** Digests from least to most recently used (evictable ones only). */
  evictionOrder(): string[] {
    return [...this.lru.rkeys()];
  }

  stats(): { cachedBytes: number; cachedCount: number; pinnedBytes: number; pinnedCount: number } {
    let cachedBytes = 0;
    for (const e of this.lru.values()) cachedBytes += e.size;
    return { cachedBytes, cachedCount: this.lru.size, pinnedBytes: this.pinnedBytes, pinnedCount: this.pinned.size };
  }
}
