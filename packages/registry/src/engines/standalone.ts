/**
 * The standalone engine: one node, state in memory, every entry made durable by the
 * storage before it is answered and announced. Order of a write:
 *   1. the core checks the command and applies its entry in memory (so the next command
 *      sees it);
 *   2. the entry goes to storage.append, which resolves once it is fsync'd (group commit);
 *   3. entries are announced to the hub strictly in append order, then the client is
 *      answered.
 */
import { randomBytes } from 'node:crypto';
import type { AdminStatus, LeaseGrant, Limits } from '@switchboard/protocol';
import type { Clock } from '../core/clock.js';
import { Registry, type RegistrationItem, type WriteOutcome } from '../core/registry.js';
import type { Storage } from '../storage/storage.js';
import type { Engine } from './engine.js';
import { Hub } from './hub.js';

export interface StandaloneOptions {
  nodeId: string;
  storage: Storage;
  limits: Limits;
  clock: Clock;
  /** How often lease deadlines are checked. */
  expiryTickMs?: number;
  /** Called when storage fails: the process must stop, memory is ahead of disk. */
  onFatal?: (err: unknown) => void;
  /** A snapshot failed; the log is intact, so the node goes on and tries again later. */
  onSnapshotError?: (err: unknown) => void;
  /** Called after recovery with what was replayed. */
  onRecovered?: (info: { revision: number; entries: number; fromSnapshot: boolean; ms: number }) => void;
}

type LeaseEndedListener = (leaseId: string, reason: 'lease_expired' | 'lease_revoked') => void;

interface Pending {
  outcome: WriteOutcome;
  done: boolean;
}

export function randomId(bytes = 8): string {
  return randomBytes(bytes).toString('hex');
}

export class StandaloneEngine implements Engine {
  readonly mode = 'standalone' as const;
  readonly nodeId: string;
  readonly hub: Hub;
  private readonly pending: Pending[] = [];
  private lastAppend: Promise<void> = Promise.resolve();
  private readonly timer: NodeJS.Timeout;
  private snapshotting = false;
  private readonly leaseListeners = new Set<LeaseEndedListener>();
  private closed = false;

  private constructor(
    readonly registry: Registry,
    private readonly storage: Storage,
    private readonly opts: StandaloneOptions,
  ) {
    this.nodeId = opts.nodeId;
    this.hub = new Hub(opts.limits.retainedEvents, registry.revision);
    this.timer = setInterval(() => this.tick(), opts.expiryTickMs ?? 100);
    this.timer.unref();
  }

  static async open(opts: StandaloneOptions): Promise<StandaloneEngine> {
    const started = Date.now();
    const rec = await opts.storage.open(() => randomId(8));
    const base = { limits: opts.limits, clock: opts.clock };
    const registry = rec.snapshot ? Registry.fromSnapshot(rec.snapshot, base) : new Registry({ ...base, epoch: rec.epoch });
    for (const entry of rec.entries) registry.apply(entry);
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
    this.leaseListeners.add(listener);
    return () => this.leaseListeners.delete(listener);
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

  setStatus(namespace: string, service: string, id: string, status: AdminStatus): Promise<number> {
    return this.persist(this.registry.setStatus(namespace, service, id, status));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.lastAppend.catch(() => undefined);
    await this.storage.close();
  }

  /** Makes an outcome durable, announces it in order, and returns the revision to answer. */
  private async persist(outcome: WriteOutcome): Promise<number> {
    if (!outcome.entry) {
      // A no-op still waits for earlier writes, so that it never answers before them.
      await this.lastAppend;
      return outcome.revision;
    }
    const slot: Pending = { outcome, done: false };
    this.pending.push(slot);
    const appended = this.storage.append(outcome.entry);
    this.lastAppend = appended;
    try {
      await appended;
    } catch (err) {
      this.opts.onFatal?.(err);
      throw err;
    }
    slot.done = true;
    this.announceDone();
    this.maybeSnapshot();
    return outcome.revision;
  }

  private announceDone(): void {
    while (this.pending.length > 0 && (this.pending[0] as Pending).done) {
      const { outcome } = this.pending.shift() as Pending;
      this.hub.publish(outcome.events, outcome.revision);
      for (const c of outcome.entry?.changes ?? []) {
        if (c.op === 'lease_end') for (const l of this.leaseListeners) l(c.leaseId, c.reason);
      }
    }
  }

  private tick(): void {
    if (this.closed) return;
    for (const outcome of this.registry.expireDue()) {
      this.persist(outcome).catch(() => undefined);
    }
  }

  private maybeSnapshot(): void {
    if (this.snapshotting || this.closed || !this.storage.snapshotDue()) return;
    this.snapshotting = true;
    this.storage
      .writeSnapshot(this.registry.snapshot())
      .catch((err) => this.opts.onSnapshotError?.(err))
      .finally(() => {
        this.snapshotting = false;
      });
  }
}
