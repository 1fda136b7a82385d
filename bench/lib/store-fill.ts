/** Fills a stevedore store with `count` small verified blobs (content hashes to the file name). */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { sha256Hex } from './data.js';

/** Lays out `blobs/sha256/<hex[0:2]>/<hex>` under `root`; returns the bytes written. */
export function fillStore(root: string, count: number): number {
  const dir = path.join(root, 'blobs', 'sha256');
  for (let i = 0; i < 256; i++) mkdirSync(path.join(dir, i.toString(16).padStart(2, '0')), { recursive: true });
  let bytes = 0;
  for (let i = 0; i < count; i++) {
    const data = Buffer.from(`stevedore bench stored blob ${i}\n`);
    const hex = sha256Hex(data);
    writeFileSync(path.join(dir, hex.slice(0, 2), hex), data);
    bytes += data.length;
  }
  return bytes;
}
