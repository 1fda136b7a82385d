// Bytes a follower relays from another replica (S3 cluster: cache/verified-window.ts) are socket
// reads dropped once written: they count toward the young-generation collections of
// util/buffer-churn.ts like a download's bytes, or a follower relaying 10 clients' streams held up
// to V8's 64 MiB external-memory limit of dead chunks (scenario 12's followers: 156–162 MiB peak
// RSS, 124–128 with them counted).
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { VerifiedWindow } from '../../lib/cache/verified-window.js';
import { churnCollections, CHURN_STEP } from '../../lib/util/buffer-churn.js';

const CHUNK = 64 * 1024;

/** `data` in 64 KiB chunks, resting 30 ms after each CHURN_STEP (collections are at most one per 20 ms). */
function body(data: Buffer): Readable {
  return Readable.from(
    (async function* () {
      for (let at = 0; at < data.length; at += CHUNK) {
        yield data.subarray(at, at + CHUNK);
        if ((at + CHUNK) % CHURN_STEP === 0) await sleep(30);
      }
    })(),
  );
}

t.test("a follower's relayed bytes count toward the churn collections, one per CHURN_STEP passed", async (t) => {
  const data = Buffer.alloc(3 * CHURN_STEP, 7);
  const got: Buffer[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      got.push(Buffer.from(chunk));
      cb();
    },
  });
  const w = new VerifiedWindow('sha256', 0, data.length - 1);
  const before = churnCollections();
  await w.feed(body(data), dest);
  t.equal(churnCollections() - before, 3, 'three collections for three steps relayed');
  t.equal(w.digest(), `sha256:${createHash('sha256').update(data).digest('hex')}`, 'every byte hashed');
  t.equal(Buffer.concat(got).length, data.length - 1, 'all but the last byte sent before the digest is checked');
  await w.finish(dest);
  t.ok(Buffer.concat(got).equals(data), 'and the last once finished');
});
