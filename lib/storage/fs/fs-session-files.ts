/**
 * Push sessions' bytes on the filesystem backend (session-files.ts): one directory per session
 * under `<root>/uploads/`, `info.json` and `data`, appended at the session's offset. Sessions
 * survive restarts; finishing one is one rename of `data` into blobs/.
 */
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Digest } from '../../oci/digest.js';
import type { StorePaths } from '../paths.js';
import type { SessionDoc, SessionEntry, SessionFiles } from '../session-files.js';
import { DIR_MODE, FILE_MODE } from '../modes.js';

/** Sessions as directories under `<root>/uploads/` (they survive restarts). */
export class FsSessionFiles implements SessionFiles {
  constructor(private readonly paths: StorePaths) {}

  private dir(uuid: string): string {
    return this.paths.upload(uuid);
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.paths.uploads, { recursive: true, mode: DIR_MODE });
  }

  async list(): Promise<SessionEntry[]> {
    const out: SessionEntry[] = [];
    for (const uuid of await fsp.readdir(this.paths.uploads).catch(() => [] as string[])) {
      const dir = this.dir(uuid);
      const doc = await fsp.readFile(path.join(dir, 'info.json'), 'utf8').then((t) => JSON.parse(t) as SessionDoc, () => null);
      const info = await fsp.stat(path.join(dir, 'info.json')).catch(() => null);
      const lastActive = info?.mtimeMs ?? (await fsp.stat(dir).catch(() => null))?.mtimeMs ?? 0;
      const bytes = (await fsp.stat(path.join(dir, 'data')).catch(() => null))?.size ?? 0;
      out.push({ uuid, doc, bytes, lastActive });
    }
    return out;
  }

  async create(uuid: string, doc: SessionDoc, now: number): Promise<void> {
    const dir = this.dir(uuid);
    try {
      await fsp.mkdir(dir, { recursive: true, mode: DIR_MODE });
      await fsp.writeFile(path.join(dir, 'data'), '', { mode: FILE_MODE });
      // info.json last: a session without it is incomplete and is swept like an abandoned one.
      const tmp = path.join(dir, 'info.json.tmp');
      await fsp.writeFile(tmp, JSON.stringify(doc), { mode: FILE_MODE });
      await fsp.rename(tmp, path.join(dir, 'info.json'));
    } catch (err) {
      await fsp.rm(dir, { recursive: true, force: true });
      throw err;
    }
    await this.touch(uuid, now);
  }

  async read(uuid: string): Promise<{ doc: SessionDoc | null; size: number } | null> {
    const dir = this.dir(uuid);
    let raw: string;
    let size: number;
    try {
      raw = await fsp.readFile(path.join(dir, 'info.json'), 'utf8');
      size = (await fsp.stat(path.join(dir, 'data'))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      return { doc: JSON.parse(raw) as SessionDoc, size };
    } catch {
      return { doc: null, size };
    }
  }

  async append(uuid: string, offset: number, source: Readable): Promise<void> {
    const file = path.join(this.dir(uuid), 'data');
    try {
      await pipeline(source, createWriteStream(file, { flags: 'r+', start: offset }));
    } catch (err) {
      // The chunk is cut back off: a session only ever holds whole chunks.
      await fsp.truncate(file, offset).catch(() => undefined);
      throw err;
    }
  }

  async touch(uuid: string, now: number): Promise<void> {
    const t = new Date(now);
    await fsp.utimes(path.join(this.dir(uuid), 'info.json'), t, t).catch(() => undefined);
  }

  bytes(uuid: string, size: number): AsyncIterable<Buffer> {
    if (size === 0) return (async function* () {})();
    return createReadStream(path.join(this.dir(uuid), 'data'), { start: 0, end: size - 1, highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>;
  }

  async publish(uuid: string, _size: number, digest: Digest): Promise<void> {
    // One rename: a crash leaves either a session or a verified blob, never half of one.
    const final = this.paths.blob(digest);
    await fsp.mkdir(path.dirname(final), { recursive: true, mode: DIR_MODE });
    await fsp.rename(path.join(this.dir(uuid), 'data'), final);
  }

  async remove(uuid: string): Promise<void> {
    await fsp.rm(this.dir(uuid), { recursive: true, force: true });
  }
}
