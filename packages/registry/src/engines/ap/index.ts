/** ap mode: peer replication between Switchboard nodes. */
import type { Engine } from '../engine.js';
import type { OpenContext } from '../open.js';

export async function openApEngine(ctx: OpenContext): Promise<Engine> {
  throw new Error(`--mode ${ctx.cfg.mode} is not available in this version; run the default standalone mode`);
}
