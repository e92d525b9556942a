/** The default mode: one node, durable local storage. */
import { logDenials } from '../health/networks.js';
import { StorageObservers, createStorage } from '../storage/index.js';
import type { Engine } from './engine.js';
import type { OpenContext } from './open.js';
import { StandaloneEngine } from './standalone.js';

export async function openStandaloneEngine({ cfg, nodeId, logger, clock, onFatal }: OpenContext): Promise<Engine> {
  const storageObservers = new StorageObservers();
  const storage = createStorage({ dev: cfg.dev, dataDir: cfg.dataDir, logger: logger.child({ component: 'storage' }), observer: storageObservers });
  return StandaloneEngine.open({
    nodeId,
    storage,
    limits: cfg.limits,
    checkNetworks: cfg.checkNetworks,
    onCheckDenied: logDenials(logger.child({ component: 'checks' })),
    clock,
    onFatal,
    storageObservers,
    onSnapshotError: (err) => logger.error({ err }, 'snapshot failed; the log is intact and the next snapshot will be tried later'),
    onRecovered: (r) => logger.info(r, r.entries > 0 || r.fromSnapshot ? 'recovered state from the data directory' : 'starting with an empty registry'),
    onProtectionChange: (c) =>
      c.engaged
        ? logger.warn({ selfPreservation: true, zone: c.zone }, `self-preservation engaged: lapsed leases are held, not evicted (${c.reason})`)
        : logger.info({ selfPreservation: false, zone: c.zone }, `self-preservation released: evictions resume (${c.reason})`),
  });
}
