/** cp mode: stateless nodes over an etcd cluster. */
import type { Engine } from '../engine.js';
import type { OpenContext } from '../open.js';

export async function openCpEngine(ctx: OpenContext): Promise<Engine> {
  throw new Error(`--mode ${ctx.cfg.mode} is not available in this version; run the default standalone mode`);
}
