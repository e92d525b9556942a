/** ap mode: peer replication between Switchboard nodes (see docs/ap.md). */
import { createStorage } from '../../storage/index.js';
import type { Engine } from '../engine.js';
import type { OpenContext } from '../open.js';
import { ApEngine } from './engine.js';
import type { PeerTransport } from './transport.js';

export { ApEngine, type ApOptions, type ApMessage, type Timers } from './engine.js';

/** What the peer-link module (./net/index.js) exports. */
interface NetModule {
  createTcpTransport(opts: {
    nodeId: string;
    listen: { host: string; port: number };
    peers: { id: string; host: string; port: number }[];
    join: { host: string; port: number }[];
    cluster?: string;
    limits: OpenContext['cfg']['limits'];
    logger: OpenContext['logger'];
  }): PeerTransport | Promise<PeerTransport>;
}

export async function openApEngine(ctx: OpenContext): Promise<Engine> {
  const { cfg, logger } = ctx;
  const nodeId = cfg.nodeId ?? ctx.nodeId;
  let net: NetModule;
  try {
    // The peer links are a separate module, loaded only in ap mode. A variable specifier
    // keeps the build independent of whether the module is part of this version.
    const spec = './net/index.js';
    net = (await import(spec)) as NetModule;
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_MODULE_NOT_FOUND') {
      throw new Error(`--mode ap is not available in this version (the peer links are missing); run the default standalone mode`);
    }
    throw err;
  }
  const transport = await net.createTcpTransport({ nodeId, listen: cfg.peerAddr, peers: cfg.peers, join: cfg.join, cluster: cfg.cluster, limits: cfg.limits, logger: logger.child({ component: 'peers' }) });
  const storage = createStorage({ dev: cfg.dev, dataDir: cfg.dataDir, logger: logger.child({ component: 'storage' }) });
  const log = logger.child({ component: 'ap' });
  return ApEngine.open({
    nodeId,
    address: `${cfg.peerAddr.host}:${cfg.peerAddr.port}`,
    expectPeers: cfg.peers.length > 0 || cfg.join.length > 0,
    storage,
    transport,
    limits: cfg.limits,
    clock: ctx.clock,
    onFatal: ctx.onFatal,
    onSnapshotError: (err) => log.error({ err }, 'snapshot failed; the log is intact and the next snapshot will be tried later'),
    onRecovered: (r) => log.info(r, r.entries > 0 || r.fromSnapshot ? 'recovered state from the data directory' : 'starting with an empty registry'),
    onProtectionChange: (c) =>
      c.engaged
        ? log.warn({ selfPreservation: true, zone: c.zone }, `self-preservation engaged: records are held, not evicted (${c.reason})`)
        : log.info({ selfPreservation: false, zone: c.zone }, `self-preservation released (${c.reason})`),
    onEvent: (event, fields) => log.info({ event, ...fields }, `ap: ${event.replace(/_/g, ' ')}`),
  });
}
