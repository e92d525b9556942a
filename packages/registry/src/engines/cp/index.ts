/** cp mode: stateless nodes over an etcd cluster (docs/cp.md). */
import type { Engine } from '../engine.js';
import type { OpenContext } from '../open.js';
import { CpEngine } from './engine.js';

export async function openCpEngine(ctx: OpenContext): Promise<Engine> {
  const { cfg, logger } = ctx;
  const log = logger.child({ component: 'cp' });
  const started = Date.now();
  // etcd may still be starting (all members started together): try for a while.
  for (;;) {
    try {
      const engine = await CpEngine.open({
        nodeId: ctx.nodeId,
        address: `${cfg.httpAddr.host}:${cfg.httpAddr.port}`,
        endpoints: cfg.etcd,
        prefix: cfg.etcdPrefix,
        limits: cfg.limits,
        clock: ctx.clock,
        log: (level, msg, err) => log[level](err === undefined ? {} : { err }, msg),
      });
      log.info({ etcd: cfg.etcd, prefix: cfg.etcdPrefix, epoch: engine.registry.epoch, revision: engine.registry.revision, instances: engine.registry.instanceCount }, 'following the registry in etcd');
      return engine;
    } catch (err) {
      if (Date.now() - started > 30_000) throw new Error(`cannot read the registry from etcd at ${cfg.etcd.join(',')} within 30 s: ${(err as Error).message}`);
      log.warn({ err }, 'etcd cannot be read yet; trying again');
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}
