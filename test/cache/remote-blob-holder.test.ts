// Cluster mode on S3: a replica's clients stream a download another replica holds from its peer
// endpoint. The holder's address and the size come from Redis, which is not trusted (issue 25):
// the bytes are hashed here from byte 0, each client's last byte waits for that hash to match, a
// mismatch cuts the client and marks the holder bad, and a wrong announced size never becomes a
// complete answer.
import { Readable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import { digestOf, type Digest } from '../../lib/oci/digest.js';
import { blobLeaseKey, RemoteBlob, type HolderSource } from '../../lib/cache/remote-blob.js';
import { InProcessLeases } from '../../lib/cluster/in-process.js';
import type { Store } from '../../lib/storage/store.js';
import { collector } from '../fixtures/byte-sink.js';

const log = pino({ level: 'silent' });
const DATA = Buffer.alloc(300_000);
for (let i = 0; i < DATA.length; i++) DATA[i] = (i * 7919) % 251;
const DIGEST = digestOf(DATA);

/** A store with nothing stored and no shared file (replicas on S3 share none). */
const emptyStore = { blobs: { probeShared: async () => ({ final: null, part: null }), open: async () => null } } as unknown as Store;

function chunks(data: Buffer, size = 16_384): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) out.push(data.subarray(i, i + size));
  return out;
}

interface FakeHolders extends HolderSource {
  opened: Array<{ url: string; start: number }>;
  bad: string[];
}

/** Holders by URL: each serves `bytes` from the start asked, optionally failing after `cutAfter` bytes. */
function holders(byUrl: Record<string, { bytes: Buffer; cutAfter?: number; gate?: Promise<void> }>): FakeHolders {
  const h: FakeHolders = {
    opened: [],
    bad: [],
    async open(url: string, _d: Digest, start: number) {
      h.opened.push({ url, start });
      const src = byUrl[url];
      if (!src) throw new Error(`nothing at ${url}`);
      const part = src.bytes.subarray(start, src.cutAfter === undefined ? undefined : start + src.cutAfter);
      const list = chunks(part);
      const last = list.pop();
      return Readable.from(
        (async function* () {
          yield* list;
          if (src.gate) await src.gate;
          if (last) yield last;
          if (src.cutAfter !== undefined) throw Object.assign(new Error('holder went away'), { code: 'ECONNRESET' });
        })(),
      );
    },
    usable: (url: string) => !h.bad.includes(url),
    markBad: (url: string) => void h.bad.push(url),
  };
  return h;
}

async function remoteBlob(t: { teardown(fn: () => unknown): void }, h: HolderSource, published: { url: string; size: number }): Promise<{ remote: RemoteBlob; coordinator: InProcessLeases }> {
  // RemoteBlob's polling timer does not hold the process open (a server does): this test does.
  const keepAlive = setInterval(() => undefined, 1_000);
  t.teardown(() => clearInterval(keepAlive));
  const coordinator = new InProcessLeases();
  const lease = await coordinator.acquire(blobLeaseKey(DIGEST), 60_000, JSON.stringify({ owner: 'r1', repoKey: 'docker.io/x', size: published.size, ready: true, url: published.url }));
  t.teardown(() => lease?.release());
  const remote = new RemoteBlob(DIGEST, { store: emptyStore, coordinator, log, pollMs: 20, leaseTtlMs: 60_000, noProgressMs: 60_000, progress: new Map(), holders: h, takeOver: async () => null, onDone: () => undefined });
  const release = remote.use();
  t.teardown(release);
  await remote.ready;
  return { remote, coordinator };
}

t.test('right bytes from the holder: the client gets exactly the blob', async (t) => {
  const h = holders({ 'http://10.0.0.2:5000': { bytes: DATA } });
  const { remote } = await remoteBlob(t, h, { url: 'http://10.0.0.2:5000', size: DATA.length });
  const sink = collector();
  await remote.sendTo(sink.dest, 0, Infinity, DATA.length);
  t.same(sink.received(), DATA);
  t.same(h.bad, []);
});

t.test('until the whole blob is hashed, the client has every byte but its last', async (t) => {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const h = holders({ 'http://10.0.0.2:5000': { bytes: DATA, gate } });
  const { remote } = await remoteBlob(t, h, { url: 'http://10.0.0.2:5000', size: DATA.length });
  const sink = collector();
  const sending = remote.sendTo(sink.dest, 0, Infinity, DATA.length);
  await new Promise((r) => setTimeout(r, 100));
  const before = sink.received().length;
  t.ok(before > 0 && before < DATA.length, `streamed while the holder sends (${before} bytes)`);
  open();
  await sending;
  t.same(sink.received(), DATA);
});

t.test('bytes that do not verify: the client never has them all, is cut, and the holder is marked bad', async (t) => {
  const wrong = Buffer.from(DATA);
  wrong[200_000] = wrong[200_000]! ^ 0xff;
  const h = holders({ 'http://10.0.0.2:5000': { bytes: wrong } });
  const { remote } = await remoteBlob(t, h, { url: 'http://10.0.0.2:5000', size: DATA.length });
  const sink = collector();
  await t.rejects(remote.sendTo(sink.dest, 0, Infinity, DATA.length), { code: 'ERR_UNVERIFIED_BYTES' });
  t.equal(sink.received().length, DATA.length - 1, 'the last byte was never sent');
  t.same(h.bad, ['http://10.0.0.2:5000']);
});

t.test("a fake holder's short blob under a size that Redis announced: nothing complete reaches the client", async (t) => {
  const fake = Buffer.alloc(176, 'A');
  const h = holders({ 'http://10.0.0.66:5000': { bytes: fake } });
  const { remote } = await remoteBlob(t, h, { url: 'http://10.0.0.66:5000', size: 176 });
  const sink = collector();
  await t.rejects(remote.sendTo(sink.dest, 0, Infinity, 176), { code: 'ERR_UNVERIFIED_BYTES' });
  t.ok(sink.received().length < 176, 'fewer bytes than the announced length');
  t.same(h.bad, ['http://10.0.0.66:5000']);
});

t.test('the right blob under a wrong announced size: the client is cut before its last byte', async (t) => {
  const h = holders({ 'http://10.0.0.2:5000': { bytes: DATA } });
  const { remote } = await remoteBlob(t, h, { url: 'http://10.0.0.2:5000', size: 1000 });
  const sink = collector();
  await t.rejects(remote.sendTo(sink.dest, 0, Infinity, 1000), { code: 'ERR_UNVERIFIED_BYTES' });
  t.equal(sink.received().length, 999, 'the 1000th byte, which would complete the answer, was held back');
});

t.test('a range: its bytes exactly, its last one only once the whole blob verified', async (t) => {
  const h = holders({ 'http://10.0.0.2:5000': { bytes: DATA } });
  const { remote } = await remoteBlob(t, h, { url: 'http://10.0.0.2:5000', size: DATA.length });
  const sink = collector();
  await remote.sendTo(sink.dest, 100_000, 100_099, DATA.length);
  t.same(sink.received(), DATA.subarray(100_000, 100_100));
  t.same(h.opened, [{ url: 'http://10.0.0.2:5000', start: 0 }], 'hashed from byte 0');
});

t.test('a range of a blob that does not verify is cut before its last byte', async (t) => {
  const wrong = Buffer.from(DATA);
  wrong[250_000] = 0;
  wrong[250_001] = 0;
  const h = holders({ 'http://10.0.0.2:5000': { bytes: wrong } });
  const { remote } = await remoteBlob(t, h, { url: 'http://10.0.0.2:5000', size: DATA.length });
  const sink = collector();
  await t.rejects(remote.sendTo(sink.dest, 0, 99, DATA.length), { code: 'ERR_UNVERIFIED_BYTES' });
  t.equal(sink.received().length, 99);
});

t.test('the holder stops mid-blob: the client goes on from the next holder at the byte reached, hashed across both', async (t) => {
  const h = holders({ 'http://10.0.0.2:5000': { bytes: DATA, cutAfter: 120_000 }, 'http://10.0.0.3:5000': { bytes: DATA } });
  const { remote, coordinator } = await remoteBlob(t, h, { url: 'http://10.0.0.2:5000', size: DATA.length });
  const sink = collector();
  const sending = remote.sendTo(sink.dest, 0, Infinity, DATA.length);
  // The first holder dies; another replica takes the lease and publishes its own address.
  await new Promise((r) => setTimeout(r, 50));
  const held = await coordinator.read(blobLeaseKey(DIGEST));
  t.ok(held);
  (coordinator as unknown as { held: Map<string, { value: string }> }).held.get(blobLeaseKey(DIGEST))!.value = JSON.stringify({ owner: 'r2', repoKey: 'docker.io/x', size: DATA.length, ready: true, url: 'http://10.0.0.3:5000' });
  await sending;
  t.same(sink.received(), DATA);
  t.same(
    h.opened.map((o) => o.url),
    ['http://10.0.0.2:5000', 'http://10.0.0.3:5000'],
  );
  t.equal(h.opened[1]!.start, 120_000, 'the second holder was asked from the byte reached');
});
