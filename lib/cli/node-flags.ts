/**
 * The Node.js options stevedore runs with, in every way it is started: the `stevedore` bin's
 * shebang (the first line of lib/cli/main.ts), `npm start` (package.json), the image's ENTRYPOINT
 * (Dockerfile), and the processes the tests and the benchmark spawn (they import this list).
 * test/cli/node-flags.test.ts checks that each of them carries exactly these. Workers started with
 * `node:cluster` inherit them (a forked worker gets its primary's `execArgv`).
 *
 * They must be on the command line (or in NODE_OPTIONS, which accepts them): V8 sizes its heap
 * when the process starts, and `v8.setFlagsFromString` from inside the process does not change the
 * young generation any more (measured: bench/RESULTS.md, "Issue 28: memory").
 *
 * --max-semi-space-size: the young generation's semi-space, in MiB. Node 24's default (V8 13)
 * grows it to 32 MiB where Node 20's stopped at 16; with it, a busy stevedore keeps 50–70 MiB more
 * dead memory (short-lived objects, and the native buffers of socket reads that only die with
 * their JavaScript wrappers at a scavenge) for the same throughput. This value is the one the
 * benchmark chose (bench/RESULTS.md).
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=16'];
