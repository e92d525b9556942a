/**
 * The standalone engine: one node, state in memory, every entry made durable by the
 * storage before it is answered and announced (the order of a write is WritePath's).
 */
import type { LeaseGrant, Limits } from '@switchboard/protocol';
import type { Clock } from '../core/clock.js';
import { Registry } from '../core/registry.js';
import type { ProtectionChange } from '../core/self-preservation.js';
import { HealthMonitor, noCheckStats, type CheckStats, type MonitorOptions } from '../health/monitor.js';
import { CheckNetworks, type DenialObserver } from '../health/networks.js';
import type { StorageObservers } from '../storage/observer.js';
import type { Storage } from '../storage/storage.js';
import type { Engine } from './engine.js';
import { Hub } from './hub.js';
import { LocalEngine, randomId } from './local-engine.js';
import { WritePath } from './write-path.js';

export interface StandaloneOptions {
  nodeId: string;
  storage: Storage;
  /** Client writes waiting for the log at most (default MAX_PENDING_WRITES, write-path.ts). */
  maxPendingWrites?: number;
  limits: Limits;
  clock: Clock;
  /** Wall-clock time for history; default Date.now. */
  wallClock?: Clock;
  /** How often lease deadlines and check time rules are checked. */
  expiryTickMs?: number;
  /** Run active checks (http, tcp, grpc); default true. Probes may be replaced by tests. */
  activeChecks?: boolean;
  probes?: MonitorOptions['probes'];
  /** The networks active checks may reach; default CheckNetworks.DEFAULT. */
  checkNetworks?: CheckNetworks;
  /** Every probe the network policy refused, with what its output leaves out (for the log). */
  onCheckDenied?: DenialObserver;
  /** Self-preservation engaged or released (for the log). */
  onProtectionChange?: (change: ProtectionChange) => void;
  /** Called when storage fails: the process must stop, memory is ahead of disk. */
  onFatal?: (err: unknown) => void;
  /** A snapshot failed; the log is intact, so the node goes on and tries again later. */
  onSnapshotError?: (err: unknown) => void;
  /** Called after recovery with what was replayed. */
  onRecovered?: (info: { revision: number; entries: number; fromSnapshot: boolean; ms: number }) => void;
  /** The observers given to the storage (metrics subscribe to them through the engine). */
  storageObservers?: StorageObservers;
}

export class StandaloneEngine extends LocalEngine implements Engine {
  readonly mode = 'standalone' as const;
  readonly nodeId: string;
  readonly hub: Hub;
  readonly checkNetworks: CheckNetworks;
  protected readonly writes: WritePath;
  private readonly timer: NodeJS.Timeout;
  private readonly monitor: HealthMonitor | null;

  private constructor(
    registry: Registry,
    storage: Storage,
    private readonly opts: StandaloneOptions,
  ) {
    super(registry, storage, opts.storageObservers);
    this.nodeId = opts.nodeId;
    this.checkNetworks = opts.checkNetworks ?? CheckNetworks.DEFAULT;
    this.hub = new Hub(opts.limits.retainedEvents, registry.revision);
    this.writes = new WritePath({
      registry,
      storage,
      hub: this.hub,
      ...(opts.maxPendingWrites !== undefined ? { maxPending: opts.maxPendingWrites } : {}),
      snapshot: () => registry.snapshot(),
      ...(opts.onFatal ? { onFatal: opts.onFatal } : {}),
      ...(opts.onSnapshotError ? { onSnapshotError: opts.onSnapshotError } : {}),
    });
    this.timer = setInterval(() => this.tick(), opts.expiryTickMs ?? 100);
    this.timer.unref();
    this.monitor = opts.activeChecks === false ? null : new HealthMonitor(this, {
      maxConcurrentChecks: opts.limits.maxConcurrentChecks,
      checkNetworks: this.checkNetworks,
      ...(opts.onCheckDenied ? { onDenied: opts.onCheckDenied } : {}),
      ...(opts.probes ? { probes: opts.probes } : {}),
    });
    this.monitor?.start();
  }

  static async open(opts: StandaloneOptions): Promise<StandaloneEngine> {
    const started = Date.now();
    const rec = await opts.storage.open(() => randomId(8));
    const base = { limits: opts.limits, clock: opts.clock, wallClock: opts.wallClock ?? { now: () => Date.now() } };
    const registry = rec.snapshot ? Registry.fromSnapshot(rec.snapshot, base) : new Registry({ ...base, epoch: rec.epoch });
    for (const entry of rec.entries) registry.apply(entry);
    registry.raiseRevision(rec.revisionFloor ?? 0);
    registry.renewAllLeases();
    opts.onRecovered?.({ revision: registry.revision, entries: rec.entries.length, fromSnapshot: rec.snapshot !== null, ms: Date.now() - started });
    return new StandaloneEngine(registry, opts.storage, opts);
  }

  async keepAlive(leaseId: string): Promise<LeaseGrant> {
    return this.registry.keepAlive(leaseId);
  }

  checkStats(): CheckStats {
    return this.monitor?.stats() ?? noCheckStats();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.monitor?.close();
    await this.writes.close();
    await this.storage.close();
  }

  private tick(): void {
    if (this.closed) return;
    for (const outcome of [...this.registry.expireDue(), ...this.registry.healthDue()]) {
      this.persist(outcome).catch(() => undefined);
    }
    for (const change of this.registry.takeProtectionChanges()) this.opts.onProtectionChange?.(change);
  }
}
