// cp nodes in this process, each with its own HTTP API on a real socket, over one etcd.
import { DEFAULT_LIMITS, type Limits } from '@switchboard/protocol';
import { build, type SwitchboardApp } from '../../src/api/app.js';
import { CpEngine, type CpOptions } from '../../src/engines/cp/engine.js';
import type { EtcdCluster } from './etcd-cluster.js';

export interface CpNode {
  app: SwitchboardApp;
  engine: CpEngine;
  url: string;
  close(): Promise<void>;
}

export async function startCpNode(endpoints: string[], nodeId: string, prefix: string, opts: Partial<Omit<CpOptions, 'limits'>> & { limits?: Partial<Limits> } = {}): Promise<CpNode> {
  const limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const engine = await CpEngine.open({ nodeId, address: '127.0.0.1:0', endpoints, prefix, clock: { now: () => performance.now() }, activeChecks: false, ...opts, limits });
  const app = await build({ engine, limits, version: 'test', watchHeartbeatMs: 15_000 });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  // As the agent does: announce the port the OS chose (other nodes forward reports to it).
  await engine.listening({ host: '127.0.0.1', port: new URL(url).port === '' ? 80 : Number(new URL(url).port) });
  let closed = false;
  return {
    app,
    engine,
    url,
    close: async () => {
      if (closed) return;
      closed = true;
      await app.shutdown();
      await engine.close();
    },
  };
}

let seq = 0;
/** A fresh prefix per test, so that tests sharing a cluster never see each other. */
export const freshPrefix = (): string => `/sbtest-${process.pid}-${++seq}/`;

/**
 * Three cp nodes over one etcd cluster, each dialling a different member first, able to
 * call each other's API as the agent's nodes do (so n2 and n3 send their writes to n1).
 */
export function threeNodes(etcd: EtcdCluster, prefix = freshPrefix()): Promise<CpNode[]> {
  const peerApi = { scheme: 'http' as const, token: () => null };
  return Promise.all(['n1', 'n2', 'n3'].map((id, i) => startCpNode([etcd.endpoint(i), ...etcd.endpoints.filter((_, j) => j !== i)], id, prefix, { peerApi })));
}
