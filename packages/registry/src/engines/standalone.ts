/**
 * The standalone engine: one node, state in memory, every entry made durable by the
 * storage before it is answered and announced (the order of a write is WritePath's).
 */
import { randomBytes } from 'node:crypto';
import type { AdminStatus, CheckResult, ConsumerReport, LeaseGrant, Limits, ServiceSettings } from '@switchboard/protocol';
import type { Clock } from '../core/clock.js';
import { Registry, type RegistrationItem, type WriteOutcome } from '../core/registry.js';
import type { ProtectionChange } from '../core/self-preservation.js';
import { HealthMonitor, noCheckStats, type CheckStats, type MonitorOptions } from '../health/monitor.js';
import { CheckNetworks, type DenialObserver } from '../health/networks.js';
import type { StorageObservers } from '../storage/observer.js';
import type { Storage } from '../storage/storage.js';
import type { Engine, LeaseEndedListener } from './engine.js';
import { Hub } from './hub.js';
import { WritePath } from './write-path.js';

export interface StandaloneOptions {
  nodeId: string;
  storage: Storage;
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

export function randomId(bytes = 8): string {
  return randomBytes(bytes).toString('hex');
}

export class StandaloneEngine implements Engine {
  readonly mode = 'standalone' as const;
  readonly nodeId: string;
  readonly hub: Hub;
  readonly checkNetworks: CheckNetworks;
  private readonly writes: WritePath;
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  private readonly monitor: HealthMonitor | null;

  private constructor(
    readonly registry: Registry,
    private readonly storage: Storage,
    private readonly opts: StandaloneOptions,
  ) {
    this.nodeId = opts.nodeId;
    this.checkNetworks = opts.checkNetworks ?? CheckNetworks.DEFAULT;
    this.hub = new Hub(opts.limits.retainedEvents, registry.revision);
    this.writes = new WritePath({
      registry,
      storage,
      hub: this.hub,
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

  get durable(): boolean {
    return this.storage.durable;
  }
  get dataDir(): string | null {
    return this.storage.location;
  }

  async grantLease(ttlMs: number): Promise<LeaseGrant> {
    const leaseId = randomId(8);
    await this.persist(this.registry.grantLease(leaseId, ttlMs));
    return { leaseId, ttlMs };
  }

  async keepAlive(leaseId: string): Promise<LeaseGrant> {
    return this.registry.keepAlive(leaseId);
  }

  detachLease(leaseId: string, graceMs: number): void {
    this.registry.detachLease(leaseId, graceMs);
  }

  onLeaseEnded(listener: LeaseEndedListener): () => void {
    return this.writes.onLeaseEnded(listener);
  }

  revokeLease(leaseId: string): Promise<number> {
    return this.persist(this.registry.revokeLease(leaseId));
  }

  register(item: RegistrationItem): Promise<number> {
    return this.persist(this.registry.register(item));
  }

  registerBatch(items: RegistrationItem[]): Promise<number> {
    return this.persist(this.registry.registerBatch(items));
  }

  deregister(namespace: string, service: string, id: string): Promise<number> {
    return this.persist(this.registry.deregister(namespace, service, id));
  }

  setStatus(namespace: string, service: string, id: string, status: AdminStatus, reason: 'status_changed' | 'drained' = 'status_changed'): Promise<number> {
    return this.persist(this.registry.setStatus(namespace, service, id, status, reason));
  }

  recordCheckResult(namespace: string, service: string, id: string, checkId: string, specKey: string, result: CheckResult): Promise<number> {
    if (this.closed) return Promise.resolve(this.registry.revision);
    return this.persist(this.registry.recordCheckResult(namespace, service, id, checkId, specKey, result));
  }

  reportCheck(namespace: string, service: string, id: string, checkId: string, result: CheckResult): Promise<number> {
    return this.persist(this.registry.reportCheck(namespace, service, id, checkId, result));
  }

  setServiceSettings(namespace: string, service: string, settings: ServiceSettings): Promise<number> {
    return this.persist(this.registry.setServiceSettings(namespace, service, settings));
  }

  async reportInstance(namespace: string, service: string, id: string, report: ConsumerReport): Promise<{ revision: number; reporters: number; warning: boolean }> {
    const r = this.registry.reportInstance(namespace, service, id, report);
    return { revision: await this.persist(r.outcome), reporters: r.reporters, warning: r.warning };
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

  private persist(outcome: WriteOutcome): Promise<number> {
    return this.writes.persist(outcome);
  }

  private tick(): void {
    if (this.closed) return;
    for (const outcome of [...this.registry.expireDue(), ...this.registry.healthDue()]) {
      this.persist(outcome).catch(() => undefined);
    }
    for (const change of this.registry.takeProtectionChanges()) this.opts.onProtectionChange?.(change);
  }

  get storageObservers(): StorageObservers | undefined {
    return this.opts.storageObservers;
  }
}
