/** Records (records.ts) as files under the store's root: the filesystem backend's. */
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { DIR_MODE, FILE_MODE } from '../modes.js';
import type { Records } from '../records.js';

/** Records as files under `root`; writes go through a temp file in `tmp` and a rename. */
export class FileRecords implements Records {
  constructor(
    private readonly root: string,
    private readonly tmp: string,
  ) {}

  private file(key: string): string {
    return path.join(this.root, ...key.split('/'));
  }

  async read(key: string): Promise<Buffer | null> {
    try {
      return await fsp.readFile(this.file(key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async write(key: string, data: string | Buffer): Promise<void> {
    const file = this.file(key);
    await fsp.mkdir(path.dirname(file), { recursive: true, mode: DIR_MODE });
    if (data.length === 0) {
      // An empty marker (a link, a pin) cannot be torn: no temp file needed.
      await fsp.writeFile(file, '', { mode: FILE_MODE });
      return;
    }
    const tmp = path.join(this.tmp, `${randomBytes(12).toString('hex')}.rec`);
    try {
      await fsp.writeFile(tmp, data, { mode: FILE_MODE });
      await fsp.rename(tmp, file);
    } catch (err) {
      // A disk full mid-write leaves a torn temp file: removed, nothing partial stays.
      await fsp.rm(tmp, { force: true });
      throw err;
    }
  }

  async remove(key: string): Promise<boolean> {
    try {
      await fsp.unlink(this.file(key));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  async exists(key: string): Promise<boolean> {
    return fsp.access(this.file(key)).then(
      () => true,
      () => false,
    );
  }

  async list(dir: string): Promise<string[]> {
    try {
      return await fsp.readdir(this.file(dir));
    } catch {
      return [];
    }
  }
}
