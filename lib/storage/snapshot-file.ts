/** The index snapshot as a local file (the filesystem backend's root, the S3 backend's working directory). */
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { FILE_MODE } from './modes.js';

/** The snapshot's bytes; null when there is none (or it cannot be read). */
export async function readSnapshotFile(file: string): Promise<Buffer | null> {
  try {
    return await fsp.readFile(file);
  } catch {
    return null;
  }
}

/** Writes the snapshot atomically (a temp file in `tmpDir`, then a rename): a crash keeps the previous one. */
export async function writeSnapshotFile(file: string, tmpDir: string, chunks: readonly string[]): Promise<void> {
  const tmp = path.join(tmpDir, `index-${randomBytes(6).toString('hex')}.snapshot`);
  // latin1: how it is read back (digests and numbers are ASCII).
  await fsp.writeFile(tmp, chunks, { mode: FILE_MODE, encoding: 'latin1' });
  await fsp.rename(tmp, file);
}
