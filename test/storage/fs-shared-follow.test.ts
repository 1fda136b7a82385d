// A replica following another one's download reads the shared temp file through a descriptor it
// opened once (fs-backend.ts sendShared). That descriptor must turn out to read the stored file:
// when the download it followed failed (its temp file deleted) and another download then stored
// the blob from another file, the follower's last byte never goes out. Found by the soak
// (bench/scenarios/s13-soak.ts): a client of a following replica got a whole body with one wrong
// byte after an upstream sent wrong bytes.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { digestOf } from '../../lib/oci/digest.js';
import type { Follow } from '../../lib/storage/file-sender.js';
import { FsBackend } from '../../lib/storage/fs/fs-backend.js';
import { collector } from '../fixtures/byte-sink.js';
import { tmpDir, waitFor, type Teardownable } from '../fixtures/util.js';

const DATA = Buffer.alloc(200_000);
for (let i = 0; i < DATA.length; i++) DATA[i] = (i * 7919) % 251;
const DIGEST = digestOf(DATA);

/** A follower's view of the holder (as RemoteBlob gives it): every byte but the last until stored. */
function holderState(size: number): { follow: Follow; commit(): void } {
  let committed = false;
  let wake: (() => void) | null = null;
  return {
    follow: {
      available: () => (committed ? size : size - 1),
      complete: () => committed,
      waitForMore: () =>
        committed
          ? Promise.resolve()
          : new Promise<void>((r) => {
              wake = r;
            }),
    },
    commit() {
      committed = true;
      wake?.();
    },
  };
}

async function backendWithPart(t: Teardownable, bytes: Buffer): Promise<FsBackend> {
  const be = new FsBackend(await tmpDir(t, 'stevedore-fs-shared-'));
  await be.open({});
  await fsp.mkdir(path.dirname(be.paths.sharedPart(DIGEST)), { recursive: true });
  await fsp.writeFile(be.paths.sharedPart(DIGEST), bytes);
  return be;
}

t.test('a follower of a failed download is cut before its last byte when another download stores the blob from another file', async (t) => {
  const wrong = Buffer.from(DATA);
  wrong[10] = wrong[10]! ^ 0xff;
  const be = await backendWithPart(t, wrong);
  const holder = holderState(DATA.length);
  const { dest, received } = collector();
  const sending = be.shared.send(DIGEST, dest, 0, DATA.length - 1, holder.follow);
  await waitFor('every byte but the last', async () => received().length === DATA.length - 1, 5000);
  // The download it followed failed its digest: its temp file goes. Another one stores the blob.
  await fsp.unlink(be.paths.sharedPart(DIGEST));
  await fsp.mkdir(path.dirname(be.paths.blob(DIGEST)), { recursive: true });
  await fsp.writeFile(be.paths.blob(DIGEST), DATA);
  holder.commit();
  const err = await sending.then(
    () => null,
    (e: unknown) => e as Error,
  );
  t.match(err?.message, /the answer is cut/, 'the answer fails');
  t.equal(received().length, DATA.length - 1, 'its last byte never went out');
});

t.test('a follower of the download that is stored (its temp file renamed into the store) gets every byte', async (t) => {
  const be = await backendWithPart(t, DATA);
  const holder = holderState(DATA.length);
  const { dest, received } = collector();
  const sending = be.shared.send(DIGEST, dest, 0, DATA.length - 1, holder.follow);
  await waitFor('every byte but the last', async () => received().length === DATA.length - 1, 5000);
  await fsp.mkdir(path.dirname(be.paths.blob(DIGEST)), { recursive: true });
  await fsp.rename(be.paths.sharedPart(DIGEST), be.paths.blob(DIGEST));
  holder.commit();
  await sending;
  t.ok(received().equals(DATA), 'the whole blob');
});

t.test('a follower that opens the download once it is stored gets every byte', async (t) => {
  const be = await backendWithPart(t, DATA);
  await fsp.mkdir(path.dirname(be.paths.blob(DIGEST)), { recursive: true });
  await fsp.rename(be.paths.sharedPart(DIGEST), be.paths.blob(DIGEST));
  const holder = holderState(DATA.length);
  holder.commit();
  const { dest, received } = collector();
  await be.shared.send(DIGEST, dest, 0, DATA.length - 1, holder.follow);
  t.ok(received().equals(DATA), 'the whole blob');
});
