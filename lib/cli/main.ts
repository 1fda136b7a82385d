#!/usr/bin/env -S MALLOC_MMAP_THRESHOLD_=131072 node --max-semi-space-size=4 --heap-growing-percent=20
/**
 * The `stevedore` command. The first line starts it with node-flags.ts's NODE_ENV and NODE_FLAGS
 * (`env -S` sets the one and splits the other), as `npm start` and the image do.
 */
import { Command } from 'commander';
import cluster from 'node:cluster';
import { ConfigError, type Config } from '../config/config.js';
import { createLogger, logDestination } from '../server/logger.js';
import { resolveWorkers } from '../util/available-cores.js';
import { workerSlot } from '../cluster/ipc/coordinator.js';
import { installLastResort } from '../server/last-resort.js';
import { nodeEnvDefaults } from './node-flags.js';
import { configOrExit, fail, loadConfigAgain, withConfigOptions, type ConfigFlags } from './common.js';
// The other commands' modules (progress bars, tar, ...) are loaded when they run: `serve` does not
// pay for them in memory.
import type { NodePrefetchFlags, PrefetchFlags } from './prefetch.js';

/** After an uncaught exception: how long transfers in flight may finish before the process exits. */
const FATAL_GRACE_MS = 5_000;

const program = new Command();
program.name('stevedore').description('Pull-through caching proxy and mirror for OCI / Docker registries');

withConfigOptions(program.command('serve').description('run the proxy (embedded defaults unless a config file is given)'))
  .option('-l, --listen <addr>', 'listen address, HOST:PORT or :PORT (overrides the config)')
  .action(async (opts: ConfigFlags) => {
    const config = configOrExit(opts);
    const root = createLogger(config.log.level, await logDestination(config.log.format));
    // A worker's lines name it (its slot, 1…N: the same across its restarts).
    const slot = workerSlot();
    const log = slot === null ? root : root.child({ worker: Number(slot) });
    const workers = cluster.isPrimary ? workerCount(config, log) : 1;
    if (workers > 1) {
      // The primary supervises the workers and loads nothing of the app (lib/server/supervisor.ts).
      const { superviseWorkers } = await import('../server/supervisor.js');
      const supervisor = superviseWorkers(config, workers, log, nodeEnvDefaults());
      process.on('SIGTERM', () => supervisor.stop('SIGTERM'));
      process.on('SIGINT', () => supervisor.stop('SIGINT'));
      // SIGHUP (signature policies read again) is each worker's to act on.
      process.on('SIGHUP', () => supervisor.signal('SIGHUP'));
      installLastResort({ log, fatal: () => supervisor.stop('uncaughtException') });
      // The supervisor's own start-up garbage (configuration, modules) given back: it then mostly waits.
      if (config.server.idleMemoryReturn !== null) {
        const { returnMemory } = await import('../server/idle-memory.js');
        const r = returnMemory('start-up');
        log.debug({ ms: Math.round(r.ms), rss: r.rss }, 'supervisor: start-up memory returned');
      }
      const code = await supervisor.stopped;
      log.info('supervisor: every worker has exited');
      process.exit(code);
    }
    const { buildApp } = await import('../server/app.js');
    // Files the configuration names (htpasswd, token key) are read here: a bad one exits 2 too.
    const app = await buildApp(config, { log }).catch((err: unknown) => {
      if (!(err instanceof ConfigError)) throw err;
      process.stderr.write(`stevedore: ${err.message}\n`);
      process.exit(2);
    });
    const addr = await app.listen();
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    log.info(
      {
        listen: `${addr.address}:${addr.port}`,
        // How clients reach it (the scheme follows config `tls`); test fixtures read it.
        url: `${app.scheme}://${host}:${addr.port}`,
        ...(app.tls ? { tls: { subjectAltName: app.tls.info.subjectAltName, validTo: app.tls.info.validTo, fingerprint256: app.tls.info.fingerprint256 } } : {}),
        storage: app.store.blobs.info().location,
        metadata: config.metadata.redis ? 'redis' : 'memory',
        upstreams: [...config.upstreams.keys()],
        defaultUpstream: config.defaultUpstream,
        offline: config.offline,
        // The runtime it runs on (Node.js 24 LTS is the supported one; CI checks it here).
        node: process.version,
      },
      'stevedore listening',
    );
    const peerAddr = app.peerAddress();
    if (peerAddr) {
      const peerHost = peerAddr.family === 'IPv6' ? `[${peerAddr.address}]` : peerAddr.address;
      log.info({ listen: `${peerAddr.address}:${peerAddr.port}`, url: `${app.scheme}://${peerHost}:${peerAddr.port}` }, 'peer endpoint listening (peerListen)');
    }
    let stopping = false;
    const stop = (signal: string, code: number, graceMs?: number): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'draining');
      const grace = graceMs ?? config.server.shutdownGrace;
      // close() is bounded by the grace (rule 11); should it still not return (a blocked event
      // loop, a defect), the process exits all the same, 2 s later, with code 1.
      setTimeout(() => {
        log.error({ graceMs: grace }, 'shutdown: still running 2 s after the grace period; exiting');
        process.exit(1);
      }, grace + 2_000).unref();
      app.close(grace).then(
        () => process.exit(code),
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    // SIGHUP: the signature policies (config verify, and the files they name) are read again;
    // a bad one is logged and the policies in force stay.
    process.on('SIGHUP', () => {
      void Promise.resolve()
        .then(() => app.reloadSignaturePolicies(loadConfigAgain(opts).verify))
        .catch((err: unknown) => log.error({ problems: err instanceof ConfigError ? err.problems : undefined, err }, 'signature policies not reloaded: keeping the ones in force'));
    });
    process.on('SIGTERM', () => stop('SIGTERM', 0));
    process.on('SIGINT', () => stop('SIGINT', 0));
    installLastResort({
      log,
      metrics: app.metrics,
      fatal: () => {
        // However the drain goes (it may meet the same defect), the process exits.
        setTimeout(() => process.exit(1), 2 * FATAL_GRACE_MS).unref();
        stop('uncaughtException', 1, FATAL_GRACE_MS);
      },
    });
  });

/** `server.workers` as processes; node mode runs one (its store is the node instance's own). */
function workerCount(config: Config, log: ReturnType<typeof createLogger>): number {
  if (config.node.peers !== null) {
    if (config.server.workers === 'auto') log.info('server.workers auto: 1 in node mode (node.peers)');
    return 1;
  }
  if (config.storage.backend === 's3' && config.metadata.redis !== null) {
    // Each process a replica reached at its own cluster.advertise: one per replica (lib/config/config.ts).
    if (config.server.workers === 'auto') log.info('server.workers auto: 1 in cluster mode on the S3 backend (one process per replica, each at its cluster.advertise)');
    return 1;
  }
  return resolveWorkers(config.server.workers);
}

withConfigOptions(
  program
    .command('prefetch')
    .description(
      'fetch images (every platform, or --platform) into the store through the pull path, with the referrers (signatures, SBOMs, attestations) ' +
        'and cosign .sig/.att tags of each manifest; an image under a verify policy is checked and its verdict printed (require: one that fails is failed)',
    )
    .argument('[images...]', 'image references, e.g. alpine:3.19 ghcr.io/org/app:v1')
    .option('-f, --file <list>', 'file with one image reference per line (# comments)')
    .option('-p, --platform <list>', 'only these platforms of an index, e.g. linux/amd64,linux/arm64')
    .option('--pin', 'pin what was fetched (signatures included): never evicted')
    .option('--nodes <which>', 'warm the node tier instead (pre-heat): all, a number of node instances (3) or a percentage (50%) of the group fetch the images now and keep them until --ttl')
    .option('--ttl <duration>', 'with --nodes: how long the nodes keep the images pinned (e.g. 6h; at most 7d)', '24h')
    .option('--group <name>', 'with --nodes: the node group (default: node.peers.group, else default)')
    .option('--timeout <duration>', 'with --nodes: how long to wait for the nodes', '10m')
    .option('--no-wait', 'with --nodes: record the mark and return without waiting for the nodes'),
).action(async (images: string[], opts: ConfigFlags & PrefetchFlags & Partial<NodePrefetchFlags>) => {
  const config = configOrExit(opts);
  try {
    if (opts.nodes !== undefined) {
      const { readImageList, runNodePrefetch } = await import('./prefetch.js');
      const { ok } = await runNodePrefetch(config, readImageList(images, opts.file), { ...opts, nodes: opts.nodes });
      process.exit(ok ? 0 : 1);
    }
    const { readImageList, runPrefetch } = await import('./prefetch.js');
    const { failed } = await runPrefetch(config, readImageList(images, opts.file), opts);
    process.exit(failed ? 1 : 0);
  } catch (err) {
    fail(err);
  }
});

withConfigOptions(
  program
    .command('export')
    .description(
      'write stored images to an OCI image layout archive, with the referrers and cosign tags stored for them, ' +
        'and the trust material (keys, trusted roots) of the verify policies covering them under stevedore/trust/',
    )
    .argument('[images...]', 'image references as pulled, e.g. alpine:3.19')
    .requiredOption('-o, --output <file>', 'the archive to write (- for stdout)')
    .option('-f, --file <list>', 'file with one image reference per line'),
).action(async (images: string[], opts: ConfigFlags & { output: string; file?: string }) => {
  const config = configOrExit(opts);
  try {
    const [{ readImageList }, { runExport }] = await Promise.all([import('./prefetch.js'), import('./bundle.js')]);
    await runExport(config, readImageList(images, opts.file), opts.output);
  } catch (err) {
    fail(err);
  }
});

withConfigOptions(
  program
    .command('import')
    .description(
      'load an OCI image layout archive into the store (verified by digest, pinned; referrers registered); under a require policy of this ' +
        "configuration every image must verify first, or nothing is stored. The bundle's own trust material is never used",
    )
    .argument('<bundle>', 'archive path, or - for stdin')
    .option('--max-entries <n>', 'refuse a bundle with more entries than this', '100000')
    .option('--trust-out <dir>', "write the bundle's trust material (stevedore/trust/: verify.json, keys, trusted roots) into DIR, to review and install"),
).action(async (bundle: string, opts: ConfigFlags & { maxEntries: string; trustOut?: string }) => {
  const config = configOrExit(opts);
  try {
    if (!/^[1-9]\d*$/.test(opts.maxEntries)) throw new Error(`--max-entries must be a whole number above 0, got ${opts.maxEntries}`);
    const { runImport } = await import('./bundle.js');
    await runImport(config, bundle, process.stderr, { maxEntries: Number(opts.maxEntries), ...(opts.trustOut !== undefined ? { trustOut: opts.trustOut } : {}) });
  } catch (err) {
    fail(err);
  }
});

withConfigOptions(
  program
    .command('ls')
    .description('stored repositories and tags, with sizes and last pull')
    .option('--gone', 'only tags their upstream deleted, kept here (cache.gonePolicies), with when they went')
    .option('--json', 'machine-readable'),
).action(
  async (opts: ConfigFlags & { json?: boolean; gone?: boolean }) => {
    await import('./inventory.js').then(({ runLs }) => runLs(configOrExit(opts), opts)).catch(fail);
  },
);

withConfigOptions(program.command('du').description('disk used by cached and pinned content').option('--json', 'machine-readable')).action(
  async (opts: ConfigFlags & { json?: boolean }) => {
    await import('./inventory.js').then(({ runDu }) => runDu(configOrExit(opts), opts)).catch(fail);
  },
);

withConfigOptions(
  program
    .command('gc')
    .description('delete content no repository references (dry run unless --delete)')
    .option('--delete', 'really delete')
    .option('--min-age <duration>', 'leave content stored more recently than this (a running server may be about to link it)', '10m'),
).action(
  async (opts: ConfigFlags & { delete?: boolean; minAge?: string }) => {
    await import('./inventory.js').then(({ runGc }) => runGc(configOrExit(opts), opts)).catch(fail);
  },
);

withConfigOptions(
  program.command('doctor').description('check the configuration, the store, Redis and every upstream; say what to fix').option('--json', 'machine-readable'),
).action(async (opts: ConfigFlags & { json?: boolean }) => {
  try {
    const { runDoctor } = await import('./doctor.js');
    process.exit(await runDoctor(opts));
  } catch (err) {
    fail(err);
  }
});

program
  .command('containerd-config')
  .description('write containerd hosts.toml files that mirror registries through stevedore')
  .requiredOption(
    '-m, --mirror <url>',
    'stevedore as nodes reach it, e.g. http://stevedore.example:5000; repeat it to list several, tried in the order given ' +
      '(node-local tier: --mirror http://127.0.0.1:5001 --mirror http://CENTRAL:5000)',
    (url: string, previous: string[] | undefined) => [...(previous ?? []), url],
  )
  .option('-r, --registries <list>', 'registries to mirror', 'docker.io,ghcr.io,quay.io,registry.k8s.io,gcr.io,mcr.microsoft.com,public.ecr.aws')
  .option('-d, --dir <dir>', 'containerd config_path', '/etc/containerd/certs.d')
  .option('--skip-verify', 'skip TLS verification of an https mirror')
  .option('--ca <file>', 'CA certificate (absolute path on the node) that signed an https mirror\'s certificate; not with --skip-verify')
  .option('--client-cert <file>', 'client certificate (absolute path on the node) containerd presents to an https mirror (config tls.clientCA); with --client-key')
  .option('--client-key <file>', 'the key of --client-cert (absolute path on the node)')
  .option(
    '--containerd-version <major>',
    'containerd major on the nodes: 1 (1.6 / 1.7) or 2 (2.x, also writes _default/hosts.toml); given, the config.toml lines to add are printed too',
  )
  .action(async (opts: { mirror: string[]; registries: string; dir: string; skipVerify?: boolean; ca?: string; clientCert?: string; clientKey?: string; containerdVersion?: string }) => {
    try {
      const { configTomlSnippet, parseContainerdVersion, writeHostsTomls } = await import('./containerd-config.js');
      const version = opts.containerdVersion === undefined ? 1 : parseContainerdVersion(opts.containerdVersion);
      const files = await writeHostsTomls(opts.dir, opts.registries.split(',').map((r) => r.trim()).filter(Boolean), opts.mirror, {
        ...(opts.skipVerify ? { skipVerify: true } : {}),
        ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
        ...(opts.clientCert !== undefined ? { clientCert: opts.clientCert } : {}),
        ...(opts.clientKey !== undefined ? { clientKey: opts.clientKey } : {}),
        ...(version === 2 ? { includeDefault: true } : {}),
      });
      for (const f of files) process.stdout.write(`wrote ${f}\n`);
      // Without --containerd-version the output is what it always was: the files written.
      if (opts.containerdVersion !== undefined) process.stdout.write(`\n${configTomlSnippet(version, opts.dir)}`);
    } catch (err) {
      fail(err);
    }
  });

const tlsCommand = program.command('tls').description('TLS helpers for serving HTTPS (config `tls`)');
tlsCommand
  .command('init')
  .description('create a small CA (ca.crt, ca.key) and a server certificate it signs (tls.crt, tls.key); --client NAME also a client certificate (client-NAME.crt, .key)')
  .option(
    '-n, --name <name>',
    'a DNS name or IP address clients reach stevedore by (a subjectAltName); repeat it for several, the first is the CN',
    (name: string, previous: string[] | undefined) => [...(previous ?? []), name],
  )
  .option(
    '--client <name>',
    'also issue a client certificate with CN=NAME (config tls.clientCA; it names the client cn:NAME); repeat it for several. Without --name, the CA already in --out signs it',
    (name: string, previous: string[] | undefined) => [...(previous ?? []), name],
  )
  .option('-o, --out <dir>', 'directory to write the files into', '.')
  .option('--days <n>', 'validity of the server (and client) certificates in days (the CA: 10 years)', '365')
  .option('--force', 'overwrite existing files')
  .action(async (opts: { name?: string[]; client?: string[]; out: string; days: string; force?: boolean }) => {
    try {
      const { nextSteps, tlsInit } = await import('./tls-init.js');
      if (!opts.name?.length && !opts.client?.length) throw new Error('give --name (the server certificate, and a new CA) or --client (a client certificate), or both');
      const days = /^\d+$/.test(opts.days) ? Number(opts.days) : NaN;
      const result = await tlsInit({ names: opts.name ?? [], clients: opts.client ?? [], out: opts.out, days, force: opts.force === true });
      process.stdout.write(nextSteps(result, opts.name?.[0]));
    } catch (err) {
      fail(err);
    }
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`stevedore: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
