/**
 * A Writable that counts what it is given and keeps none of it, for content fetched only to be
 * stored (`stevedore prefetch`, a node's pre-heat, seeding a mirror). Such content is sent to it
 * by the answer's `sendTo`, the path HTTP answers take: the bytes arrive in the send pool's buffers
 * (a followed download's latest bytes, or the file read into pooled chunks), each back in the pool
 * as soon as this calls back. Read through `open()` instead, every 256 KiB came in a buffer of its
 * own that only a garbage collection gave back: a node pre-heating four blobs at once at loopback
 * speed held tens of MiB of them (bench scenario 10, the busiest node's peak 155–171 MiB against
 * 122–127 through this, the pre-heat 7.3–9.2 s against 5.2–6.9; bench/RESULTS.md, "Issue 28,
 * 2026-12-07 night").
 */
import { Writable } from 'node:stream';

export function countingSink(onBytes: (n: number) => void = () => undefined): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      onBytes(chunk.length);
      callback();
    },
  });
}
