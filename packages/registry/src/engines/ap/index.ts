/** ap mode: peer replication between Switchboard nodes (see docs/ap.md). */
import { logDenials } from '../../health/networks.js';
import { StorageObservers, createStorage } from '../../storage/index.js';
import type { Engine } from '../engine.js';
import type { OpenContext } from '../open.js';
import { ApEngine } from './engine.js';
import { createTcpTransport } from './net/index.js';
import { REJOIN_HINT, RemovedMembers } from './removed.js';

export { ApEngine, type ApOptions, type ApMessage, type Timers } from './engine.js';

export async function openApEngine(ctx: OpenContext): Promise<Engine> {
  const { cfg, logger } = ctx;
  const nodeId = cfg.nodeId ?? ctx.nodeId;
  // Read before the links start: a removed member is never dialed, not even once.
  const removed = await RemovedMembers.load(cfg.dev ? null : cfg.dataDir);
  const transport = await createTcpTransport({ nodeId, listen: cfg.peerAddr, peers: cfg.peers, join: cfg.join, cluster: cfg.cluster, limits: cfg.limits, logger: logger.child({ component: 'peers' }), removed: removed.list(), secret: cfg.peerSecret?.reveal() ?? null, tls: cfg.peerTls ? { cert: cfg.peerTls.cert, key: cfg.peerTls.key.reveal(), ca: cfg.peerTls.ca, crl: cfg.peerTls.crl } : null });
  const storageObservers = new StorageObservers();
  const storage = createStorage({ dev: cfg.dev, dataDir: cfg.dataDir, logger: logger.child({ component: 'storage' }), observer: storageObservers });
  const log = logger.child({ component: 'ap' });
  return ApEngine.open({
    nodeId,
    address: `${cfg.peerAddr.host}:${cfg.peerAddr.port}`,
    expectPeers: cfg.peers.length > 0 || cfg.join.length > 0,
    storage,
    storageObservers,
    transport,
    removed,
    limits: cfg.limits,
    checkNetworks: cfg.checkNetworks,
    onCheckDenied: logDenials(logger.child({ component: 'checks' })),
    clock: ctx.clock,
    onFatal: ctx.onFatal,
    onSnapshotError: (err) => log.error({ err }, 'snapshot failed; the log is intact and the next snapshot will be tried later'),
    onRecovered: (r) => log.info(r, r.entries > 0 || r.fromSnapshot ? 'recovered state from the data directory' : 'starting with an empty registry'),
    onProtectionChange: (c) =>
      c.engaged
        ? log.warn({ selfPreservation: true, zone: c.zone }, `self-preservation engaged: records are held, not evicted (${c.reason})`)
        : log.info({ selfPreservation: false, zone: c.zone }, `self-preservation released (${c.reason})`),
    onEvent: (event, fields) =>
      event === 'removed_from_cluster'
        ? log.error({ event, ...fields }, `ap: a peer says this node was removed from the cluster: ${REJOIN_HINT}`)
        : log.info({ event, ...fields }, `ap: ${event.replace(/_/g, ' ')}`),
  });
}
