#!/usr/bin/env node
/** The `stevedore` command. */
import { Command, Option } from 'commander';
import { ConfigError, loadConfig } from '../config/config.js';
import { buildApp, createLogger } from '../server/app.js';

const program = new Command();
program.name('stevedore').description('Pull-through caching proxy and mirror for OCI / Docker registries');

program
  .command('serve')
  .description('run the proxy (embedded defaults unless a config file is given)')
  .addOption(new Option('-c, --config <file>', 'YAML configuration file').env('STEVEDORE_CONFIG'))
  .option('-l, --listen <addr>', 'listen address, HOST:PORT or :PORT (overrides the config)')
  .option('-s, --storage <dir>', 'store directory (overrides the config)')
  .action(async (opts: { config?: string; listen?: string; storage?: string }) => {
    let config;
    try {
      const env = { ...process.env };
      if (opts.listen) env.STEVEDORE_LISTEN = opts.listen;
      if (opts.storage) env.STEVEDORE_STORAGE_PATH = opts.storage;
      config = loadConfig({ ...(opts.config ? { file: opts.config } : {}), env });
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`stevedore: ${err.message}\n`);
        process.exit(2);
      }
      throw err;
    }
    const log = createLogger(config.log.level);
    const app = await buildApp(config, { log });
    const addr = await app.listen();
    log.info(
      {
        listen: `${addr.address}:${addr.port}`,
        storage: app.store.blobs.paths.root,
        metadata: config.metadata.redis ? 'redis' : 'memory',
        upstreams: [...config.upstreams.keys()],
        defaultUpstream: config.defaultUpstream,
      },
      'stevedore listening',
    );
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'draining');
      app.close().then(
        () => process.exit(0),
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`stevedore: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
