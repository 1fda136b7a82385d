/**
 * The cluster coordinators stevedore knows, by name. Adding one (etcd, …) is a folder beside
 * redis/ implementing `ClusterCoordinator` and `CoordinatorFactory` (lib/cluster/coordinator.ts),
 * passing test/cluster/coordinator-contract.ts, and one line below. Without any configured, a
 * process coordinates with itself (InProcessCoordinator).
 */
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { ClusterCoordinator, CoordinatorFactory } from './coordinator.js';
import { InProcessCoordinator } from './in-process.js';
import { redisCoordinator } from './redis/coordinator.js';
import { ipcCoordinator } from './ipc/coordinator.js';

const registered = new Map<string, CoordinatorFactory>();

export function registerCoordinator(name: string, factory: CoordinatorFactory): void {
  if (registered.has(name)) throw new Error(`a cluster coordinator named ${name} is registered already`);
  registered.set(name, factory);
}

registerCoordinator('redis', redisCoordinator);
// The workers of one host (server.workers above 1) without Redis: their supervisor coordinates them.
registerCoordinator('ipc', ipcCoordinator);

/** The coordinator the configuration asks for, or null: this process alone. */
export function configuredCoordinator(config: Config): { name: string; factory: CoordinatorFactory } | null {
  for (const [name, factory] of registered) if (factory.configured(config)) return { name, factory };
  return null;
}

/** Opens the configured coordinator; the in-process one when none is configured. */
export async function openCoordinator(config: Config, log: Logger): Promise<ClusterCoordinator> {
  const chosen = configuredCoordinator(config);
  return chosen ? chosen.factory.open(config, log) : new InProcessCoordinator();
}
