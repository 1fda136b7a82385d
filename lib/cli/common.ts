/** What every `stevedore` command shares: loading the configuration the same way `serve` does. */
import { Option, type Command } from 'commander';
import { ConfigError, loadConfig, type Config } from '../config/config.js';

export interface ConfigFlags {
  config?: string;
  storage?: string;
  listen?: string;
}

/** Adds --config and --storage (the store a command works on). */
export function withConfigOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('-c, --config <file>', 'YAML configuration file').env('STEVEDORE_CONFIG'))
    .option('-s, --storage <dir>', 'store directory (overrides the config)');
}

/** Loads the configuration, or prints every problem and exits 2. */
/** The configuration as the flags name it, read again (a reload); throws ConfigError. */
export function loadConfigAgain(flags: ConfigFlags): Config {
  const env = { ...process.env };
  if (flags.listen) env.STEVEDORE_LISTEN = flags.listen;
  if (flags.storage) env.STEVEDORE_STORAGE_PATH = flags.storage;
  return loadConfig({ ...(flags.config ? { file: flags.config } : {}), env });
}

export function configOrExit(flags: ConfigFlags): Config {
  try {
    return loadConfigAgain(flags);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`stevedore: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/** A failure a user caused (bad reference, missing content): message only, exit 1. */
export class UserError extends Error {}

export function fail(err: unknown): never {
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`stevedore: ${msg}\n`);
  process.exit(1);
}
