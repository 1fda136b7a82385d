/**
 * Small records by key: tags, links, pins, referrers, tags lists. Keys are relative paths with `/`
 * (`repositories/docker.io/library/alpine/_tags/latest`), every component validated against the
 * OCI grammar before it gets here (paths.ts). Each storage backend has its home for them
 * (backend.ts `records`): files under the store's root (fs/file-records.ts), objects under the
 * bucket's prefix (s3/s3-records.ts), a map (memory/).
 */

export interface Records {
  /** The record's bytes; null when absent. */
  read(key: string): Promise<Buffer | null>;
  /** Writes the whole record at once: a reader sees the old bytes or the new, never half. */
  write(key: string, data: string | Buffer): Promise<void>;
  /** Deletes it; whether it existed. */
  remove(key: string): Promise<boolean>;
  exists(key: string): Promise<boolean>;
  /** The names one level under `dir` (records and "directories" alike), unsorted. */
  list(dir: string): Promise<string[]>;
}

/** A record's JSON, or null when absent or torn (it is rewritten on the next fetch). */
export async function readJsonRecord<T>(records: Records, key: string): Promise<T | null> {
  const buf = await records.read(key);
  if (!buf) return null;
  try {
    return JSON.parse(buf.toString('utf8')) as T;
  } catch {
    return null;
  }
}
