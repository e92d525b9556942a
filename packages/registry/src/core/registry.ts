/**
 * The registry state machine. Commands check the current state, describe their effect as
 * an Entry and apply it; replay applies logged entries through the same `apply`. No I/O,
 * timers or randomness: time comes from the injected clock, lease ids from the caller.
 */
import {
  SwitchboardError,
  limitExceeded,
  type AdminStatus,
  type CheckSpec,
  type DeleteReason,
  type Instance,
  type InstanceInput,
  type LeaseGrant,
  type Limits,
  type WatchEvent,
} from '@switchboard/protocol';
import type { Clock } from './clock.js';
import type { Change, Entry, Snapshot } from './entry.js';
import { combinedHealth, initialCheckStates } from './health.js';
import { LeaseTable, type Lease } from './leases.js';

export interface InstanceRecord {
  readonly instance: Instance;
  readonly specs: CheckSpec[];
  /** The instance serialised once, reused by every answer and event. */
  readonly json: string;
  /** Canonical form of what was registered, to tell a no-op re-registration. */
  readonly inputKey: string;
}

export interface ServiceState {
  readonly namespace: string;
  readonly name: string;
  /** Revision of the service's last change. */
  revision: number;
  readonly instances: Map<string, InstanceRecord>;
}

/** What a write did: the entry to make durable and the events to announce after that. */
export interface WriteOutcome {
  /** null when the write changed nothing (an identical re-registration). */
  entry: Entry | null;
  events: WatchEvent[];
  /** The revision to answer with. */
  revision: number;
}

export interface RegistryOptions {
  epoch: string;
  limits: Limits;
  clock: Clock;
  /** Start from this revision (a restored snapshot). */
  revision?: number;
}

export interface RegistrationItem {
  namespace: string;
  service: string;
  id: string;
  input: InstanceInput;
}

/** How many empty services keep their revision before the oldest are forgotten. */
const MAX_EMPTY_SERVICES = 10_000;

export const serviceKey = (namespace: string, service: string): string => `${namespace}/${service}`;
export const instanceKey = (namespace: string, service: string, id: string): string => `${namespace}/${service}/${id}`;

function inputKeyOf(input: InstanceInput): string {
  return JSON.stringify(input);
}

export class Registry {
  readonly epoch: string;
  readonly limits: Limits;
  private readonly clock: Clock;
  private rev: number;
  private readonly leaseTable = new LeaseTable();
  private readonly services = new Map<string, ServiceState>();
  /** Services with no instances, oldest emptied first; they keep their revision. */
  private readonly empty = new Map<string, ServiceState>();
  /** Highest revision of a forgotten empty service: the revision of any unknown service. */
  private forgottenRevision = 0;
  private instanceTotal = 0;

  constructor(opts: RegistryOptions) {
    this.epoch = opts.epoch;
    this.limits = opts.limits;
    this.clock = opts.clock;
    this.rev = opts.revision ?? 0;
  }

  // ---- reads ----

  get revision(): number {
    return this.rev;
  }
  get leaseCount(): number {
    return this.leaseTable.size;
  }
  get instanceCount(): number {
    return this.instanceTotal;
  }
  get serviceCount(): number {
    return this.services.size - this.empty.size;
  }

  service(namespace: string, name: string): ServiceState | undefined {
    return this.services.get(serviceKey(namespace, name));
  }

  /** The revision of a service's last change (also for services without instances). */
  serviceRevision(namespace: string, name: string): number {
    return this.service(namespace, name)?.revision ?? this.forgottenRevision;
  }

  instance(namespace: string, service: string, id: string): InstanceRecord | undefined {
    return this.service(namespace, service)?.instances.get(id);
  }

  /** Services that have instances, sorted by namespace then name. */
  listServices(namespace?: string): ServiceState[] {
    const out: ServiceState[] = [];
    for (const s of this.services.values()) {
      if (s.instances.size > 0 && (namespace === undefined || s.namespace === namespace)) out.push(s);
    }
    return out.sort((a, b) => (a.namespace === b.namespace ? cmp(a.name, b.name) : cmp(a.namespace, b.namespace)));
  }

  lease(id: string): Lease | undefined {
    return this.leaseTable.get(id);
  }

  /** When the next lease runs out, for the driver's timer. */
  nextLeaseDeadline(): number | undefined {
    return this.leaseTable.nextDeadline();
  }

  // ---- lease commands ----

  grantLease(leaseId: string, ttlMs: number): WriteOutcome {
    if (this.leaseTable.get(leaseId)) throw new Error(`lease id ${leaseId} is already in use`);
    if (this.leaseTable.size >= this.limits.maxLeasesPerNode) {
      throw limitExceeded('maxLeasesPerNode', 'ttlMs', `this node holds ${this.leaseTable.size} leases`, 'share one lease among all instances of a process, or raise the limit');
    }
    return this.commit({ revision: this.rev, changes: [{ op: 'lease_grant', leaseId, ttlMs }] });
  }

  keepAlive(leaseId: string): LeaseGrant {
    const lease = this.requireLease(leaseId);
    this.leaseTable.renew(lease, this.clock.now());
    return { leaseId, ttlMs: lease.ttlMs };
  }

  /**
   * The client's session closed without a hand-over, so its process most likely died:
   * the lease now ends after `graceMs` unless it is kept alive again before then.
   */
  detachLease(leaseId: string, graceMs: number): void {
    const lease = this.leaseTable.get(leaseId);
    if (lease) this.leaseTable.shorten(lease, this.clock.now() + graceMs);
  }

  revokeLease(leaseId: string): WriteOutcome {
    return this.endLease(this.requireLease(leaseId), 'lease_revoked');
  }

  /** Ends every lease whose TTL has run out; one entry (and revision) per lease. */
  expireDue(): WriteOutcome[] {
    return this.leaseTable.due(this.clock.now()).map((lease) => this.endLease(lease, 'lease_expired'));
  }

  // ---- instance commands ----

  register(item: RegistrationItem): WriteOutcome {
    return this.registerBatch([item]);
  }

  /** All or nothing: every item is checked before anything changes. */
  registerBatch(items: RegistrationItem[]): WriteOutcome {
    const next = this.rev + 1;
    const changes: Change[] = [];
    const added = new Map<string, number>(); // lease id -> instances newly bound
    let newInstances = 0;
    let unchangedRevision = 0;
    for (const item of items) {
      const prev = this.instance(item.namespace, item.service, item.id);
      const leaseId = item.input.leaseId;
      if (leaseId !== null) {
        const lease = this.requireLease(leaseId);
        if (prev?.instance.leaseId !== leaseId) {
          const n = (added.get(leaseId) ?? 0) + 1;
          added.set(leaseId, n);
          if (lease.instances.size + n > this.limits.maxInstancesPerLease) {
            throw limitExceeded('maxInstancesPerLease', 'leaseId', `lease ${leaseId} already holds ${lease.instances.size} instances`, 'use another lease for more instances, or raise the limit');
          }
        }
      }
      const inputKey = inputKeyOf(item.input);
      if (prev && prev.inputKey === inputKey) {
        unchangedRevision = Math.max(unchangedRevision, prev.instance.modRevision);
        continue;
      }
      if (!prev) newInstances++;
      changes.push({ op: 'put', instance: this.buildInstance(item, prev, next), specs: item.input.checks });
    }
    if (this.instanceTotal + newInstances > this.limits.maxInstancesPerNode) {
      throw limitExceeded('maxInstancesPerNode', 'instances', `this node holds ${this.instanceTotal} instances`, 'raise the limit or spread services over namespaces in another cluster');
    }
    if (changes.length === 0) return { entry: null, events: [], revision: unchangedRevision };
    return this.commit({ revision: next, changes });
  }

  deregister(namespace: string, service: string, id: string): WriteOutcome {
    this.requireInstance(namespace, service, id);
    return this.commit({ revision: this.rev + 1, changes: [{ op: 'delete', namespace, service, id, reason: 'deregistered' }] });
  }

  setStatus(namespace: string, service: string, id: string, status: AdminStatus): WriteOutcome {
    const rec = this.requireInstance(namespace, service, id);
    if (rec.instance.status === status) return { entry: null, events: [], revision: rec.instance.modRevision };
    const next = this.rev + 1;
    const instance: Instance = { ...rec.instance, status, modRevision: next };
    return this.commit({ revision: next, changes: [{ op: 'put', instance, specs: rec.specs }] });
  }

  // ---- apply and replay ----

  /** Applies an entry (live or from the log) and returns the events it makes. */
  apply(entry: Entry): WatchEvent[] {
    const events: WatchEvent[] = [];
    for (const change of entry.changes) {
      switch (change.op) {
        case 'put':
          events.push(this.applyPut(change.instance, change.specs, entry.revision));
          break;
        case 'delete': {
          const ev = this.applyDelete(change.namespace, change.service, change.id, change.reason, entry.revision);
          if (ev) events.push(ev);
          break;
        }
        case 'lease_grant':
          this.leaseTable.add(change.leaseId, change.ttlMs, this.clock.now());
          break;
        case 'lease_end':
          this.leaseTable.remove(change.leaseId);
          break;
      }
    }
    this.rev = Math.max(this.rev, entry.revision);
    return events;
  }

  snapshot(): Snapshot {
    const instances: Snapshot['instances'] = [];
    const emptyServices: Snapshot['emptyServices'] = [];
    for (const s of this.services.values()) {
      if (s.instances.size === 0) emptyServices.push({ namespace: s.namespace, service: s.name, revision: s.revision });
      for (const r of s.instances.values()) instances.push({ instance: r.instance, specs: r.specs });
    }
    const leases = [...this.leaseTable.values()].map((l) => ({ leaseId: l.id, ttlMs: l.ttlMs }));
    return { format: 1, epoch: this.epoch, revision: this.rev, leases, instances, emptyServices };
  }

  /** Rebuilds a registry from a snapshot; every lease gets a full TTL from now. */
  static fromSnapshot(snap: Snapshot, opts: Omit<RegistryOptions, 'epoch' | 'revision'>): Registry {
    const reg = new Registry({ ...opts, epoch: snap.epoch, revision: snap.revision });
    for (const l of snap.leases) reg.leaseTable.add(l.leaseId, l.ttlMs, opts.clock.now());
    for (const e of snap.emptyServices) {
      const s = reg.serviceFor(e.namespace, e.service);
      s.revision = e.revision;
      reg.empty.set(serviceKey(e.namespace, e.service), s);
    }
    for (const { instance, specs } of snap.instances) reg.applyPut(instance, specs, instance.modRevision);
    return reg;
  }

  /** After replay, leases restored from disk start a full TTL from now. */
  renewAllLeases(): void {
    this.leaseTable.renewAll(this.clock.now());
  }

  // ---- internals ----

  private commit(entry: Entry): WriteOutcome {
    const events = this.apply(entry);
    return { entry, events, revision: entry.revision };
  }

  private endLease(lease: Lease, reason: 'lease_expired' | 'lease_revoked'): WriteOutcome {
    const deletes: Change[] = [];
    for (const key of lease.instances) {
      const [namespace, service, id] = splitKey(key);
      deletes.push({ op: 'delete', namespace, service, id, reason });
    }
    const revision = deletes.length > 0 ? this.rev + 1 : this.rev;
    return this.commit({ revision, changes: [...deletes, { op: 'lease_end', leaseId: lease.id, reason }] });
  }

  private buildInstance(item: RegistrationItem, prev: InstanceRecord | undefined, rev: number): Instance {
    const { input } = item;
    const checks = initialCheckStates(input.checks, prev?.instance.checks ?? []);
    return {
      id: item.id,
      service: item.service,
      namespace: item.namespace,
      address: input.address,
      port: input.port,
      protocol: input.protocol,
      zone: input.zone,
      version: input.version,
      tags: input.tags,
      metadata: input.metadata,
      weight: input.weight,
      status: prev?.instance.status ?? 'up',
      health: combinedHealth(checks),
      checks,
      leaseId: input.leaseId,
      createRevision: prev?.instance.createRevision ?? rev,
      modRevision: rev,
    };
  }

  private applyPut(instance: Instance, specs: CheckSpec[], revision: number): WatchEvent {
    const svc = this.serviceFor(instance.namespace, instance.service);
    const prev = svc.instances.get(instance.id);
    const key = instanceKey(instance.namespace, instance.service, instance.id);
    if (prev?.instance.leaseId && prev.instance.leaseId !== instance.leaseId) {
      this.leaseTable.get(prev.instance.leaseId)?.instances.delete(key);
    }
    if (instance.leaseId) this.leaseTable.get(instance.leaseId)?.instances.add(key);
    if (!prev) {
      this.instanceTotal++;
      this.empty.delete(serviceKey(instance.namespace, instance.service));
    }
    const input = inputFromInstance(instance, specs);
    svc.instances.set(instance.id, { instance, specs, json: JSON.stringify(instance), inputKey: inputKeyOf(input) });
    svc.revision = revision;
    return { epoch: this.epoch, revision, type: 'put', service: instance.service, namespace: instance.namespace, instance };
  }

  private applyDelete(namespace: string, service: string, id: string, reason: DeleteReason, revision: number): WatchEvent | undefined {
    const svc = this.service(namespace, service);
    const rec = svc?.instances.get(id);
    if (!svc || !rec) return undefined;
    svc.instances.delete(id);
    this.instanceTotal--;
    if (rec.instance.leaseId) this.leaseTable.get(rec.instance.leaseId)?.instances.delete(instanceKey(namespace, service, id));
    svc.revision = revision;
    if (svc.instances.size === 0) this.markEmpty(svc);
    return { epoch: this.epoch, revision, type: 'delete', service, namespace, instance: rec.instance, reason };
  }

  private markEmpty(svc: ServiceState): void {
    const key = serviceKey(svc.namespace, svc.name);
    this.empty.delete(key);
    this.empty.set(key, svc);
    while (this.empty.size > MAX_EMPTY_SERVICES) {
      const [oldKey, old] = this.empty.entries().next().value as [string, ServiceState];
      this.empty.delete(oldKey);
      this.services.delete(oldKey);
      this.forgottenRevision = Math.max(this.forgottenRevision, old.revision);
    }
  }

  private serviceFor(namespace: string, name: string): ServiceState {
    const key = serviceKey(namespace, name);
    let s = this.services.get(key);
    if (!s) {
      s = { namespace, name, revision: this.forgottenRevision, instances: new Map() };
      this.services.set(key, s);
    }
    return s;
  }

  private requireLease(leaseId: string): Lease {
    const lease = this.leaseTable.get(leaseId);
    if (!lease) {
      throw new SwitchboardError('LEASE_NOT_FOUND', `lease ${leaseId} does not exist (it never did, expired or was revoked)`, {
        field: 'leaseId',
        hint: 'create a new lease with POST /v1/leases and register the instances again',
      });
    }
    return lease;
  }

  private requireInstance(namespace: string, service: string, id: string): InstanceRecord {
    const rec = this.instance(namespace, service, id);
    if (!rec) {
      throw new SwitchboardError('INSTANCE_NOT_FOUND', `instance ${id} of service ${service} in namespace ${namespace} does not exist`, {
        hint: 'check the service name, instance id and namespace; list the service with GET /v1/services/{service}',
      });
    }
    return rec;
  }
}

function inputFromInstance(i: Instance, checks: CheckSpec[]): InstanceInput {
  return {
    address: i.address,
    port: i.port,
    leaseId: i.leaseId,
    zone: i.zone,
    version: i.version,
    tags: i.tags,
    metadata: i.metadata,
    weight: i.weight,
    protocol: i.protocol,
    checks,
  };
}

function splitKey(key: string): [string, string, string] {
  const a = key.indexOf('/');
  const b = key.indexOf('/', a + 1);
  return [key.slice(0, a), key.slice(a + 1, b), key.slice(b + 1)];
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
