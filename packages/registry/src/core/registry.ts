/**
 * The registry state machine. Commands check the current state, describe their effect as
 * an Entry and apply it; replay applies logged entries through the same `apply`. No I/O,
 * timers or randomness: time comes from the injected clock, lease ids from the caller.
 */
import {
  REPORTS_CHECK_ID,
  SwitchboardError,
  completeCheckSpec,
  isHealthy,
  formatDuration,
  invalid,
  limitExceeded,
  type AdminStatus,
  type CheckResult,
  type CheckState,
  type ConsumerReport,
  type CheckSpec,
  type DeleteReason,
  type HistoryEntry,
  type Instance,
  type InstanceInput,
  type LeaseGrant,
  type Limits,
  type PutReason,
  type SelfPreservationStatus,
  type ServiceSettings,
  type WatchEvent,
} from '@switchboard/protocol';
import { CheckBook, clipOutput, dueAction, nextCheckState, type CheckDeadline, type TrackedCheck } from './checks.js';
import type { Clock } from './clock.js';
import { ENTRY_TARGET_BYTES, sliceChanges, type Change, type Entry, type Snapshot } from './entry.js';
import { combinedHealth, initialCheckStates, withCheckState } from './health.js';
import { HistoryBook, type HistorySnapshotItem } from './history.js';
import { LeaseZones } from './lease-zones.js';
import { LeaseTable, type Lease } from './leases.js';
import { ReportBook } from './reports.js';
import { SelfPreservation, type ProtectionChange } from './self-preservation.js';

export interface InstanceRecord {
  readonly instance: Instance;
  readonly specs: CheckSpec[];
  /** The instance serialised once, reused by every answer and event. */
  readonly json: string;
  /** Its reason-coded history, oldest first (see HistoryBook: never changed in place). */
  readonly history: readonly HistoryEntry[];
}

/**
 * An instance as stored. Its JSON is made when first asked for (stored instances are never
 * changed in place): a cp view, which has no log, serialises an instance only when an
 * answer needs it.
 */
class StoredInstance implements InstanceRecord {
  private text: string | null = null;

  constructor(
    readonly instance: Instance,
    readonly specs: CheckSpec[],
    readonly history: readonly HistoryEntry[],
  ) {}

  get json(): string {
    return (this.text ??= JSON.stringify(this.instance));
  }
}

/**
 * True when `input` is what `rec` holds, field by field, in the same order (what comparing
 * their JSON would say, without serialising either): an identical re-registration changes
 * nothing. `checks`: the input's check specs as the record stores them (cp completes them).
 */
export function sameInput(rec: InstanceRecord, input: InstanceInput, checks: readonly CheckSpec[] = input.checks): boolean {
  const i = rec.instance;
  if (i.address !== input.address || i.port !== input.port || i.leaseId !== input.leaseId || i.zone !== input.zone || i.version !== input.version || i.weight !== input.weight || i.protocol !== input.protocol) return false;
  if (i.tags.length !== input.tags.length || i.tags.some((t, k) => t !== input.tags[k])) return false;
  const had = Object.keys(i.metadata);
  const has = Object.keys(input.metadata);
  if (had.length !== has.length || had.some((k, n) => k !== has[n] || i.metadata[k] !== input.metadata[k])) return false;
  if (rec.specs.length !== checks.length) return false;
  return checks.length === 0 || JSON.stringify(rec.specs) === JSON.stringify(checks);
}

export interface ServiceState {
  readonly namespace: string;
  readonly name: string;
  /** Revision of the service's last change. */
  revision: number;
  readonly instances: Map<string, InstanceRecord>;
  /** Instances with status `up`, kept as instances come and go (no scan to count them). */
  up: number;
  /** Instances that `healthy=true` answers (status up, health not critical). */
  healthy: number;
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
  /** Monotonic time for leases, checks and self-preservation. */
  clock: Clock;
  /** Wall-clock time (ms since the Unix epoch) stamped on entries for history; default `clock`. */
  wallClock?: Clock;
  /** Start from this revision (a restored snapshot). */
  revision?: number;
  /** ap mode: the engine's hooks (see ReplicationHooks). */
  replication?: ReplicationHooks;
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


/** ap mode: how the engine takes part in every write of the registry. */
export interface ReplicationHooks {
  /** This node: instances owned by another node get no checks tracked here. */
  readonly nodeId: string;
  /** Called with each entry a command makes, before it is applied: stamps versions and owners. */
  stamp(entry: Entry): void;
}

export class Registry {
  /** ap mode only; null in standalone, where nothing changes. */
  replication: ReplicationHooks | null = null;
  readonly epoch: string;
  readonly limits: Limits;
  private readonly clock: Clock;
  private rev: number;
  private readonly leaseTable = new LeaseTable();
  private readonly services = new Map<string, ServiceState>();
  /** The same services by namespace, then name: a lookup builds no key string (the hot path of every read and write). */
  private readonly byNamespace = new Map<string, Map<string, ServiceState>>();
  /** Services with no instances, oldest emptied first; they keep their revision. */
  private readonly empty = new Map<string, ServiceState>();
  /** Highest revision of a forgotten empty service: the revision of any unknown service. */
  private forgottenRevision = 0;
  private instanceTotal = 0;
  private readonly wallClock: Clock;
  private readonly checks = new CheckBook();
  private readonly historyBook: HistoryBook;
  private readonly leaseZones = new LeaseZones();
  private readonly guard: SelfPreservation;
  private readonly settings = new Map<string, ServiceSettings>();
  private readonly reports: ReportBook;
  /** Engagements of self-preservation that started or ended, until the driver takes them. */
  private protectionChanges: ProtectionChange[] = [];

  constructor(opts: RegistryOptions) {
    this.epoch = opts.epoch;
    this.replication = opts.replication ?? null;
    this.limits = opts.limits;
    this.clock = opts.clock;
    this.wallClock = opts.wallClock ?? opts.clock;
    this.rev = opts.revision ?? 0;
    this.historyBook = new HistoryBook(opts.limits.maxHistoryPerInstance, opts.limits.maxDeletedHistories);
    this.reports = new ReportBook({
      windowMs: opts.limits.reportWindowMs,
      minReporters: opts.limits.reportMinReporters,
      maxReportersPerInstance: opts.limits.maxReportersPerInstance,
    });
    this.guard = new SelfPreservation({
      windowMs: opts.limits.selfPreservationWindowMs,
      thresholdPercent: opts.limits.selfPreservationThresholdPercent,
      minLeases: opts.limits.selfPreservationMinLeases,
      maxHoldMs: opts.limits.selfPreservationMaxHoldMs,
    });
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
    return this.byNamespace.get(namespace)?.get(name);
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

  /** When the next check time rule (ttl, critical timeout) comes due. */
  nextCheckDeadline(): number | undefined {
    return this.checks.nextDeadline();
  }

  /** The settings of a service, if it has any. */
  serviceSettings(namespace: string, service: string): ServiceSettings | undefined {
    return this.settings.get(serviceKey(namespace, service));
  }

  /** Every service that has settings. */
  allServiceSettings(): { namespace: string; service: string; settings: ServiceSettings }[] {
    const out: { namespace: string; service: string; settings: ServiceSettings }[] = [];
    for (const [key, settings] of this.settings) {
      const [namespace, service] = splitServiceKey(key);
      out.push({ namespace, service, settings });
    }
    return out;
  }

  /** The reason-coded history of an instance (also of one that is gone, for a while). */
  history(namespace: string, service: string, id: string): { exists: boolean; entries: readonly HistoryEntry[] } | undefined {
    const rec = this.instance(namespace, service, id);
    if (rec) return { exists: true, entries: rec.history };
    const gone = this.historyBook.retired(instanceKey(namespace, service, id));
    return gone ? { exists: false, entries: gone } : undefined;
  }

  /**
   * Check time rules due now, each once, for an engine that carries them out elsewhere
   * (cp writes them to etcd; the others call healthDue).
   */
  checkDeadlinesDue(): CheckDeadline[] {
    return this.checks.due(this.clock.now());
  }

  /** A report for a ttl check was heard elsewhere (cp: through etcd): its TTL starts again. */
  heardCheck(namespace: string, service: string, id: string, checkId: string): void {
    const tracked = this.checks.get(instanceKey(namespace, service, id), checkId);
    if (tracked?.spec.type === 'ttl' && tracked.spec.ttlMs !== null) this.checks.heard(tracked, this.clock.now());
  }

  /** The tracked spec of a check, for the scheduler. */
  trackedCheck(namespace: string, service: string, id: string, checkId: string): TrackedCheck | undefined {
    return this.checks.get(instanceKey(namespace, service, id), checkId);
  }

  selfPreservationStatus(): SelfPreservationStatus {
    const { global, zones } = this.guard.scopes();
    const cfg = this.guard.config;
    const toWall = (at: number | null): string | null => (at === null ? null : new Date(this.wallClock.now() - (this.clock.now() - at)).toISOString());
    const engagedZones = zones.map(({ sinceMs, ...z }) => ({ ...z, since: toWall(sinceMs) }));
    const engaged = global.engaged || engagedZones.length > 0;
    const first = global.engaged ? null : engagedZones[0];
    return {
      engaged,
      state: engaged ? 'protecting' : 'normal',
      reason: !engaged ? null : global.engaged ? `${global.expiredInWindow} of ${global.leases} leases lapsed within ${cfg.windowMs / 1000}s` : `zone ${first?.zone}: ${first?.expiredInWindow} of ${first?.leases} leases lapsed within ${cfg.windowMs / 1000}s`,
      since: global.engaged ? toWall(global.sinceMs) : (first?.since ?? null),
      expiredInWindow: this.guard.active ? global.expiredInWindow : 0,
      leases: this.guard.active ? global.leases : this.leaseTable.size,
      threshold: cfg.thresholdPercent / 100,
      windowMs: cfg.windowMs,
      minLeases: cfg.minLeases,
      maxHoldMs: cfg.maxHoldMs,
      blockedLeases: this.guard.heldCount,
      releasingLeases: this.guard.releasingCount,
      blockedEvictions: this.guard.blockedEvictions,
      zones: engagedZones,
    };
  }

  /** Engagements that started or ended since the last call (for the log). */
  takeProtectionChanges(): ProtectionChange[] {
    const out = this.protectionChanges;
    this.protectionChanges = [];
    return out;
  }

  // ---- lease commands ----

  grantLease(leaseId: string, ttlMs: number): WriteOutcome {
    if (this.leaseTable.get(leaseId)) throw new Error(`lease id ${leaseId} is already in use`);
    if (this.leaseTable.size >= this.limits.maxLeasesPerNode) {
      throw limitExceeded('maxLeasesPerNode', 'ttlMs', `this node holds ${this.leaseTable.size} leases`, 'share one lease among all instances of a process, or raise the limit');
    }
    return this.commit({ revision: this.rev, changes: [{ op: 'lease_grant', leaseId, ttlMs }] });
  }

  /**
   * Renews a lease for a full TTL. A lease whose deadline has passed is expired even if the
   * expiry tick has not ended it yet (it will, within the tick): LEASE_NOT_FOUND, as after
   * the tick, so that the answer does not depend on when the keep-alive landed. Unless
   * self-preservation holds it, or would hold it at the tick (protection is engaged for
   * its zones): then its client's keep-alive renews it, as it renews a held lease.
   */
  keepAlive(leaseId: string): LeaseGrant {
    const lease = this.requireLease(leaseId);
    const now = this.clock.now();
    if (lease.blockedSince === null && lease.expiresAt <= now && !this.guard.protects(this.leaseZones.zonesOf(leaseId))) {
      throw leaseNotFound(leaseId, this.replication?.nodeId);
    }
    if (lease.blockedSince !== null) this.guard.renewed(leaseId);
    this.leaseTable.renew(lease, now);
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

  /**
   * Ends every lease whose TTL has run out, one entry (and revision) per lease, unless
   * self-preservation holds it: then its instances stay, with a put of reason
   * `eviction_blocked`. Held leases that are no longer protected are ended too.
   */
  expireDue(): WriteOutcome[] {
    const now = this.clock.now();
    const out: WriteOutcome[] = [];
    // A held lease whose instances all went (registered again under a new lease after the
    // process restarted, or deregistered) protects nothing: it ends, and stops counting as
    // a lapse of its zones, which otherwise kept a zone's protection engaged, holding
    // leases that really died.
    if (this.guard.heldCount > 0) {
      for (const id of this.guard.heldIds()) {
        const lease = this.leaseTable.get(id);
        if (lease && lease.instances.size === 0) out.push(this.endLease(lease, lease.detached ? 'connection_lost' : 'lease_expired'));
      }
    }
    const due = this.leaseTable.due(now);
    for (const lease of due) this.guard.lapsed(lease.id, this.leaseZones.zonesOf(lease.id), now);
    if (this.guard.active || this.guard.engaged) {
      const changes = this.guard.evaluate(now, this.leaseTable.size, (z) => this.leaseZones.leasesIn(z));
      if (changes.length > 0) this.protectionChanges.push(...changes);
    }
    for (const lease of due) {
      const zones = this.leaseZones.zonesOf(lease.id);
      if (!this.guard.protects(zones)) {
        out.push(this.endLease(lease, lease.detached ? 'connection_lost' : 'lease_expired'));
        continue;
      }
      this.leaseTable.block(lease, now);
      this.guard.block(lease.id, zones, now, lease.ttlMs);
      out.push(...this.putUnchanged([...lease.instances], 'eviction_blocked', `lease ${lease.id} ran out while self-preservation is engaged; it is held`));
    }
    if (this.guard.heldCount > 0) {
      for (const id of this.guard.releasable(now)) {
        const lease = this.leaseTable.get(id);
        if (lease) out.push(this.endLease(lease, lease.detached ? 'connection_lost' : 'lease_expired'));
        else this.guard.ended(id);
      }
    }
    return out.filter((o) => o.entry !== null);
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
      if (prev && sameInput(prev, item.input)) {
        unchangedRevision = Math.max(unchangedRevision, prev.instance.modRevision);
        continue;
      }
      if (!prev) newInstances++;
      const instance = this.buildInstance(item, prev, next);
      changes.push(prev ? { op: 'put', instance, specs: item.input.checks, reason: 'updated', detail: describeUpdate(prev.instance, instance) } : { op: 'put', instance, specs: item.input.checks, reason: 'registered', detail: describeNew(instance) });
    }
    if (this.instanceTotal + newInstances > this.limits.maxInstancesPerNode) {
      throw limitExceeded('maxInstancesPerNode', 'instances', `this node holds ${this.instanceTotal} instances`, 'raise the limit or spread services over namespaces in another cluster');
    }
    if (changes.length === 0) return { entry: null, events: [], revision: unchangedRevision };
    return this.commit({ revision: next, changes });
  }

  /**
   * ap: deletes instances still bound to a lease this node does not hold (a record of this
   * node's that a peer changed after the lease ended here), as the lease's end would have.
   * An instance bound to a lease held meanwhile, or to another lease, is left alone.
   */
  endOrphaned(items: readonly { namespace: string; service: string; id: string; leaseId: string }[]): WriteOutcome {
    const changes: Change[] = [];
    for (const { namespace, service, id, leaseId } of items) {
      if (this.instance(namespace, service, id)?.instance.leaseId !== leaseId || this.lease(leaseId)) continue;
      changes.push({ op: 'delete', namespace, service, id, reason: 'lease_expired', detail: `lease ${leaseId}: not held by its node any more (it ended there before this change to the instance arrived)` });
    }
    if (changes.length === 0) return { entry: null, events: [], revision: this.rev };
    return this.commit({ revision: this.rev + 1, changes });
  }

  deregister(namespace: string, service: string, id: string): WriteOutcome {
    this.requireInstance(namespace, service, id);
    return this.commit({ revision: this.rev + 1, changes: [{ op: 'delete', namespace, service, id, reason: 'deregistered' }] });
  }

  setStatus(namespace: string, service: string, id: string, status: AdminStatus, reason: 'status_changed' | 'drained' = 'status_changed'): WriteOutcome {
    const rec = this.requireInstance(namespace, service, id);
    if (rec.instance.status === status) return { entry: null, events: [], revision: rec.instance.modRevision };
    const next = this.rev + 1;
    const instance: Instance = { ...rec.instance, status, modRevision: next };
    return this.commit({ revision: next, changes: [{ op: 'put', instance, specs: rec.specs, reason, detail: `${rec.instance.status} -> ${status}` }] });
  }

  // ---- health commands ----

  /**
   * One result of an active check. `specKey` is the spec it ran under: a result computed
   * before the instance was registered again with another spec is dropped. Only a change
   * of the shown state makes an entry.
   */
  recordCheckResult(namespace: string, service: string, id: string, checkId: string, specKey: string | null, result: CheckResult): WriteOutcome {
    const rec = this.instance(namespace, service, id);
    const tracked = this.checks.get(instanceKey(namespace, service, id), checkId);
    if (!rec || !tracked || (specKey !== null && tracked.specKey !== specKey)) return { entry: null, events: [], revision: rec?.instance.modRevision ?? this.rev };
    const shown = rec.instance.checks.find((c) => c.id === checkId);
    if (!shown) return { entry: null, events: [], revision: rec.instance.modRevision };
    const next = nextCheckState(tracked.spec, shown, tracked.counters, { status: result.status, output: clipOutput(result.output, this.limits.maxCheckOutputLength) });
    if (!next) return { entry: null, events: [], revision: rec.instance.modRevision };
    return this.putChecks(rec, checkId, next);
  }

  /** The ttl check a service reports into; CHECK_NOT_FOUND, or 400 for a check of another type. */
  requireTtlCheck(namespace: string, service: string, id: string, checkId: string): TrackedCheck {
    const tracked = this.checks.get(instanceKey(namespace, service, id), checkId);
    if (!tracked) {
      throw new SwitchboardError('CHECK_NOT_FOUND', `instance ${id} of service ${service} has no check ${checkId}`, {
        field: 'checkId',
        hint: 'declare the check with the registration ({"checks": [{"id": "...", "type": "ttl", "ttl": "30s"}]}) and report with its id',
      });
    }
    if (tracked.spec.type !== 'ttl') {
      throw invalid('checkId', `check ${checkId} is a ${tracked.spec.type} check; only ttl checks take reports`, 'report into a check declared with "type": "ttl"; the registry runs the other checks itself');
    }
    return tracked;
  }

  /** A service reports into its ttl check: the TTL starts again and the result counts. */
  reportCheck(namespace: string, service: string, id: string, checkId: string, result: CheckResult): WriteOutcome {
    this.requireInstance(namespace, service, id);
    const tracked = this.requireTtlCheck(namespace, service, id, checkId);
    this.checks.heard(tracked, this.clock.now());
    return this.recordCheckResult(namespace, service, id, checkId, null, result);
  }

  /**
   * A consumer reports a failure calling an instance. With enough distinct reporters in
   * the window the instance turns warning (a put with reason `reported`); one reporter alone
   * never changes anything.
   */
  reportInstance(namespace: string, service: string, id: string, report: ConsumerReport): { outcome: WriteOutcome; reporters: number; warning: boolean } {
    const rec = this.requireInstance(namespace, service, id);
    const key = instanceKey(namespace, service, id);
    const now = this.clock.now();
    const reporters = this.reports.add(key, report, now);
    const warned = rec.instance.checks.some((c) => c.id === REPORTS_CHECK_ID);
    if (warned || reporters < this.limits.reportMinReporters) {
      return { outcome: { entry: null, events: [], revision: rec.instance.modRevision }, reporters, warning: warned };
    }
    this.reports.watch(key, now);
    const state = this.reports.state(key, now);
    return { outcome: this.putReports(rec, state, state.output), reporters, warning: true };
  }

  /**
   * Time rules of checks that came due: a ttl check that heard nothing turns critical at
   * once; a persistent instance critical for `deregisterCriticalAfter` is deregistered.
   */
  healthDue(): WriteOutcome[] {
    const out: WriteOutcome[] = [];
    const now = this.clock.now();
    for (const key of this.reports.due(now)) {
      const [namespace, service, id] = splitKey(key);
      const rec = this.instance(namespace, service, id);
      if (!rec || !rec.instance.checks.some((c) => c.id === REPORTS_CHECK_ID)) {
        this.reports.clear(key);
      } else if (this.reports.warns(key, now)) {
        this.reports.watch(key, now);
      } else {
        this.reports.clear(key);
        const why = `consumer reports cleared: fewer than ${this.limits.reportMinReporters} reporters within ${formatDuration(this.limits.reportWindowMs)}`;
        out.push(this.putReports(rec, null, why));
      }
    }
    for (const due of this.checks.due(now)) {
      const [namespace, service, id] = splitKey(due.check.instanceKey);
      const rec = this.instance(namespace, service, id);
      const action = rec ? dueAction(due, rec.instance) : null;
      if (!rec || !action) continue;
      if (action.kind === 'show') out.push(this.putChecks(rec, due.check.id, action.state));
      else out.push(this.commit({ revision: this.rev + 1, changes: [{ op: 'delete', namespace, service, id, reason: 'critical_timeout', detail: action.detail }] }));
    }
    return out;
  }

  /** Sets (or, with every field null, removes) the settings of a service. */
  setServiceSettings(namespace: string, service: string, settings: ServiceSettings): WriteOutcome {
    const key = serviceKey(namespace, service);
    const prev = this.settings.get(key);
    const removing = settings.protectThreshold === null;
    if ((removing && !prev) || (prev && prev.protectThreshold === settings.protectThreshold)) {
      return { entry: null, events: [], revision: this.serviceRevision(namespace, service) };
    }
    if (!prev && this.settings.size >= this.limits.maxServiceSettings) {
      throw limitExceeded('maxServiceSettings', 'service', `${this.settings.size} services already have settings`, 'remove the settings of services that no longer need them, or raise the limit');
    }
    return this.commit({ revision: this.rev + 1, changes: [{ op: 'settings', namespace, service, settings }] });
  }

  // ---- apply and replay ----

  /** Applies an entry (live or from the log) and returns the events it makes. */
  apply(entry: Entry): WatchEvent[] {
    const events: WatchEvent[] = [];
    const at = entry.at === undefined ? null : new Date(entry.at).toISOString();
    for (const change of entry.changes) {
      switch (change.op) {
        case 'put': {
          const { instance } = change;
          const reason: PutReason = change.reason ?? (this.instance(instance.namespace, instance.service, instance.id) ? 'updated' : 'registered');
          const ev = this.applyPut(instance, change.specs, entry.revision, { revision: entry.revision, at, type: 'put', reason, detail: change.detail ?? null, status: instance.status, health: instance.health });
          ev.reason = reason;
          events.push(ev);
          break;
        }
        case 'delete': {
          const ev = this.applyDelete(change.namespace, change.service, change.id, change.reason, entry.revision, change.detail ?? null, at);
          if (ev) events.push(ev);
          break;
        }
        case 'lease_grant':
          this.leaseTable.add(change.leaseId, change.ttlMs, this.clock.now());
          break;
        case 'lease_end':
          this.leaseTable.remove(change.leaseId);
          this.guard.ended(change.leaseId);
          break;
        case 'settings':
          this.applySettings(change.namespace, change.service, change.settings, entry.revision);
          break;
      }
    }
    this.rev = Math.max(this.rev, entry.revision);
    return events;
  }

  snapshot(): Snapshot {
    const instances: Snapshot['instances'] = [];
    const emptyServices: Snapshot['emptyServices'] = [];
    const serviceRevisions: NonNullable<Snapshot['serviceRevisions']> = [];
    // The deleted instances' histories first (oldest deletion first), then the live ones'.
    const histories = this.historyBook.snapshot();
    for (const s of this.services.values()) {
      if (s.instances.size === 0) {
        // (One that never had instances, only settings, is not in `empty`: kept first.)
        if (!this.empty.has(serviceKey(s.namespace, s.name))) emptyServices.push({ namespace: s.namespace, service: s.name, revision: s.revision });
        continue;
      }
      serviceRevisions.push({ namespace: s.namespace, service: s.name, revision: s.revision });
      for (const r of s.instances.values()) {
        instances.push({ instance: r.instance, specs: r.specs });
        if (r.history.length > 0) histories.push({ key: instanceKey(s.namespace, s.name, r.instance.id), deleted: false, entries: r.history });
      }
    }
    // In the order they became empty (the oldest is forgotten first), so that a node
    // restored from the snapshot forgets the same ones as the node that wrote it.
    for (const s of this.empty.values()) emptyServices.push({ namespace: s.namespace, service: s.name, revision: s.revision });
    const leases = [...this.leaseTable.values()].map((l) => ({ leaseId: l.id, ttlMs: l.ttlMs }));
    const serviceSettings = [...this.settings].map(([key, settings]) => {
      const [namespace, service] = key.split('/') as [string, string];
      return { namespace, service, settings };
    });
    return { format: 1, epoch: this.epoch, revision: this.rev, leases, instances, emptyServices, serviceRevisions, serviceSettings, histories, ...(this.forgottenRevision > 0 ? { forgottenRevision: this.forgottenRevision } : {}) };
  }

  /** Rebuilds a registry from a snapshot; every lease gets a full TTL from now. */
  static fromSnapshot(snap: Snapshot, opts: Omit<RegistryOptions, 'epoch' | 'revision'>): Registry {
    const reg = new Registry({ ...opts, epoch: snap.epoch, revision: snap.revision });
    reg.forgottenRevision = snap.forgottenRevision ?? 0;
    for (const l of snap.leases) reg.leaseTable.add(l.leaseId, l.ttlMs, opts.clock.now());
    for (const e of snap.emptyServices) {
      const s = reg.serviceFor(e.namespace, e.service);
      s.revision = e.revision;
      reg.empty.set(serviceKey(e.namespace, e.service), s);
    }
    for (const { instance, specs } of snap.instances) reg.applyPut(instance, specs, instance.modRevision);
    for (const e of snap.serviceRevisions ?? []) {
      const s = reg.service(e.namespace, e.service);
      if (s) s.revision = Math.max(s.revision, e.revision);
    }
    for (const { namespace, service, settings } of snap.serviceSettings ?? []) reg.settings.set(serviceKey(namespace, service), settings);
    reg.restoreHistories(snap.histories ?? []);
    return reg;
  }

  /** A snapshot's histories: each live one to its instance's record, the others kept as deleted ones. */
  private restoreHistories(items: readonly HistorySnapshotItem[]): void {
    for (const { key, deleted, entries } of items) {
      const [namespace, service, id] = splitKey(key);
      const svc = deleted ? undefined : this.service(namespace, service);
      const rec = svc?.instances.get(id);
      // (A live history without its instance, which no snapshot of this version holds, is kept as a deleted one.)
      if (svc && rec) svc.instances.set(id, new StoredInstance(rec.instance, rec.specs, entries));
      else this.historyBook.retire(key, entries);
    }
  }

  /**
   * Starts the revision at `floor` at least (after a repair moved acknowledged records
   * aside: their revisions, which clients may have seen, are not given to other changes).
   */
  raiseRevision(floor: number): void {
    if (floor > this.rev) this.rev = floor;
  }

  /** After replay, leases restored from disk start a full TTL from now. */
  renewAllLeases(): void {
    this.leaseTable.renewAll(this.clock.now());
  }

  // ---- internals ----

  private commit(entry: Entry): WriteOutcome {
    entry.at ??= this.wallClock.now();
    this.replication?.stamp(entry);
    const events = this.apply(entry);
    return { entry, events, revision: entry.revision };
  }

  private endLease(lease: Lease, reason: 'lease_expired' | 'lease_revoked' | 'connection_lost'): WriteOutcome {
    const deletes: Change[] = [];
    const detail = reason === 'connection_lost' ? `lease ${lease.id}: its session closed without a hand-over` : `lease ${lease.id}`;
    for (const key of lease.instances) {
      const [namespace, service, id] = splitKey(key);
      deletes.push({ op: 'delete', namespace, service, id, reason, detail });
    }
    const revision = deletes.length > 0 ? this.rev + 1 : this.rev;
    return this.commit({ revision, changes: [...deletes, { op: 'lease_end', leaseId: lease.id, reason: reason === 'lease_revoked' ? reason : 'lease_expired' }] });
  }

  /**
   * Puts instances again as they are (a state change with no new field: held by
   * self-preservation): one entry, or several of about ENTRY_TARGET_BYTES for large ones.
   */
  private putUnchanged(keys: string[], reason: PutReason, detail: string): WriteOutcome[] {
    const changes: Change[] = [];
    // The stored JSON's length is the exact size (an estimate misses JSON escaping).
    const size = new Map<Change, number>();
    for (const key of keys) {
      const [namespace, service, id] = splitKey(key);
      const rec = this.instance(namespace, service, id);
      if (!rec) continue;
      const c: Change = { op: 'put', instance: { ...rec.instance }, specs: rec.specs, reason, detail };
      changes.push(c);
      size.set(c, rec.json.length);
    }
    return sliceChanges(changes, ENTRY_TARGET_BYTES, (c) => size.get(c) ?? 0).map((slice) => {
      const next = this.rev + 1;
      for (const c of slice) if (c.op === 'put') c.instance.modRevision = next;
      return this.commit({ revision: next, changes: slice });
    });
  }

  /** Puts an instance with one check in a new state. */
  private putChecks(rec: InstanceRecord, checkId: string, state: CheckState): WriteOutcome {
    const next = this.rev + 1;
    const { checks, health, detail, reportsCleared } = withCheckState(rec.instance.checks, checkId, state);
    if (reportsCleared) this.reports.clear(instanceKey(rec.instance.namespace, rec.instance.service, rec.instance.id));
    const instance: Instance = { ...rec.instance, checks, health, modRevision: next };
    const reason: PutReason = state.status === 'passing' ? 'check_passed' : 'check_failed';
    return this.commit({ revision: next, changes: [{ op: 'put', instance, specs: rec.specs, reason, detail }] });
  }

  /** Puts an instance with the consumers' warning set (`state`) or cleared (null). */
  private putReports(rec: InstanceRecord, state: CheckState | null, detail: string): WriteOutcome {
    const next = this.rev + 1;
    const checks = [...rec.instance.checks.filter((c) => c.id !== REPORTS_CHECK_ID), ...(state ? [state] : [])];
    const instance: Instance = { ...rec.instance, checks, health: combinedHealth(checks), modRevision: next };
    return this.commit({ revision: next, changes: [{ op: 'put', instance, specs: rec.specs, reason: 'reported', detail }] });
  }

  private applySettings(namespace: string, service: string, settings: ServiceSettings, revision: number): void {
    const key = serviceKey(namespace, service);
    if (settings.protectThreshold === null) this.settings.delete(key);
    else this.settings.set(key, settings);
    // Answers of the service change with its settings: a new revision invalidates them.
    const svc = this.serviceFor(namespace, service);
    svc.revision = revision;
    if (svc.instances.size === 0) this.markEmpty(svc);
  }

  private buildInstance(item: RegistrationItem, prev: InstanceRecord | undefined, rev: number): Instance {
    return instanceFromRegistration(item, prev, rev);
  }


  /** `happened`: the change for the instance's history (none when restoring a snapshot, which has the histories). */
  private applyPut(instance: Instance, storedSpecs: CheckSpec[], revision: number, happened?: HistoryEntry): WatchEvent {
    const specs = storedSpecs.map(completeCheckSpec);
    const svc = this.serviceFor(instance.namespace, instance.service);
    const prev = svc.instances.get(instance.id);
    const key = instanceKey(instance.namespace, instance.service, instance.id);
    if (prev?.instance.leaseId && prev.instance.leaseId !== instance.leaseId) {
      this.leaseTable.get(prev.instance.leaseId)?.instances.delete(key);
    }
    if (instance.leaseId) this.leaseTable.get(instance.leaseId)?.instances.add(key);
    if (prev?.instance.leaseId && prev.instance.zone) this.leaseZones.unbind(prev.instance.leaseId, prev.instance.zone);
    if (instance.leaseId && instance.zone && this.ownsLocally(instance)) this.leaseZones.bind(instance.leaseId, instance.zone);
    if (!prev) {
      this.instanceTotal++;
      if (this.empty.size > 0) this.empty.delete(serviceKey(instance.namespace, instance.service));
    }
    if (prev) uncount(svc, prev.instance);
    count(svc, instance);
    const history = prev ? prev.history : this.historyBook.resume(key);
    svc.instances.set(instance.id, new StoredInstance(instance, specs, happened ? this.historyBook.extend(history, happened) : history));
    svc.revision = revision;
    if (this.ownsLocally(instance)) this.checks.sync(key, instance, specs, this.clock.now());
    else this.checks.drop(key);
    if (instance.checks.some((c) => c.id === REPORTS_CHECK_ID)) this.reports.restored(key, this.clock.now());
    return { epoch: this.epoch, revision, type: 'put', service: instance.service, namespace: instance.namespace, instance };
  }

  private applyDelete(namespace: string, service: string, id: string, reason: DeleteReason, revision: number, detail: string | null, at: string | null): WatchEvent | undefined {
    const svc = this.service(namespace, service);
    const rec = svc?.instances.get(id);
    if (!svc || !rec) return undefined;
    svc.instances.delete(id);
    uncount(svc, rec.instance);
    this.instanceTotal--;
    const key = instanceKey(namespace, service, id);
    if (rec.instance.leaseId) this.leaseTable.get(rec.instance.leaseId)?.instances.delete(key);
    if (rec.instance.leaseId && rec.instance.zone) this.leaseZones.unbind(rec.instance.leaseId, rec.instance.zone);
    this.checks.drop(key);
    this.reports.clear(key);
    this.historyBook.retire(key, this.historyBook.extend(rec.history, { revision, at, type: 'delete', reason, detail, status: rec.instance.status, health: rec.instance.health }));
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
      const names = this.byNamespace.get(old.namespace);
      names?.delete(old.name);
      if (names?.size === 0) this.byNamespace.delete(old.namespace);
      this.forgottenRevision = Math.max(this.forgottenRevision, old.revision);
    }
  }

  private serviceFor(namespace: string, name: string): ServiceState {
    let s = this.service(namespace, name);
    if (!s) {
      s = { namespace, name, revision: this.forgottenRevision, instances: new Map(), up: 0, healthy: 0 };
      this.services.set(serviceKey(namespace, name), s);
      let names = this.byNamespace.get(namespace);
      if (!names) this.byNamespace.set(namespace, (names = new Map()));
      names.set(name, s);
    }
    return s;
  }

  private requireLease(leaseId: string): Lease {
    const lease = this.leaseTable.get(leaseId);
    if (!lease) throw leaseNotFound(leaseId, this.replication?.nodeId);
    return lease;
  }

  /** The instance, or INSTANCE_NOT_FOUND. */
  requireInstance(namespace: string, service: string, id: string): InstanceRecord {
    const rec = this.instance(namespace, service, id);
    if (!rec) {
      throw new SwitchboardError('INSTANCE_NOT_FOUND', `instance ${id} of service ${service} in namespace ${namespace} does not exist`, {
        hint: 'check the service name, instance id and namespace; list the service with GET /v1/services/{service}',
      });
    }
    return rec;
  }

  /** Every live lease, unordered (for metrics; do not change them). */
  allLeases(): IterableIterator<Lease> {
    return this.leaseTable.values();
  }

  /** Every service that has instances, unordered (listServices sorts; this does not). */
  *allServices(): IterableIterator<ServiceState> {
    for (const s of this.services.values()) if (s.instances.size > 0) yield s;
  }

  // ---- ap mode (appended) ----

  /** Whether this node runs the instance's checks and counts its lease (always, outside ap mode). */
  private ownsLocally(instance: Instance): boolean {
    return instance.owner === undefined || instance.owner === this.replication?.nodeId;
  }

  /**
   * Applies records learned from peers, or changes of this node's view of them, as one
   * local entry (one local revision): puts get this node's revisions, deletes of absent
   * instances are dropped. Nothing is stamped: the changes carry their `repl` already.
   * The instances of the puts are taken over (their revisions are set in place).
   */
  applyReplicated(changes: Change[]): WriteOutcome {
    const next = this.rev + 1;
    const out: Change[] = [];
    for (const c of changes) {
      if (c.op === 'put') {
        const prev = this.instance(c.instance.namespace, c.instance.service, c.instance.id);
        c.instance.createRevision = prev?.instance.createRevision ?? next;
        c.instance.modRevision = next;
        out.push(c);
      } else if (c.op === 'delete') {
        if (this.instance(c.namespace, c.service, c.id)) out.push(c);
      } else out.push(c);
    }
    if (out.length === 0) return { entry: null, events: [], revision: this.rev };
    // Records kept but not shown change no revision (like a lease grant); settings change
    // the service's answers, so they take a new revision as a local settings write does.
    const revision = out.some((c) => c.op === 'put' || c.op === 'delete' || c.op === 'settings') ? next : this.rev;
    const entry: Entry = { revision, changes: out, at: this.wallClock.now() };
    const events = this.apply(entry);
    return { entry, events, revision };
  }
}

/**
 * 404 LEASE_NOT_FOUND, in every mode. In ap mode (`apNode`: this node's id) leases are per
 * node: a lease this node does not hold may well be alive on another node (a client that
 * sends its keep-alives to the wrong node), and the answer says so instead of "does not exist".
 */
export function leaseNotFound(leaseId: string, apNode?: string): SwitchboardError {
  if (apNode !== undefined) {
    return new SwitchboardError('LEASE_NOT_FOUND', `lease ${leaseId} is not held by this node (${apNode}): in ap mode a lease lives on the node that granted it, so it may be another node's, or it expired or was revoked`, {
      field: 'leaseId',
      hint: 'keep a lease alive, and register under it, on the node that granted it (the SDK does); to move to this node, create a lease here with POST /v1/leases and register the instances again under it',
    });
  }
  return new SwitchboardError('LEASE_NOT_FOUND', `lease ${leaseId} does not exist (it never did, expired or was revoked)`, {
    field: 'leaseId',
    hint: 'create a new lease with POST /v1/leases and register the instances again',
  });
}

/** What a history says about a new instance. */
export function describeNew(i: Instance): string {
  return `${i.address}:${i.port}, ${i.leaseId === null ? 'persistent' : `lease ${i.leaseId}`}`;
}

const UPDATE_FIELDS = ['address', 'port', 'protocol', 'zone', 'version', 'tags', 'metadata', 'weight', 'leaseId', 'checks'] as const;

/** Which fields a re-registration changed. */
export function describeUpdate(prev: Instance, next: Instance): string {
  const changed = UPDATE_FIELDS.filter((f) => JSON.stringify(prev[f]) !== JSON.stringify(next[f]));
  return changed.length === 0 ? 'check declarations changed' : `changed ${changed.join(', ')}`;
}

export function splitKey(key: string): [string, string, string] {
  const a = key.indexOf('/');
  const b = key.indexOf('/', a + 1);
  return [key.slice(0, a), key.slice(a + 1, b), key.slice(b + 1)];
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The instance a registration makes, keeping what the previous record owns (status, reported check). */
export function instanceFromRegistration(item: RegistrationItem, prev: InstanceRecord | undefined, rev: number): Instance {
  const { input } = item;
  const reported = prev?.instance.checks.find((c) => c.id === REPORTS_CHECK_ID);
  const checks = [...initialCheckStates(input.checks, prev?.instance.checks ?? []), ...(reported ? [reported] : [])];
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

function count(svc: ServiceState, i: Instance): void {
  if (i.status === 'up') svc.up++;
  if (isHealthy(i)) svc.healthy++;
}

function uncount(svc: ServiceState, i: Instance): void {
  if (i.status === 'up') svc.up--;
  if (isHealthy(i)) svc.healthy--;
}

export function splitServiceKey(key: string): [string, string] {
  const a = key.indexOf('/');
  return [key.slice(0, a), key.slice(a + 1)];
}
