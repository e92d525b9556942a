/**
 * What the engines that hold the registry themselves (standalone and ap) do for a client's
 * write: apply it to the registry and hand the outcome to the WritePath, which makes it
 * durable before it is answered and announced. cp keeps its state in etcd and writes there.
 */
import { randomBytes } from 'node:crypto';
import type { AdminStatus, CheckResult, ConsumerReport, LeaseGrant, ServiceSettings } from '@switchboard/protocol';
import type { Registry, RegistrationItem, WriteOutcome } from '../core/registry.js';
import type { StorageObservers } from '../storage/observer.js';
import type { Storage } from '../storage/storage.js';
import type { LeaseEndedListener } from './engine.js';
import type { WritePath } from './write-path.js';

export function randomId(bytes = 8): string {
  return randomBytes(bytes).toString('hex');
}

export abstract class LocalEngine {
  /** Set by close(): active check results that arrive later are not written. */
  protected closed = false;
  protected abstract readonly writes: WritePath;

  protected constructor(
    readonly registry: Registry,
    protected readonly storage: Storage,
    private readonly observers: StorageObservers | undefined,
  ) {}

  get durable(): boolean {
    return this.storage.durable;
  }
  get dataDir(): string | null {
    return this.storage.location;
  }
  get storageObservers(): StorageObservers | undefined {
    return this.observers;
  }

  /** The id of a new lease. */
  protected newLeaseId(): string {
    return randomId(8);
  }

  async grantLease(ttlMs: number): Promise<LeaseGrant> {
    const leaseId = this.newLeaseId();
    await this.clientWrite(() => this.registry.grantLease(leaseId, ttlMs));
    return { leaseId, ttlMs };
  }

  detachLease(leaseId: string, graceMs: number): void {
    this.registry.detachLease(leaseId, graceMs);
  }

  onLeaseEnded(listener: LeaseEndedListener): () => void {
    return this.writes.onLeaseEnded(listener);
  }

  revokeLease(leaseId: string): Promise<number> {
    return this.clientWrite(() => this.registry.revokeLease(leaseId));
  }

  register(item: RegistrationItem): Promise<number> {
    return this.clientWrite(() => this.registry.register(item));
  }

  registerBatch(items: RegistrationItem[]): Promise<number> {
    return this.clientWrite(() => this.registry.registerBatch(items));
  }

  deregister(namespace: string, service: string, id: string): Promise<number> {
    return this.clientWrite(() => this.registry.deregister(namespace, service, id));
  }

  setStatus(namespace: string, service: string, id: string, status: AdminStatus, reason: 'status_changed' | 'drained' = 'status_changed'): Promise<number> {
    return this.clientWrite(() => this.registry.setStatus(namespace, service, id, status, reason));
  }

  recordCheckResult(namespace: string, service: string, id: string, checkId: string, specKey: string, result: CheckResult): Promise<number> {
    if (this.closed) return Promise.resolve(this.registry.revision);
    return this.persist(this.registry.recordCheckResult(namespace, service, id, checkId, specKey, result));
  }

  reportCheck(namespace: string, service: string, id: string, checkId: string, result: CheckResult): Promise<number> {
    return this.clientWrite(() => this.registry.reportCheck(namespace, service, id, checkId, result));
  }

  setServiceSettings(namespace: string, service: string, settings: ServiceSettings): Promise<number> {
    return this.clientWrite(() => this.registry.setServiceSettings(namespace, service, settings));
  }

  /** Counts a consumer's report on this node. */
  async reportInstance(namespace: string, service: string, id: string, report: ConsumerReport): Promise<{ revision: number; reporters: number; warning: boolean }> {
    this.writes.admit();
    const r = this.registry.reportInstance(namespace, service, id, report);
    return { revision: await this.persist(r.outcome), reporters: r.reporters, warning: r.warning };
  }

  /**
   * A client's write: refused while MAX_PENDING_WRITES wait for the log (write-path.ts),
   * before the command touches the registry; else applied and made durable.
   */
  protected async clientWrite(command: () => WriteOutcome): Promise<number> {
    this.writes.admit();
    return this.persist(command());
  }

  protected persist(outcome: WriteOutcome, after?: () => void): Promise<number> {
    return this.writes.persist(outcome, after);
  }
}
