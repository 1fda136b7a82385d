/**
 * lru-cache options for a cache of at most `entries` entries that takes memory as it fills.
 * lru-cache's `max` allocates room for every entry up front (keys, values and links: ~28 bytes
 * per entry, 5.6 MiB for 200,000) whether or not the cache is ever used; `maxSize` counting one
 * per entry bounds it the same and grows with use (issue 28: fresh RSS).
 */
export function upTo(entries: number): { maxSize: number; sizeCalculation: () => number } {
  return { maxSize: entries, sizeCalculation: () => 1 };
}
