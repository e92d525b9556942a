/**
 * Opens the engine a configuration asks for. Each mode lives in its own folder and is
 * loaded only when chosen, so that a standalone agent never loads the etcd client or the
 * peer links.
 */
import type { Logger } from 'pino';
import type { AgentConfig } from '../cli/config.js';
import type { Clock } from '../core/clock.js';
import type { Engine } from './engine.js';

export interface OpenContext {
  cfg: AgentConfig;
  nodeId: string;
  logger: Logger;
  /** Monotonic time for leases and deadlines. */
  clock: Clock;
  /** Called when the node can no longer keep its promises and must stop. */
  onFatal: (err: unknown) => void;
}

export async function openEngine(ctx: OpenContext): Promise<Engine> {
  switch (ctx.cfg.mode) {
    case 'cp':
      return (await import('./cp/index.js')).openCpEngine(ctx);
    case 'ap':
      return (await import('./ap/index.js')).openApEngine(ctx);
    default:
      return (await import('./standalone-open.js')).openStandaloneEngine(ctx);
  }
}
