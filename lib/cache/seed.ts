/**
 * Seeding an upstream's namespace by push: a client skips uploading what the upstream already has
 * (its HEAD said 200), so a pushed manifest may name content that is not stored here. That content
 * is fetched from the upstream now, through the pull path (coalesced, verified), and pinned like
 * everything pushed: the seeded image then pulls with the upstream gone.
 */
import { countingSink } from '../util/counting-sink.js';
import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.js';
import type { Store } from '../storage/store.js';
import type { PullThrough, Target } from './pull-through.js';

export async function fetchAndPin(
  pull: PullThrough,
  store: Store,
  t: Target,
  items: Array<{ digest: Digest; isManifest: boolean }>,
  log: Logger,
): Promise<void> {
  for (const { digest, isManifest } of items) {
    try {
      // Evicted between arriving and being pinned (a tiny storage.maxSize)? Fetch it again.
      for (let attempt = 0; attempt < 3 && !store.blobs.isPinned(digest.value); attempt++) {
        if (isManifest) {
          await pull.getManifestByDigest(t, digest);
        } else {
          const answer = await pull.getBlob(t, digest);
          if (answer.cache === 'hit') await answer.release();
          // Through sendTo, the send pool's buffers: util/counting-sink.ts.
          else await answer.sendTo(countingSink());
        }
        await store.blobs.pin(digest);
      }
    } catch (err) {
      log.warn({ err, upstream: t.client.name, repo: t.name, digest: digest.value }, 'seeding: content the push skipped could not be fetched from the upstream');
    }
  }
}
