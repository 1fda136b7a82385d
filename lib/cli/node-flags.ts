/**
 * The Node.js options stevedore runs with, in every way it is started: the `stevedore` bin's
 * shebang (the first line of lib/cli/main.ts), `npm start` (package.json), the image's ENTRYPOINT
 * (Dockerfile), and the processes the tests and the benchmark spawn (they import this list).
 * test/cli/node-flags.test.ts checks that each of them carries exactly these. Workers started with
 * `node:cluster` inherit them (a forked worker gets its primary's `execArgv`).
 *
 * They must be on the command line: V8 sizes its heap when the process starts, and
 * `v8.setFlagsFromString` from inside the process does not change the young generation any more
 * (measured: bench/RESULTS.md, "Issue 28: memory"). NODE_OPTIONS accepts --max-semi-space-size but
 * not --heap-growing-percent (node refuses to start: "is not allowed in NODE_OPTIONS").
 *
 * --max-semi-space-size: the young generation's semi-space, in MiB. Node 24's default (V8 13)
 * grows it to 32 MiB where Node 20's stopped at 16; with it, a busy stevedore keeps 50–70 MiB more
 * dead memory (short-lived objects, and the native buffers of socket reads that only die with
 * their JavaScript wrappers at a scavenge) for the same throughput. 8 MiB rather than Node 20's 16
 * since streamed chunks die young (buffer-churn.ts, recent-bytes.ts): 20 clients on a cold 1 GiB
 * blob peaked ~10 MiB lower (the young generation 13 MiB instead of 26 at the peak), warm blobs and
 * manifests at the same rate (bench/RESULTS.md, "Issue 28, 2026-12-07 evening"). 4 MiB since the
 * old generation's growth is bounded (below): what a smaller young generation promotes no longer
 * grows the old one past what it saves, and scenario 9's replicas peaked at 139–143 MiB against
 * 140–159, warm blobs, cold pulls and manifests ~5 MiB lower, at the same rate (bench/RESULTS.md,
 * "Issue 28, 2026-12-08"; 4 without the growing bound had made the manifests' peak higher).
 *
 * --heap-growing-percent: how far V8 lets the old generation grow past what its last full
 * collection left alive before it collects again, here 1.2× (never less than 8 MiB more, V8's own
 * floor). Left to itself, V8 picks 1.1–4× from how fast it collects against how fast the process
 * allocates, and a busy stevedore's garbage (requests' objects that outlived two young
 * collections: Redis replies awaited, responses in flight) then sat in an old space of 27–31 MiB
 * around a live set of ~20. With it, scenario 9's replicas (one worker each) peaked at 141–151 MiB
 * against 153–161, scenario 6 at 124–129 against 129–137, manifests by tag at the same rate and
 * CPU per request (bench/RESULTS.md, "Issue 28, 2026-12-07 night").
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--heap-growing-percent=20'];

/**
 * The environment stevedore runs with, in the same places as NODE_FLAGS (the bin's first line sets
 * it with `env -S`, `npm start` on its command line, the image with ENV, the supervisor for the
 * workers it forks unless already set; the tests and the benchmark import it).
 *
 * MALLOC_MMAP_THRESHOLD_: glibc's malloc serves an allocation of this many bytes or more with its
 * own mmap, returned to the system when freed. Left unset, glibc raises the threshold each time
 * such a block is freed (up to 32 MiB), so the 64 KiB–1 MiB buffers of file reads and socket
 * writes soon come from the heap arenas and stay there when freed: RSS keeps the busiest moment's
 * buffers. Fixed at 128 KiB (glibc's initial value), scenario 2's peak RSS was 157–163 MiB against
 * 178–200 without, throughput within the runs' spread (bench/RESULTS.md, "Issue 26/28: where the
 * peak RSS goes"). Only the environment sets it: glibc reads it when the process starts.
 */
export const NODE_ENV: Readonly<Record<string, string>> = { MALLOC_MMAP_THRESHOLD_: '131072' };

/** NODE_ENV's variables that `env` does not set already (a user's own value wins). */
export function nodeEnvDefaults(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  return Object.fromEntries(Object.entries(NODE_ENV).filter(([k]) => env[k] === undefined));
}
