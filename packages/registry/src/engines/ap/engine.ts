/**
 * The ap engine: every node holds the whole registry, accepts any write and replicates
 * the changes it makes to every peer; see docs/ap.md for the protocol. The registry core
 * stays the read model and the write path is the standalone one (apply in memory, make
 * durable, announce in order); what this engine adds:
 *  - every put and delete a command makes is stamped with a hybrid logical clock version
 *    and an owner, and kept in the replica table (core/replica.ts);
 *  - after it is durable, the change goes into the outbox, sent to every reachable peer in
 *    batches (apBatchMaxRecords, apBatchDelayMs); keep-alives never leave the node;
 *  - records from peers are merged (greater version wins) and applied as one local entry
 *    per batch: one fsync per batch, never one per record;
 *  - anti-entropy compares per-service digests with one peer per round and exchanges the
 *    records of the services that differ; a starting node catches up this way before it
 *    reports ready;
 *  - the view: records of an unreachable owner stay, flagged `unconfirmed`; lease-bound
 *    ones are hidden after apOwnerGraceMs unless cluster-wide self-preservation holds them;
 *  - removed members (an operator's `removeMember`, spread with `ap_forget`): forgotten
 *    for good, their lease-bound records dropped and their persistent ones adopted by one
 *    remaining node (core/membership.ts).
 */
import { SwitchboardError, isNodeId, validateConsumerReport, type CheckResult, type CheckSpec, type ClusterMember, type ClusterStatus, type ConsumerReport, type DeleteReason, type Instance, type LeaseGrant, type Limits, type MemberRemoval } from '@switchboard/protocol';
import client, { type Registry as MetricsRegistry } from 'prom-client';
import type { Clock } from '../../core/clock.js';
import { approxRecordBytes, sliceChanges, type Change, type Entry } from '../../core/entry.js';
import { HybridClock, cutAt, versionMs } from '../../core/hlc.js';
import { adoptionVersion, removedOwnerAction, removedTombstone } from '../../core/membership.js';
import { Registry, type RegistrationItem, type ReplicationHooks } from '../../core/registry.js';
import { MAX_FORWARDED_REPORTS } from '../../core/reports.js';
import { ReplicaTable, expiryVersion, recordKey, type OptionalKeys, type ReplicaRecord, type ServiceDigest, type StoredRecord, type WireInstance } from '../../core/replica.js';
import { SettingsReplica, validSettingsRecord, type SettingsRecord } from '../../core/replica-settings.js';
import type { ProtectionChange } from '../../core/self-preservation.js';
import { HealthMonitor, noCheckStats, type CheckStats, type MonitorOptions } from '../../health/monitor.js';
import { CheckNetworks, type DenialObserver } from '../../health/networks.js';
import type { Storage } from '../../storage/storage.js';
import type { StorageObservers } from '../../storage/observer.js';
import type { Engine } from '../engine.js';
import { WritePath } from '../write-path.js';
import { Hub } from '../hub.js';
import { LocalEngine, randomId } from '../local-engine.js';
import { registerPeerLinkMetrics } from './net/metrics.js';
import { MAX_REMOVED_MEMBERS, REJOIN_HINT, RemovedMembers } from './removed.js';
import type { PeerMessage, PeerTransport } from './transport.js';

/** Timers, injectable so that the simulation runs the engine on a fake clock. */
export interface Timers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

export const realTimers: Timers = {
  set(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clear(h) {
    clearTimeout(h as NodeJS.Timeout);
  },
};

export interface ApOptions {
  nodeId: string;
  /** This node's peer-link address (HOST:PORT), for status. */
  address?: string;
  /** Peers will appear (--join) even if the transport knows none yet: not ready before catching up. */
  expectPeers?: boolean;
  storage: Storage;
  /** The observers given to the storage (metrics subscribe to them through the engine). */
  storageObservers?: StorageObservers;
  transport: PeerTransport;
  limits: Limits;
  /** Monotonic time for leases, deadlines and replication timing. */
  clock: Clock;
  /** Wall-clock time (ms since the Unix epoch): history, and read once to anchor the hybrid clock. */
  wallClock?: Clock;
  timers?: Timers;
  /** Lease ids (random by default; the simulation makes them deterministic). */
  newId?: () => string;
  expiryTickMs?: number;
  activeChecks?: boolean;
  probes?: MonitorOptions['probes'];
  /** The networks active checks may reach; default CheckNetworks.DEFAULT. */
  checkNetworks?: CheckNetworks;
  /** Every probe the network policy refused, with what its output leaves out (for the log). */
  onCheckDenied?: DenialObserver;
  onProtectionChange?: (change: ProtectionChange) => void;
  onFatal?: (err: unknown) => void;
  onSnapshotError?: (err: unknown) => void;
  onRecovered?: (info: { revision: number; entries: number; fromSnapshot: boolean; records: number; ms: number }) => void;
  /** Notable replication events, for the log. */
  onEvent?: (event: string, fields: Record<string, unknown>) => void;
  /** Members removed from the cluster, kept durably (default: a new list in memory). */
  removed?: RemovedMembers;
}


interface PeerState {
  up: boolean;
  /** Monotonic time the peer became unreachable (the start, for one never reached). */
  downSince: number | null;
  /** Monotonic time the link last came up (or the peer became known up). */
  upSince: number;
  /** Monotonic time of the last anti-entropy round that found both nodes equal. */
  syncedAt: number | null;
  /** The peer's own change counter, as last heard. */
  revision: number | null;
  /** Replication lag to this peer: from a local change to the peer's acknowledgement. */
  lagMs: number | null;
  /** Where the next digest to this peer starts (services sorted by key). */
  cursor: string;
  /**
   * Rounds with a cut (see ap_digest) that found no difference up to the cut over the
   * whole key range: the peer held every record this node held at `at` with a version up
   * to `cut`. Kept: the one with the highest cut and the latest one (neither covers the
   * other). Under steady writes no round matches whole, and tombstones are collected by
   * these instead.
   */
  cutSync: { highest: CutSync | null; latest: CutSync | null };
  /**
   * Tombstones were collected before the peer had them (it was away longer than
   * apTombstoneMaxMs): it may hold what they deleted. Anti-entropy tells it precisely
   * (ap_versions marks, ap_gone), and collected tombstones are remembered while it owes.
   */
  owed: boolean;
  /** When `owed` was last set (monotonic ms), and the highest version of the tombstones collected without the peer. */
  owedAt: number;
  owedVersion: string;
  /** Digests to the peer and answers to its digests waiting for durability (see whenDurable). */
  waiting: number;
  /** A full pass of rounds this node started with the peer completed (readiness waits for every reachable peer). */
  caughtUp: boolean;
  /** The rounds of the catch-up pass still unanswered. */
  catchUp: Set<number> | null;
  /** When the catch-up pass started: one that takes too long (lost messages) is started again. */
  catchUpAt: number;
  /** When the peer last answered a round of this node's (monotonic ms): a starting node waits for a peer that answers. */
  repliedAt: number;
  /** Monotonic time of the last anti-entropy round this node started with the peer. */
  roundAt: number;
  /**
   * A pass over the whole key range in pages (a registry of more than apDigestMaxServices
   * services), each page without difference so far: `next` is where the next page must
   * start, `at` when the first took its digests, `upTo` the smallest cut of the pages
   * that matched only up to their cut (null: all matched whole).
   */
  pass: Pass | null;
  /** The same for the pages of the peer's rounds this node answered. */
  answered: Pass | null;
}

/**
 * An anti-entropy round this node started. It compares once the reply and every part of
 * the peer's versions arrived, and completes once every record it asked for arrived.
 */
interface Round {
  peer: string;
  /** The range of service keys the round covers ('' / null: open). */
  from: string;
  to: string | null;
  /** The round's cut (null: whole services compared), and when its digests were taken (monotonic). */
  cut: string | null;
  startedAt: number;
  /** What the peer has in the services that differ: key -> version. */
  versions: Map<string, string>;
  /** Tombstones the peer collected in those services: key -> version. */
  gone: Map<string, string>;
  parts: Set<number>;
  reply: Extract<ApMessage, { type: 'ap_reply' }> | null;
  /** Chunks of wanted keys not answered yet (null: not compared yet). */
  wants: Set<number> | null;
  lastChunk: number;
}

/** See PeerState.pass. */
interface Pass {
  next: string;
  at: number;
  upTo: string | null;
}

/** One page of a pass: its range, whether it found a difference, a whole match, its cut, when its digests were taken. */
interface Page {
  from: string;
  to: string | null;
  differs: boolean;
  match: boolean;
  cut: string | null;
  at: number;
}

/** A record dropped from the replica table, as logged (see Change replica_forget). */
type ForgetRecord = Extract<Change, { op: 'replica_forget' }>['records'][number];

/** Tombstones a node collected: key -> version, and when (monotonic ms), oldest first. */
type Collected = Map<string, { v: string; at: number }>;

/** Notes a collected tombstone (moved to the end: the map stays oldest first). */
function rememberCollected(collected: Collected, key: string, v: string, at: number): void {
  collected.delete(key);
  collected.set(key, { v, at });
}

interface CutSync {
  cut: string;
  at: number;
}

interface InFlight {
  /** When the oldest change of the batch was made. */
  firstAt: number;
  /** When the batch was sent. */
  sentAt: number;
  waiting: Set<string>;
}

/** Deletes that end an incarnation (its lease, its checks): they never delete a newer one. */
/** A starting node whose peers answer waits at most this many apCatchUpTimeoutMs for its catch-up to complete. */
export const CATCH_UP_MAX_WAITS = 6;

const INCARNATION_DELETES = new Set<DeleteReason>(['lease_expired', 'lease_revoked', 'connection_lost', 'critical_timeout']);
/** Batches waiting for acknowledgements, for the lag measure; the oldest are forgotten. */
const MAX_IN_FLIGHT = 4_096;
/** Anti-entropy rounds waiting for answers; the oldest are forgotten (the next rounds repair). */
const MAX_ROUNDS = 256;
/**
 * Anti-entropy messages to one peer waiting for a write barrier, above which periodic
 * rounds with it are put off (a disk that stalls must not pile digests up); none waits
 * beyond MAX_ROUNDS.
 */
const MAX_WAITING = 64;
/** Records in one logged replica_forget change (about 100 bytes each; a log record holds at most 64 MiB). */
const FORGET_PER_ENTRY = 10_000;
/** Collected tombstones remembered (see `collected`): about 100 bytes each. */
const MAX_COLLECTED = 200_000;

/** Messages between ap nodes (msgpack-encoded by the transport). */
export type ApMessage =
  | { type: 'ap_batch'; seq: number; rev: number; records: ReplicaRecord[] }
  | { type: 'ap_ack'; seq: number; rev: number }
  /** `settings`: the digest of the settings table (absent from nodes of older versions). */
  /**
   * `services`: [key, a, b, count] per service, the digest of all its records; with `cut`
   * also [.., a, b, count] of its records with versions up to the cut (the answerer then
   * leaves a service that differs only above the cut for a later round). Nodes of older
   * versions read the first four.
   */
  | { type: 'ap_digest'; round: number; from: string; to: string | null; services: DigestEntry[]; rebuild: boolean; rev: number; settings?: number; cut?: string }
  /**
   * The versions (key, version) the peer holds in the services that differ, in parts; an
   * entry [key, version, 1] is a tombstone the peer collected (it holds no record of the key):
   * the initiator drops what it holds of the key at or below that version.
   */
  | { type: 'ap_versions'; round: number; part: number; entries: ([string, string] | [string, string, 1])[] }
  /** `parts`: how many ap_versions messages of the round were sent before it. */
  /** `settingsDiffer`: the settings digests differed; the peer sent its settings, the initiator answers with its own. */
  | { type: 'ap_reply'; round: number; parts: number; diff: string[]; match: boolean; rebuild: boolean; rev: number; settingsDiffer?: boolean }
  /** Service settings: the ones a node just took, or its whole table when digests differed. */
  | { type: 'ap_settings'; records: SettingsRecord[] }
  /** A consumer report taken by another node, for the instance's owner to count. */
  | { type: 'ap_report'; rid: number; namespace: string; service: string; id: string; report: ConsumerReport }
  /** The owner's count (`error`: it could not count it; the asking node counts it itself). */
  | { type: 'ap_report_result'; rid: number; revision?: number; reporters?: number; warning?: boolean; error?: string }
  /** Records the sender found the receiver lacks (or holds older). */
  | { type: 'ap_push'; records: ReplicaRecord[] }
  /** Keys of records the sender lacks (or holds older), and the answer with the records. */
  | { type: 'ap_want'; round: number; chunk: number; keys: string[] }
  | { type: 'ap_give'; round: number; chunk: number; records: ReplicaRecord[]; rest?: string[] }
  /**
   * Members removed from the cluster for good, as the sender knows them: sent when an
   * operator removes one, passed on by every node that learns a new one, and sent on every
   * link that comes up, so that a node that was away learns it too. Idempotent.
   */
  | { type: 'ap_forget'; ids: string[] }
  /**
   * Tombstones the sender collected (key, version) of records the receiver still holds at
   * or below that version (it was away when they were deleted): the receiver drops them.
   */
  | { type: 'ap_gone'; entries: [string, string][] };

type DigestEntry = [string, number, number, number] | [string, number, number, number, number, number, number];

/** The optional fields wire() and toInstance() copy; the required ones the compiler checks. */
const COPIED_OPTIONAL: Record<OptionalKeys<WireInstance>, true> = { owner: true };
void COPIED_OPTIONAL;

/**
 * The instance as it travels and is kept in the replica table: its fields listed, in the
 * order of an instance made by a registration, so that every record has one object shape
 * (objects decoded from a peer's message, and rest-spread copies, would each have their own).
 */
function wire(i: Instance | WireInstance): WireInstance {
  const w: WireInstance = { id: i.id, service: i.service, namespace: i.namespace, address: i.address, port: i.port, protocol: i.protocol, zone: i.zone, version: i.version, tags: i.tags, metadata: i.metadata, weight: i.weight, status: i.status, health: i.health, checks: i.checks, leaseId: i.leaseId };
  if (i.owner !== undefined) w.owner = i.owner;
  return w;
}

export class ApEngine extends LocalEngine implements Engine {
  readonly mode = 'ap' as const;
  readonly nodeId: string;
  readonly hub: Hub;
  readonly checkNetworks: CheckNetworks;
  protected readonly writes: WritePath;
  readonly table: ReplicaTable;
  readonly hlc: HybridClock;
  private readonly timers: Timers;
  private readonly limits: Limits;
  private readonly monitor: HealthMonitor | null;
  private readonly peerState = new Map<string, PeerState>();
  /** Members removed from the cluster: not peers, never again (see removeMember). */
  private readonly removed: RemovedMembers;
  private readonly stamped = new WeakMap<Entry, ReplicaRecord[]>();
  /** Consumer reports forwarded to their instance's owner, waiting for its count. */
  private readonly pendingReports = new Map<number, (r: { revision: number; reporters: number; warning: boolean } | null) => void>();
  private reportSeq = 0;
  /** Settings changes this node took (sent to the peers once durable). */
  private readonly stampedSettings = new WeakMap<Entry, SettingsRecord[]>();
  private readonly outbox = new Map<string, ReplicaRecord>();
  private outboxSince: number | null = null;
  private flushTimer: unknown = null;
  private tickTimer: unknown = null;
  private aeTimer: unknown = null;
  private readyTimer: unknown = null;
  private batchSeq = 0;
  private readonly inFlight = new Map<number, InFlight>();
  private aeRound = 0;
  /** Rounds this node started: the peer asked, and whether it was a full pass over the services. */
  private readonly rounds = new Map<number, Round>();
  private aePeerIndex = 0;
  private readyFlag: boolean;
  private readyReason: string;
  /** Instances displaced from one of this node's live leases by a write elsewhere, by lease. */
  private readonly displaced = new Map<string, Map<string, { instance: WireInstance; specs: CheckSpec[] }>>();
  private protection: { engaged: boolean; since: number | null; reason: string | null; heldLeases: number } = { engaged: false, since: null, reason: null, heldLeases: 0 };
  /** Protection ran its longest hold while its condition still holds (see updateProtection). */
  private protectionSpent = false;
  private readonly started: number;
  /** The view may differ from what reachability asks (set by peer changes and records of absent owners). */
  private viewDirty = true;
  /** Records of other owners shown flagged, and kept but not shown, as of the last reconcile. */
  private viewCounts = { unconfirmed: 0, hidden: 0 };
  readonly stats = {
    batchesSent: 0,
    batchesReceived: 0,
    recordsSent: 0,
    recordsReceived: 0,
    recordsApplied: 0,
    repairsReceived: 0,
    repairsApplied: 0,
    antiEntropyRounds: 0,
    antiEntropyDeferred: 0,
    antiEntropySettling: 0,
    tombstonesCollected: 0,
    rebuilds: 0,
    reasserted: 0,
    adopted: 0,
    orphansEnded: 0,
  };
  private lagObserver: ((seconds: number) => void) | null = null;
  /** When this node last sent or received a replication batch (monotonic ms). */
  private batchAt = -Infinity;

  private constructor(
    registry: Registry,
    storage: Storage,
    readonly transport: PeerTransport,
    private readonly opts: ApOptions,
    table: ReplicaTable,
    hlc: HybridClock,
    readonly settingsTable: SettingsReplica,
    private readonly collected: Collected,
  ) {
    super(registry, storage, opts.storageObservers);
    this.nodeId = opts.nodeId;
    this.limits = opts.limits;
    this.checkNetworks = opts.checkNetworks ?? CheckNetworks.DEFAULT;
    this.timers = opts.timers ?? realTimers;
    this.table = table;
    this.hlc = hlc;
    this.hub = new Hub(opts.limits.retainedEvents, registry.revision);
    this.writes = new WritePath({
      registry,
      storage,
      hub: this.hub,
      snapshot: () => ({ ...registry.snapshot(), replica: table.snapshot(), replicaSettings: settingsTable.all() }),
      onAnnounced: (entry) => this.announced(entry),
      ...(opts.onFatal ? { onFatal: opts.onFatal } : {}),
      ...(opts.onSnapshotError ? { onSnapshotError: opts.onSnapshotError } : {}),
    });
    // A lease that ended takes the instances it had displaced with it.
    this.writes.onLeaseEnded((leaseId) => this.displaced.delete(leaseId));
    this.started = opts.clock.now();
    this.removed = opts.removed ?? new RemovedMembers(null);
    for (const id of this.removed.list()) transport.forget(id);
    for (const id of transport.peerIds()) this.peerState.set(id, this.newPeer(false));
    for (const p of transport.peers()) if (p.reachable) this.peerState.set(p.id, this.newPeer(true));
    this.readyFlag = this.peerState.size === 0 && opts.expectPeers !== true;
    this.readyReason = this.readyFlag ? 'no peers configured' : 'catching up from a peer';
    transport.onMessage((from, msg) => this.onMessage(from, msg));
    transport.onPeerChange((peer, up) => this.onPeerChange(peer, up));
    this.monitor = opts.activeChecks === false ? null : new HealthMonitor(this, { maxConcurrentChecks: opts.limits.maxConcurrentChecks, checkNetworks: this.checkNetworks, ...(opts.onCheckDenied ? { onDenied: opts.onCheckDenied } : {}), ...(opts.probes ? { probes: opts.probes } : {}) });
    this.monitor?.start();
    this.scheduleTick();
    this.scheduleAntiEntropy(0);
    if (!this.readyFlag) this.readyTimer = this.timers.set(() => this.catchUpTimedOut(), this.limits.apCatchUpTimeoutMs);
    // Records of members removed before a restart that the log still holds: settled again (idempotent).
    this.settleRemoved();
    // Records of peers that are not reachable yet are flagged from the start.
    this.reconcile();
  }

  static async open(opts: ApOptions): Promise<ApEngine> {
    const started = Date.now();
    const rec = await opts.storage.open(() => (opts.newId ?? randomId)());
    const wallClock = opts.wallClock ?? { now: () => Date.now() };
    const hooks: { engine: ApEngine | null } = { engine: null };
    const replication: ReplicationHooks = {
      nodeId: opts.nodeId,
      stamp: (entry) => hooks.engine?.stamp(entry),
    };
    const base = { limits: opts.limits, clock: opts.clock, wallClock, replication };
    const registry = rec.snapshot ? Registry.fromSnapshot(rec.snapshot, base) : new Registry({ ...base, epoch: rec.epoch });
    const now = opts.clock.now();
    const table = ReplicaTable.restore(rec.snapshot?.replica ?? [], now);
    const settingsTable = SettingsReplica.restore(rec.snapshot?.replicaSettings ?? []);
    // Tombstones collected in the log's span: remembered again (those before the snapshot are forgotten).
    const collected: Collected = new Map();
    for (const entry of rec.entries) {
      registry.apply(entry);
      for (const c of entry.changes) learnFromChange(table, settingsTable, collected, c, now);
    }
    registry.raiseRevision(rec.revisionFloor ?? 0);
    registry.renewAllLeases();
    const hlc = new HybridClock({ node: opts.nodeId, wallAtStart: wallClock.now(), monotonic: opts.clock, maxOffsetMs: opts.limits.apMaxClockOffsetMs });
    for (const r of table.values()) if (r.v.endsWith(`@${opts.nodeId}`)) hlc.observe(r.v);
    settingsTable.adoptUnversioned(registry.allServiceSettings(), opts.nodeId);
    for (const r of settingsTable.all()) if (r.v.endsWith(`@${opts.nodeId}`)) hlc.observe(r.v);
    opts.onRecovered?.({ revision: registry.revision, entries: rec.entries.length, fromSnapshot: rec.snapshot !== null, records: table.size, ms: Date.now() - started });
    const engine = new ApEngine(registry, opts.storage, opts.transport, opts, table, hlc, settingsTable, collected);
    hooks.engine = engine;
    return engine;
  }

  get ready(): boolean {
    return this.readyFlag;
  }

  // ---- the Engine API ----

  protected override newLeaseId(): string {
    return (this.opts.newId ?? randomId)();
  }

  async keepAlive(leaseId: string): Promise<LeaseGrant> {
    const grant = this.registry.keepAlive(leaseId);
    const lost = this.displaced.get(leaseId);
    if (lost) {
      this.displaced.delete(leaseId);
      await this.reassert(leaseId, lost);
    }
    return grant;
  }

  override revokeLease(leaseId: string): Promise<number> {
    this.displaced.delete(leaseId);
    return super.revokeLease(leaseId);
  }

  override recordCheckResult(namespace: string, service: string, id: string, checkId: string, specKey: string, result: CheckResult): Promise<number> {
    const owner = this.registry.instance(namespace, service, id)?.instance.owner;
    // Only the owner runs an instance's checks; a result that raced a change of owner is dropped.
    if (owner !== undefined && owner !== this.nodeId) return Promise.resolve(this.registry.revision);
    return super.recordCheckResult(namespace, service, id, checkId, specKey, result);
  }

  /**
   * Consumer reports are counted by the instance's owner, so that reporters talking to
   * different nodes add up: a report taken here for an instance another reachable node
   * owns is forwarded to it and answered with its count. When the owner is unreachable,
   * does not answer within apReportTimeoutMs, or cannot count it, this node counts it.
   */
  override async reportInstance(namespace: string, service: string, id: string, report: ConsumerReport): Promise<{ revision: number; reporters: number; warning: boolean }> {
    const owner = this.table.get(recordKey({ namespace, service, id }))?.o;
    if (owner !== undefined && owner !== this.nodeId && this.peerUp(owner) && this.registry.instance(namespace, service, id) && this.pendingReports.size < MAX_FORWARDED_REPORTS) {
      const counted = await this.askOwner(owner, namespace, service, id, report);
      if (counted) return counted;
    }
    return super.reportInstance(namespace, service, id, report);
  }

  private askOwner(owner: string, namespace: string, service: string, id: string, report: ConsumerReport): Promise<{ revision: number; reporters: number; warning: boolean } | null> {
    const rid = ++this.reportSeq;
    return new Promise((resolve) => {
      const timer = this.timers.set(() => {
        this.pendingReports.delete(rid);
        resolve(null);
      }, this.limits.apReportTimeoutMs);
      this.pendingReports.set(rid, (r) => {
        this.timers.clear(timer);
        this.pendingReports.delete(rid);
        resolve(r);
      });
      if (!this.transport.send(owner, { type: 'ap_report', rid, namespace, service, id, report })) {
        this.timers.clear(timer);
        this.pendingReports.delete(rid);
        resolve(null);
      }
    });
  }

  /** A report another node forwarded: counted here, the count sent back. */
  private async countForwardedReport(from: string, msg: Extract<ApMessage, { type: 'ap_report' }>): Promise<void> {
    try {
      const report = validateConsumerReport(msg.report, this.limits);
      const r = this.registry.reportInstance(String(msg.namespace), String(msg.service), String(msg.id), report);
      const revision = await this.persist(r.outcome);
      this.transport.send(from, { type: 'ap_report_result', rid: msg.rid, revision, reporters: r.reporters, warning: r.warning });
    } catch (err) {
      this.transport.send(from, { type: 'ap_report_result', rid: msg.rid, error: String((err as Error).message ?? err) });
    }
  }

  checkStats(): CheckStats {
    return this.monitor?.stats() ?? noCheckStats();
  }

  cluster(): ClusterStatus {
    const now = this.opts.clock.now();
    const links = new Map(this.transport.peers().map((p) => [p.id, p]));
    const members: ClusterMember[] = [{ id: this.nodeId, address: this.opts.address ?? '', self: true, reachable: true, lastSeenMs: 0, revision: this.registry.revision }];
    const { unconfirmed, hidden } = this.viewCounts;
    for (const [id, st] of [...this.peerState].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const link = links.get(id);
      const m: ClusterMember = { id, address: link?.address ?? '', self: false, reachable: st.up, lastSeenMs: link?.lastSeenMs ?? null };
      if (st.lagMs !== null) m.lagMs = st.lagMs;
      if (st.revision !== null) m.revision = st.revision;
      members.push(m);
    }
    return {
      members,
      removedMembers: this.removed.list(),
      ...(this.transport.security ? { peerLinks: this.transport.security() } : {}),
      ready: this.readyFlag,
      readyReason: this.readyReason,
      hlc: this.hlc.last(),
      replication: {
        records: this.table.size,
        settings: this.settingsTable.size,
        tombstones: this.table.tombstones,
        outbox: this.outbox.size,
        unconfirmed,
        hidden,
        clockOffsetRejected: this.hlc.rejected,
        ...this.stats,
      },
      peerSync: Object.fromEntries([...this.peerState].map(([id, st]) => [id, { syncedMsAgo: st.syncedAt === null ? null : now - st.syncedAt, cutSyncedMsAgo: st.cutSync.latest === null ? null : now - st.cutSync.latest.at, downMs: st.downSince === null ? null : now - st.downSince, mustRebuild: st.owed }])),
      protection: {
        engaged: this.protection.engaged,
        reason: this.protection.reason,
        sinceMsAgo: this.protection.since === null ? null : now - this.protection.since,
        heldLeases: this.protection.heldLeases,
      },
    };
  }

  // ---- removing a member ----

  /**
   * An operator removes a member that is gone for good (docs/ap.md, "Removing a member").
   * Refused for this node itself, a member this node does not know (or removed already),
   * and a reachable one: a running node would keep writing records that nobody adopts.
   * The removal is made durable first, then acted on here and sent to every reachable peer.
   */
  async removeMember(id: string): Promise<MemberRemoval> {
    if (id === this.nodeId) {
      throw new SwitchboardError('MEMBER_IS_SELF', `member ${id} is the node that answers`, { field: 'id', hint: 'send the removal to another node of the cluster, after stopping this one for good' });
    }
    if (this.removed.has(id)) {
      throw new SwitchboardError('MEMBER_NOT_FOUND', `member ${id} was removed from the cluster already`, { field: 'id', hint: 'nothing to do; GET /v1/status lists the removed members under cluster.removedMembers' });
    }
    const st = this.peerState.get(id);
    if (!st) {
      throw new SwitchboardError('MEMBER_NOT_FOUND', `this node knows no member ${id}`, { field: 'id', hint: 'use an id from GET /v1/status cluster.members' });
    }
    if (st.up) {
      throw new SwitchboardError('MEMBER_REACHABLE', `member ${id} is reachable from this node`, { field: 'id', hint: 'stop the node first; a running node cannot be removed' });
    }
    if (this.removed.size >= MAX_REMOVED_MEMBERS) {
      throw new SwitchboardError('LIMIT_EXCEEDED', `this node already keeps ${MAX_REMOVED_MEMBERS} removed members`, { field: 'id', limit: 'MAX_REMOVED_MEMBERS', hint: 'start a new cluster; this one has lost more members than it can track' });
    }
    await this.removed.add(id);
    const counts = this.forgetMember(id);
    const notified: string[] = [];
    for (const [peer, p] of this.peerState) if (p.up && this.transport.send(peer, { type: 'ap_forget', ids: [id] })) notified.push(peer);
    return { member: id, ...counts, notified: notified.sort() };
  }

  /** Removals a peer knows (ap_forget): the new ones are made durable, acted on and passed on. */
  private async learnRemoved(from: string, ids: unknown): Promise<void> {
    if (!Array.isArray(ids)) return;
    for (const id of ids.slice(0, MAX_REMOVED_MEMBERS)) {
      if (!isNodeId(id) || this.removed.has(id)) continue;
      if (id === this.nodeId) {
        this.opts.onEvent?.('removed_from_cluster', { by: from, hint: `this node was removed from the cluster: ${REJOIN_HINT}` });
        continue;
      }
      if (this.removed.size >= MAX_REMOVED_MEMBERS) return;
      try {
        await this.removed.add(id);
      } catch (err) {
        // Not durable: not acted on; the peer says it again on the next link.
        this.opts.onEvent?.('member_removal_failed', { member: id, from, err: String(err) });
        continue;
      }
      if (this.closed) return;
      this.forgetMember(id);
      for (const [peer, p] of this.peerState) if (p.up && peer !== from) this.transport.send(peer, { type: 'ap_forget', ids: [id] });
    }
  }

  /**
   * The local effects of a removal: the member leaves the transport and the peer state (so
   * status, metrics, alerts, protection and tombstone collection stop counting it), and its
   * records are settled.
   */
  private forgetMember(id: string): Omit<MemberRemoval, 'member' | 'notified'> {
    this.transport.forget(id);
    this.peerState.delete(id);
    this.stopWaitingFor(id);
    for (const [n, r] of this.rounds) if (r.peer === id) this.rounds.delete(n);
    this.viewDirty = true;
    const counts = this.settleRemoved(id);
    this.opts.onEvent?.('member_removed', { member: id, ...counts });
    this.reconcile();
    return counts;
  }

  /** Batches in flight stop waiting for a peer's acknowledgement (it went away or was removed). */
  private stopWaitingFor(peer: string): void {
    for (const [seq, f] of this.inFlight) if (f.waiting.delete(peer) && f.waiting.size === 0) this.inFlight.delete(seq);
    // What gathered behind those batches need not wait any longer (on a later turn: this
    // runs inside a link change or a removal).
    if (this.outbox.size > 0 && !this.batchPending()) this.scheduleFlush(0);
  }

  /**
   * Drops the batches sent longer than an anti-entropy interval ago: their acknowledgements
   * are taken as lost (anti-entropy repairs what they carried), so that they hold back
   * neither later changes (batchPending) nor anti-entropy rounds (awaitingAck).
   */
  private dropLostBatches(): void {
    const since = this.opts.clock.now() - this.limits.apAntiEntropyIntervalMs;
    for (const [seq, f] of this.inFlight) {
      if (f.sentAt >= since) return; // in the order sent
      this.inFlight.delete(seq);
    }
  }

  /** A batch still waits for an acknowledgement. */
  private batchPending(): boolean {
    this.dropLostBatches();
    return this.inFlight.size > 0;
  }

  /** The remaining members this node knows, itself included: who may adopt. */
  private members(): string[] {
    return [this.nodeId, ...this.peerState.keys()];
  }

  /**
   * Applies the merge rule of removed owners (core/membership.ts) to every record held:
   * lease-bound ones become tombstones, persistent ones this node is chosen for are
   * adopted. Returns what it found of `member`'s records (every removed owner's when absent).
   */
  private settleRemoved(member?: string): Omit<MemberRemoval, 'member' | 'notified'> {
    const counts = { adopted: 0, adoptedElsewhere: 0, dropped: 0 };
    if (this.removed.size === 0) return counts;
    const members = this.members();
    const drop: StoredRecord[] = [];
    const adopt: StoredRecord[] = [];
    for (const r of this.table.values()) {
      const action = removedOwnerAction(r, this.removed, this.nodeId, members);
      if (action === 'keep') continue;
      const mine = member === undefined || r.o === member;
      if (action === 'drop') drop.push(r);
      else if (action === 'adopt') adopt.push(r);
      if (!mine) continue;
      if (action === 'drop') counts.dropped++;
      else if (action === 'adopt') counts.adopted++;
      else counts.adoptedElsewhere++;
    }
    const changes: Change[] = [];
    const hidden: StoredRecord[] = [];
    for (const r of drop) this.dropRemoved(r, changes, hidden);
    if (hidden.length > 0) changes.push({ op: 'replica', records: hidden });
    if (changes.length > 0) this.persistAll(changes);
    this.adopt(adopt);
    return counts;
  }

  /** A lease-bound record of a removed owner becomes the tombstone every node writes for it. */
  private dropRemoved(r: StoredRecord, changes: Change[], hidden: StoredRecord[]): void {
    const t = removedTombstone(r);
    if (this.table.merge(t, this.opts.clock.now()) !== 'applied') return;
    if (this.registry.instance(t.namespace, t.service, t.id)) {
      changes.push({ op: 'delete', namespace: t.namespace, service: t.service, id: t.id, reason: 'owner_removed', detail: t.detail as string, repl: { v: t.v, o: t.o } });
    } else hidden.push(this.table.get(recordKey(t)) as StoredRecord);
  }

  /**
   * Persistent records of removed owners this node was chosen for: re-stamped as its own
   * (adoptionVersion) and, once durable, replicated like any write of this node.
   */
  private adopt(records: StoredRecord[]): void {
    if (records.length === 0) return;
    const now = this.opts.clock.now();
    const changes: Change[] = [];
    const out: ReplicaRecord[] = [];
    for (const r of records) {
      const detail = `adopted by ${this.nodeId}: owner ${r.o} was removed from the cluster`;
      const rec: ReplicaRecord = { ...strip(r), v: adoptionVersion(r.v, this.nodeId), o: this.nodeId, i: { ...(r.i as WireInstance), owner: this.nodeId }, why: 'owner_removed', detail };
      if (this.table.merge(rec, now) !== 'applied') continue;
      out.push(rec);
      changes.push({ op: 'put', instance: this.toInstance(this.table.get(recordKey(rec)) as StoredRecord), specs: rec.specs ?? [], reason: 'owner_removed', detail, repl: { v: rec.v, o: rec.o } });
    }
    if (changes.length === 0) return;
    this.stats.adopted += out.length;
    this.opts.onEvent?.('adopted', { records: out.length });
    this.persistAll(changes, () => this.enqueue(out));
  }

  reloadPeerRevocationLists(crl: Buffer[]): number {
    if (!this.transport.reloadRevocationLists) throw new Error('the peer links of this node take no revocation lists');
    return this.transport.reloadRevocationLists(crl);
  }

  registerMetrics(registry: MetricsRegistry): void {
    const lag = new client.Histogram({
      name: 'switchboard_ap_replication_lag_seconds',
      help: 'From a change on this node to a peer acknowledging it (ap)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
      registers: [registry],
    });
    this.lagObserver = (s) => lag.observe(s);
    const counter = (name: string, help: string, read: () => number) => {
      let seen = 0;
      return new client.Counter({
        name,
        help,
        registers: [registry],
        collect() {
          const now = read();
          if (now > seen) this.inc(now - seen);
          seen = now;
        },
      });
    };
    const gauge = (name: string, help: string, read: () => number) =>
      new client.Gauge({ name, help, registers: [registry], collect() { this.set(read()); } });
    counter('switchboard_ap_batches_sent_total', 'Replication batches sent to peers (ap)', () => this.stats.batchesSent);
    counter('switchboard_ap_batches_received_total', 'Replication batches received from peers (ap)', () => this.stats.batchesReceived);
    counter('switchboard_ap_records_sent_total', 'Records sent to peers in batches (ap)', () => this.stats.recordsSent);
    counter('switchboard_ap_records_received_total', 'Records received from peers in batches (ap)', () => this.stats.recordsReceived);
    counter('switchboard_ap_antientropy_rounds_total', 'Anti-entropy rounds this node started (ap)', () => this.stats.antiEntropyRounds);
    counter('switchboard_ap_antientropy_settling_total', 'Services an anti-entropy round left for a later one: they differed only in records younger than the round\'s cut, still in flight (ap)', () => this.stats.antiEntropySettling);
    counter('switchboard_ap_antientropy_deferred_total', 'Anti-entropy rounds put off because batches to the peer were still unacknowledged (ap)', () => this.stats.antiEntropyDeferred);
    counter('switchboard_ap_antientropy_repairs_total', 'Records anti-entropy repaired on this node (ap)', () => this.stats.repairsApplied);
    counter('switchboard_ap_tombstones_collected_total', 'Tombstones collected (ap)', () => this.stats.tombstonesCollected);
    gauge('switchboard_ap_tombstones', 'Tombstones kept (ap)', () => this.table.tombstones);
    gauge('switchboard_ap_peers_reachable', 'Peers reachable now (ap)', () => [...this.peerState.values()].filter((p) => p.up).length);
    gauge('switchboard_ap_peers', 'Peers known (ap)', () => this.peerState.size);
    gauge('switchboard_ap_unconfirmed_instances', 'Instances shown while their owner is unreachable (ap)', () => this.viewCounts.unconfirmed);
    gauge('switchboard_ap_protection_engaged', '1 while cluster-wide self-preservation holds the records of unreachable owners (ap)', () => (this.protection.engaged ? 1 : 0));
    gauge('switchboard_ap_ready', '1 once the node caught up from its peers (ap)', () => (this.readyFlag ? 1 : 0));
    gauge('switchboard_ap_outbox', 'Changes waiting to be batched to peers (ap)', () => this.outbox.size);
    gauge('switchboard_ap_removed_members', 'Members removed from the cluster that this node knows of (ap)', () => this.removed.size);
    counter('switchboard_ap_adopted_records_total', 'Persistent records of removed members this node took over (ap)', () => this.stats.adopted);
    registerPeerLinkMetrics(this.transport, registry);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of [this.tickTimer, this.aeTimer, this.flushTimer, this.readyTimer]) if (t !== null) this.timers.clear(t);
    this.monitor?.close();
    await this.writes.close();
    await this.transport.close();
    await this.storage.close();
  }

  // ---- stamping local writes ----

  /** Called by the registry with each entry a command makes, before it is applied. */
  private stamp(entry: Entry): void {
    const now = this.opts.clock.now();
    const records: ReplicaRecord[] = [];
    for (const c of entry.changes) {
      if (c.op === 'put') {
        const i = c.instance;
        const key = recordKey(i);
        const cur = this.table.get(key);
        const owner = i.owner ?? this.nodeId;
        // Above the record, or above the tombstone this node collected of the key (peers
        // refuse anything at or below a tombstone they collected: a clock behind the one that
        // deleted it must not make the new incarnation look older).
        const gone = cur ? undefined : this.collected.get(key);
        const v = cur ? this.hlc.after(cur.v) : gone ? this.hlc.after(gone.v) : this.hlc.now();
        i.owner = owner;
        delete i.unconfirmed;
        const rec: ReplicaRecord = { namespace: i.namespace, service: i.service, id: i.id, v, o: owner, i: wire(i), specs: c.specs };
        if (c.reason) rec.why = c.reason;
        if (c.detail) rec.detail = c.detail;
        if (owner !== this.nodeId && !this.peerUp(owner)) i.unconfirmed = true;
        this.table.mergeKnown(key, cur, rec, now);
        c.repl = { v, o: owner };
        records.push(rec);
      } else if (c.op === 'delete') {
        const key = recordKey(c);
        const cur = this.table.get(key);
        const v = cur && INCARNATION_DELETES.has(c.reason) ? expiryVersion(cur.v) : cur ? this.hlc.after(cur.v) : this.hlc.now();
        const owner = cur?.o ?? this.nodeId;
        const rec: ReplicaRecord = { namespace: c.namespace, service: c.service, id: c.id, v, o: owner, del: c.reason };
        if (c.detail) rec.detail = c.detail;
        this.table.mergeKnown(key, cur, rec, now);
        c.repl = { v, o: owner };
        records.push(rec);
      } else if (c.op === 'settings') {
        const cur = this.settingsTable.get(c.namespace, c.service);
        const rec: SettingsRecord = { namespace: c.namespace, service: c.service, v: cur ? this.hlc.after(cur.v) : this.hlc.now(), o: this.nodeId, settings: c.settings };
        this.settingsTable.merge(rec);
        c.repl = { v: rec.v, o: rec.o };
        const list = this.stampedSettings.get(entry) ?? [];
        list.push(rec);
        this.stampedSettings.set(entry, list);
      }
    }
    if (records.length > 0) this.stamped.set(entry, records);
  }

  // ---- durability and announcement (WritePath, as in standalone) ----

  /**
   * Applies replicated changes and logs them: one entry, or several of about
   * ENTRY_TARGET_BYTES when there are many (a reconcile can touch every record of a peer).
   * `after` runs once the last is announced.
   */
  private persistAll(changes: Change[], after?: () => void): void {
    const slices = sliceChanges(changes);
    if (slices.length === 0) slices.push([]);
    slices.forEach((slice, n) => {
      this.persist(this.registry.applyReplicated(slice), n === slices.length - 1 ? after : undefined).catch(() => undefined);
    });
  }

  /**
   * Runs `fn` once everything applied so far is durable: a digest or an answer of
   * anti-entropy must not show a record that a crash could still take back.
   */
  private whenDurable(peer: string, fn: () => void): void {
    const st = this.peerState.get(peer);
    // Beyond MAX_ROUNDS the peer (or this node) would have forgotten the round on arrival.
    if (!st || st.waiting >= MAX_ROUNDS) return;
    st.waiting++;
    void this.persist({ entry: null, events: [], revision: this.registry.revision }, () => {
      if (!this.closed) fn();
    })
      .catch(() => undefined)
      .finally(() => st.waiting--);
  }

  /** An entry was announced: what this node stamped in it goes to the peers, in order. */
  private announced(entry: Entry): void {
    const records = this.stamped.get(entry);
    if (records) this.enqueue(records);
    const settings = this.stampedSettings.get(entry);
    if (settings) this.sendSettings(null, settings);
  }

  // ---- replication: the outbox and batches ----

  private enqueue(records: ReplicaRecord[]): void {
    if (this.peerState.size === 0) return;
    for (const r of records) this.outbox.set(recordKey(r), r);
    this.outboxSince ??= this.opts.clock.now();
    if (this.outbox.size >= this.limits.apBatchMaxRecords) this.flush();
    // Like Nagle's algorithm: with no batch waiting for acknowledgements the changes of
    // this turn go out at once; otherwise they gather until the acknowledgements come
    // (see ap_ack), for at most apBatchDelayMs.
    else if (this.flushTimer === null) this.scheduleFlush(this.batchPending() ? this.limits.apBatchDelayMs : 0);
  }

  /** Flushes the outbox in `ms` (replacing a later flush already planned). */
  private scheduleFlush(ms: number): void {
    if (this.closed) return;
    if (this.flushTimer !== null) {
      if (ms > 0) return;
      this.timers.clear(this.flushTimer);
    }
    this.flushTimer = this.timers.set(() => {
      this.flushTimer = null;
      this.flush();
    }, ms);
  }

  private flush(): void {
    if (this.flushTimer !== null) {
      this.timers.clear(this.flushTimer);
      this.flushTimer = null;
    }
    if (this.closed || this.outbox.size === 0) return;
    const firstAt = this.outboxSince ?? this.opts.clock.now();
    const all = [...this.outbox.values()];
    this.outbox.clear();
    this.outboxSince = null;
    for (const records of this.split(all, this.limits.apBatchMaxRecords)) {
      const seq = ++this.batchSeq;
      const waiting = new Set<string>();
      // One message object for every peer: the transport encodes it once.
      const batch: PeerMessage = { type: 'ap_batch', seq, rev: this.registry.revision, records };
      for (const [id, st] of this.peerState) {
        if (!st.up) continue; // anti-entropy brings it the changes when it is back
        if (this.transport.send(id, batch)) {
          waiting.add(id);
          this.stats.batchesSent++;
          this.stats.recordsSent += records.length;
        }
      }
      if (waiting.size > 0) {
        this.batchAt = this.opts.clock.now();
        this.inFlight.set(seq, { firstAt, sentAt: this.batchAt, waiting });
        if (this.inFlight.size > MAX_IN_FLIGHT) this.inFlight.delete(this.inFlight.keys().next().value as number);
      }
    }
  }

  /** Splits records into messages of at most `maxCount` records and about apMessageMaxBytes. */
  private *split(records: ReplicaRecord[], maxCount: number): Generator<ReplicaRecord[]> {
    let cur: ReplicaRecord[] = [];
    let bytes = 0;
    for (const r of records) {
      const size = approxRecordBytes(r);
      if (cur.length > 0 && (cur.length >= maxCount || bytes + size > this.limits.apMessageMaxBytes)) {
        yield cur;
        cur = [];
        bytes = 0;
      }
      cur.push(r);
      bytes += size;
    }
    if (cur.length > 0) yield cur;
  }

  // ---- messages from peers ----

  private onMessage(from: string, raw: PeerMessage): void {
    if (this.closed || this.removed.has(from)) return;
    // A peer that joined and speaks before its link was announced: it is up.
    if (!this.peerState.has(from)) this.onPeerChange(from, true);
    const msg = raw as unknown as ApMessage;
    try {
      switch (msg.type) {
        case 'ap_batch':
          this.stats.batchesReceived++;
          this.stats.recordsReceived += msg.records.length;
          this.notePeerRevision(from, msg.rev);
          this.batchAt = this.opts.clock.now();
          this.applyRemote(from, msg.records, 'batch', () => this.transport.send(from, { type: 'ap_ack', seq: msg.seq, rev: this.registry.revision }));
          break;
        case 'ap_ack': {
          this.notePeerRevision(from, msg.rev);
          const f = this.inFlight.get(msg.seq);
          if (f?.waiting.delete(from)) {
            const lag = this.opts.clock.now() - f.firstAt;
            (this.peerState.get(from) as PeerState).lagMs = lag;
            this.lagObserver?.(lag / 1000);
            if (f.waiting.size === 0) {
              this.inFlight.delete(msg.seq);
              // Nagle's rule: the last batch is acknowledged, so what gathered meanwhile goes now.
              if (this.outbox.size > 0 && !this.batchPending()) this.flush();
            }
          }
          break;
        }
        case 'ap_digest':
          this.notePeerRevision(from, msg.rev);
          this.answerDigest(from, msg);
          break;
        case 'ap_versions':
          this.onVersions(from, msg);
          break;
        case 'ap_want': {
          // As many of the wanted records as fit one message; the keys left over go back
          // in `rest`, and the asker asks for them again.
          const records: ReplicaRecord[] = [];
          const keys = msg.keys.slice(0, this.limits.apRepairMaxRecords);
          let bytes = 0;
          let i = 0;
          for (; i < keys.length; i++) {
            const k = keys[i];
            const r = typeof k === 'string' ? this.table.get(k) : undefined;
            if (!r) continue;
            const size = approxRecordBytes(r);
            if (records.length > 0 && bytes + size > this.limits.apMessageMaxBytes) break;
            bytes += size;
            records.push(strip(r));
          }
          this.transport.send(from, { type: 'ap_give', round: msg.round, chunk: msg.chunk, records, rest: keys.slice(i) });
          break;
        }
        case 'ap_give':
          this.onGive(from, msg);
          break;
        case 'ap_reply':
          this.notePeerRevision(from, msg.rev);
          this.onReply(from, msg);
          break;
        case 'ap_push':
          this.stats.repairsReceived += msg.records.length;
          this.applyRemote(from, msg.records, 'repair');
          break;
        case 'ap_settings':
          this.applySettings(from, msg.records);
          break;
        case 'ap_report':
          void this.countForwardedReport(from, msg);
          break;
        case 'ap_forget':
          void this.learnRemoved(from, msg.ids);
          break;
        case 'ap_gone':
          if (Array.isArray(msg.entries)) this.dropGone(from, msg.entries);
          break;
        case 'ap_report_result': {
          const done = this.pendingReports.get(msg.rid);
          if (done) done(msg.error === undefined && typeof msg.revision === 'number' && typeof msg.reporters === 'number' ? { revision: msg.revision, reporters: msg.reporters, warning: msg.warning === true } : null);
          break;
        }
        default:
          this.opts.onEvent?.('unknown_message', { from, type: (raw as { type: unknown }).type });
      }
    } catch (err) {
      this.opts.onEvent?.('bad_message', { from, type: (raw as { type: unknown }).type, err: String(err) });
    }
  }

  /** A batch sent to the peer is still unacknowledged (see dropLostBatches). */
  private awaitingAck(peer: string): boolean {
    this.dropLostBatches();
    for (const f of this.inFlight.values()) if (f.waiting.has(peer)) return true;
    return false;
  }

  private notePeerRevision(from: string, rev: number): void {
    const st = this.peerState.get(from);
    if (st && typeof rev === 'number') st.revision = rev;
  }

  /** Settings records to one peer (`to`) or to every reachable peer (null), in messages of at most apRepairMaxRecords. */
  private sendSettings(to: string | null, records: SettingsRecord[]): void {
    if (records.length === 0) return;
    const peers = to !== null ? [to] : [...this.peerState].filter(([, st]) => st.up).map(([id]) => id);
    for (let i = 0; i < records.length; i += this.limits.apRepairMaxRecords) {
      const part = records.slice(i, i + this.limits.apRepairMaxRecords);
      for (const p of peers) this.transport.send(p, { type: 'ap_settings', records: part });
    }
  }

  /** Merges settings from a peer; the newer ones are applied as one local entry. */
  private applySettings(from: string, records: unknown): void {
    if (!Array.isArray(records)) return;
    const changes: Change[] = [];
    for (const r of records) {
      if (!validSettingsRecord(r)) continue;
      this.hlc.observe(r.v);
      if (!this.settingsTable.merge(r)) continue;
      changes.push({ op: 'settings', namespace: r.namespace, service: r.service, settings: { protectThreshold: r.settings.protectThreshold }, repl: { v: r.v, o: r.o } });
    }
    if (changes.length === 0) return;
    this.opts.onEvent?.('settings_merged', { from, services: changes.length });
    this.persistAll(changes);
  }

  /**
   * Merges records from a peer and applies the ones that won as one local entry. Records of
   * removed owners follow the merge rule of core/membership.ts: a lease-bound one becomes
   * its tombstone at once (and the sender, which has not heard of the removal, is told),
   * a persistent one this node is chosen for is adopted once merged.
   */
  private applyRemote(from: string, records: ReplicaRecord[], kind: 'batch' | 'repair', after?: () => void): void {
    const now = this.opts.clock.now();
    const changes: Change[] = [];
    const hidden: StoredRecord[] = [];
    const members = this.removed.size > 0 ? this.members() : [];
    const adopt: StoredRecord[] = [];
    let stale = false;
    /** Records of this node's leases that a peer changed after the lease ended here. */
    const orphans: StoredRecord[] = [];
    // The clock follows the newest version of the batch: one observation, not one per
    // record (each one per record only when the newest is too far ahead to follow).
    let newest = '';
    for (const r of records) {
      if (!validRecord(r)) continue;
      if (r.v > newest) newest = r.v;
      const key = recordKey(r);
      const before = this.table.get(key);
      // Nothing at or below a tombstone this node collected is taken: not the tombstone
      // (peers that collect it later would only hand it back and forth), and not the record
      // it deleted (from a node that was away when it was deleted, directly or through another). A
      // tombstone it never had is taken, however old its version: its digests would
      // otherwise differ from every holder's for good, and nobody could collect it before
      // apTombstoneMaxMs.
      const gone = this.collected.get(key);
      if (gone && r.v <= gone.v) continue;
      if (this.table.mergeKnown(key, before, r, now) !== 'applied') continue;
      if (kind === 'repair') this.stats.repairsApplied++;
      this.stats.recordsApplied++;
      const stored = this.table.get(key) as StoredRecord;
      this.noteDisplaced(before, stored);
      const action = members.length > 0 ? removedOwnerAction(stored, this.removed, this.nodeId, members) : 'keep';
      if (action === 'drop') {
        stale = true;
        this.dropRemoved(stored, changes, hidden);
        continue;
      }
      if (action === 'adopt') {
        // adopt() writes it once, as this node's (shown or not before): no put of the removed owner's first.
        adopt.push(stored);
        continue;
      }
      if (stored.o !== this.nodeId && !this.peerUp(stored.o)) this.viewDirty = true;
      const shown = this.registry.instance(r.namespace, r.service, r.id);
      if (r.del) {
        if (shown) changes.push({ op: 'delete', namespace: r.namespace, service: r.service, id: r.id, reason: r.del, detail: r.detail ?? `from ${from}`, repl: { v: r.v, o: r.o } });
        else hidden.push(stored);
        continue;
      }
      if (this.visible(stored)) {
        changes.push({ op: 'put', instance: this.toInstance(stored), specs: r.specs ?? [], reason: r.why ?? 'updated', detail: r.detail ?? `from ${from}`, repl: { v: r.v, o: r.o } });
        if (this.orphaned(stored)) orphans.push(stored);
      } else {
        hidden.push(stored);
        if (shown) changes.push({ op: 'delete', namespace: r.namespace, service: r.service, id: r.id, reason: 'owner_unreachable', detail: `owner ${r.o} unreachable`, repl: { view: true } });
      }
    }
    if (newest !== '' && !this.hlc.observe(newest)) for (const r of records) if (r.v !== newest && validRecord(r)) this.hlc.observe(r.v);
    if (stale) this.transport.send(from, { type: 'ap_forget', ids: this.removed.list() });
    if (hidden.length > 0) changes.push({ op: 'replica', records: hidden });
    if (changes.length === 0) {
      if (after) this.persist({ entry: null, events: [], revision: this.registry.revision }, after).catch(() => undefined); // a failed log stops the node (onFatal)
    } else this.persistAll(changes, after);
    this.endOrphans(orphans);
    this.adopt(adopt);
  }

  /**
   * A live record this node owns, bound to a lease it does not hold. A lease lives on the
   * node that granted it, so no other node can end it: such a record (a status change a
   * peer made while this node's lease ended, or learned after) would stay for ever.
   */
  private orphaned(rec: StoredRecord): boolean {
    const leaseId = rec.i?.leaseId;
    return !rec.del && rec.o === this.nodeId && typeof leaseId === 'string' && !this.registry.lease(leaseId);
  }

  /**
   * Ends orphaned records as their lease's end did: deleted (lease_expired), with a
   * tombstone just after the version they have now, so it wins wherever they meet.
   */
  private endOrphans(records: StoredRecord[]): void {
    if (records.length === 0 || this.closed) return;
    const items = records.map((r) => ({ namespace: r.namespace, service: r.service, id: r.id, leaseId: r.i?.leaseId as string }));
    this.stats.orphansEnded += items.length;
    this.persist(this.registry.endOrphaned(items)).catch(() => undefined); // a failed log stops the node (onFatal)
  }

  /** A write elsewhere replaced an instance bound to one of this node's live leases. */
  private noteDisplaced(before: StoredRecord | undefined, now: StoredRecord): void {
    if (!before || before.del || before.o !== this.nodeId || !before.i?.leaseId) return;
    const leaseId = before.i.leaseId;
    if (!this.registry.lease(leaseId)) return;
    if (!now.del && now.i?.leaseId === leaseId) return;
    if (now.del) return; // a deregistration removes whatever is current
    let m = this.displaced.get(leaseId);
    if (!m) {
      m = new Map();
      this.displaced.set(leaseId, m);
    }
    m.set(recordKey(before), { instance: before.i, specs: before.specs ?? [] });
  }

  /**
   * The client of a lease whose instances a write elsewhere replaced is still alive here
   * (it keeps the lease alive): its instances are registered again, with a newer version.
   */
  private async reassert(leaseId: string, lost: Map<string, { instance: WireInstance; specs: CheckSpec[] }>): Promise<void> {
    const items: RegistrationItem[] = [];
    for (const [key, { instance: i, specs }] of lost) {
      const cur = this.table.get(key);
      if (!cur || cur.del || cur.i?.leaseId === leaseId) continue;
      items.push({
        namespace: i.namespace,
        service: i.service,
        id: i.id,
        input: { address: i.address, port: i.port, leaseId, zone: i.zone, version: i.version, tags: i.tags, metadata: i.metadata, weight: i.weight, protocol: i.protocol, checks: specs },
      });
    }
    if (items.length === 0) return;
    this.stats.reasserted += items.length;
    this.opts.onEvent?.('reasserted', { leaseId, instances: items.length });
    await this.persist(this.registry.registerBatch(items)).catch(() => undefined);
  }

  // ---- anti-entropy ----

  private scheduleAntiEntropy(delay: number): void {
    if (this.closed) return;
    this.aeTimer = this.timers.set(() => {
      this.aeTimer = null;
      this.antiEntropyTick();
      this.scheduleAntiEntropy(this.limits.apAntiEntropyIntervalMs);
    }, delay);
  }

  private antiEntropyTick(): void {
    // Two intervals behind: the cuts of rounds (one interval behind this node's clock, or a
    // peer's) stay above it, so their digests walk only the records younger than this.
    this.table.settle(cutAt(this.hlc.physicalNow() - 2 * this.limits.apAntiEntropyIntervalMs));
    const up = [...this.peerState].filter(([, st]) => st.up).map(([id]) => id).sort();
    if (!this.readyFlag) {
      // Catching up: a full pass with every reachable peer not caught up from yet.
      for (const id of up) {
        const st = this.peerState.get(id) as PeerState;
        const stale = this.opts.clock.now() - st.catchUpAt > 3 * this.limits.apAntiEntropyIntervalMs;
        // A pass whose digests still wait for the disk is not stale, only slow.
        if (!st.caughtUp && (st.catchUp === null || (stale && st.waiting === 0))) this.startPass(id);
      }
    } else if (up.length > 0) {
      // While this node's recent batches to the peer are unacknowledged, their records would
      // only show up as differences, and a round would compare whole services for nothing:
      // the round waits for a quiet moment, at most apAntiEntropyMaxDeferMs.
      // The next peer in turn that is quiet, or that waited its longest (a busy peer does
      // not hold up the others).
      // While batches flow (this node sent or received one within an interval: between other
      // nodes too, then), a round compares only the records older than one interval (a cut),
      // so that what is still on its way does not make whole services differ. Not over a
      // link that came up within the interval: nothing was on its way over it, and what
      // the peer missed while it was down is due now.
      const now = this.opts.clock.now();
      let started = false;
      for (let k = 0; k < up.length && !started; k++) {
        const peer = up[(this.aePeerIndex + k) % up.length] as string;
        const st = this.peerState.get(peer) as PeerState;
        if (st.waiting >= MAX_WAITING) continue;
        if (now - st.roundAt >= this.limits.apAntiEntropyMaxDeferMs || !this.awaitingAck(peer)) {
          this.aePeerIndex += k + 1;
          this.startRound(peer, this.cutFor(st));
          started = true;
        }
      }
      if (!started) this.stats.antiEntropyDeferred++;
    }
    this.collectTombstones();
    this.settingsTable.collectRemoved(this.hlc.physicalNow() - this.limits.apTombstoneMaxMs, versionMs);
    this.reconcile();
  }

  /**
   * The cut of a round with the peer of `st` (see antiEntropyTick), or null for one that
   * compares whole services. (A batch to the peer still unacknowledged was sent within the
   * interval, so it counts as flowing too.)
   */
  private cutFor(st: PeerState | undefined): string | null {
    const now = this.opts.clock.now();
    const flowing = now - this.batchAt < this.limits.apAntiEntropyIntervalMs;
    const settled = st !== undefined && now - st.upSince >= this.limits.apAntiEntropyIntervalMs;
    return flowing && settled && !st.owed && this.readyFlag ? cutAt(this.hlc.physicalNow() - this.limits.apAntiEntropyIntervalMs) : null;
  }

  /** Rounds over every service with a peer, one page (apDigestMaxServices) each: the catch-up of a starting node. */
  private startPass(peer: string): void {
    const st = this.peerState.get(peer) as PeerState;
    st.cursor = '';
    const rounds = new Set<number>();
    do rounds.add(this.startRound(peer));
    while (st.cursor !== '');
    st.catchUp = rounds;
    st.catchUpAt = this.opts.clock.now();
  }

  /** Sends a peer the digests of the next range of services; `cut`: compare only the records with versions up to it (see ap_digest). */
  private startRound(peer: string, cut: string | null = null): number {
    const st = this.peerState.get(peer) as PeerState;
    st.roundAt = this.opts.clock.now();
    const keys = this.table.serviceKeys();
    let start = lowerBound(keys, st.cursor);
    if (start >= keys.length) start = 0;
    const slice = keys.slice(start, start + this.limits.apDigestMaxServices);
    const wraps = start + slice.length >= keys.length;
    const from = start === 0 ? '' : (slice[0] as string);
    const to = wraps ? null : (keys[start + slice.length] as string);
    st.cursor = to ?? '';
    const round = ++this.aeRound;
    const services: DigestEntry[] = slice.map((k) => {
      const d = this.table.digest(k) as ServiceDigest;
      if (cut === null) return [k, d.a, d.b, d.count];
      const c = this.table.digestUpTo(k, cut) as ServiceDigest;
      return [k, d.a, d.b, d.count, c.a, c.b, c.count];
    });
    this.rounds.set(round, { peer, from, to, cut, startedAt: this.opts.clock.now(), versions: new Map(), gone: new Map(), parts: new Set(), reply: null, wants: null, lastChunk: -1 });
    if (this.rounds.size > MAX_ROUNDS) this.rounds.delete(this.rounds.keys().next().value as number);
    this.stats.antiEntropyRounds++;
    const digest: ApMessage = { type: 'ap_digest', round, from, to, services, rebuild: false, rev: this.registry.revision, settings: this.settingsTable.digest(), ...(cut === null ? {} : { cut }) };
    this.whenDurable(peer, () => this.transport.send(peer, digest));
    return round;
  }

  /** The services a digest covers that differ here; sends this node's records of them, then the list. */
  private answerDigest(from: string, msg: Extract<ApMessage, { type: 'ap_digest' }>): void {
    // Every digest is answered, also one that asks for a rebuild (from a node of an older
    // version): answering with a round of its own instead made two nodes that each owed the
    // other bounce digests for ever. What this node holds of tombstones the peer collected
    // is dropped precisely (the peer's answers and ap_gone), never merged back.
    // With a cut, a service whose records up to the cut are the same on both nodes only
    // settles: it is not compared record by record, and the round is no match.
    const cut = typeof msg.cut === 'string' ? msg.cut : null;
    const same = (d: ServiceDigest | undefined, a: unknown, b: unknown, n: unknown): boolean => (d ? d.a === a && d.b === b && d.count === n : n === 0);
    const theirs = new Set<string>();
    const diff = new Set<string>();
    let settling = 0;
    for (const [k, a, b, n, ca, cb, cn] of msg.services as [string, number, number, number, number?, number?, number?][]) {
      theirs.add(k);
      if (same(this.table.digest(k), a, b, n)) continue;
      if (cut !== null && cn !== undefined && same(this.table.digestUpTo(k, cut), ca, cb, cn)) settling++;
      else diff.add(k);
    }
    const keys = this.table.serviceKeys();
    for (let i = lowerBound(keys, msg.from); i < keys.length; i++) {
      const k = keys[i] as string;
      if (msg.to !== null && k >= msg.to) break;
      if (theirs.has(k)) continue;
      if (cut !== null && same(this.table.digestUpTo(k, cut), 0, 0, 0)) settling++;
      else diff.add(k);
    }
    this.stats.antiEntropySettling += settling;
    const st = this.peerState.get(from);
    const entries: ([string, string] | [string, string, 1])[] = [];
    for (const k of diff) for (const r of this.table.serviceRecords(k)) entries.push([recordKey(r), r.v]);
    // The tombstones this node collected in those services, to a peer that owes (it was away
    // when they were collected, and may hold what they deleted). Records a peer that does not
    // owe got from one that does are dropped through this node's own rounds (ap_gone).
    if (diff.size > 0 && st?.owed) {
      for (const [key, c] of this.collected) {
        if (diff.has(serviceKeyOf(key)) && !this.table.get(key)) entries.push([key, c.v, 1]);
      }
    }
    const out: ApMessage[] = [];
    let parts = 0;
    const per = this.limits.apRepairMaxRecords * 4; // a version is a small fraction of a record
    for (let i = 0; i < entries.length; i += per) {
      out.push({ type: 'ap_versions', round: msg.round, part: parts++, entries: entries.slice(i, i + per) });
    }
    if (st) st.answered = this.notePage(from, st.answered, { from: msg.from, to: msg.to, differs: diff.size > 0, match: diff.size === 0 && settling === 0, cut, at: this.opts.clock.now() });
    // Settings: a node of an older version sends no digest and gets none of this.
    const settingsDiffer = typeof msg.settings === 'number' && msg.settings !== this.settingsTable.digest();
    out.push({ type: 'ap_reply', round: msg.round, parts, diff: [...diff], match: diff.size === 0 && settling === 0, rebuild: false, rev: this.registry.revision, ...(settingsDiffer ? { settingsDiffer } : {}) });
    const settings = settingsDiffer ? this.settingsTable.all() : null;
    // The answer counts for the peer's synchronisation (tombstone collection): it goes once
    // what this node compared is durable, so that a crash cannot take back what it showed.
    this.whenDurable(from, () => {
      for (const m of out) {
        if (m.type === 'ap_reply' && settings) this.sendSettings(from, settings);
        this.transport.send(from, m);
      }
    });
  }

  private onVersions(from: string, msg: Extract<ApMessage, { type: 'ap_versions' }>): void {
    const round = this.rounds.get(msg.round);
    if (round?.peer !== from || round.parts.has(msg.part)) return; // ended, or a duplicate
    round.parts.add(msg.part);
    for (const e of msg.entries) {
      if (!Array.isArray(e) || typeof e[0] !== 'string' || typeof e[1] !== 'string') continue;
      if (e[2] === 1) round.gone.set(e[0], e[1]);
      else round.versions.set(e[0], e[1]);
    }
    this.compareRound(msg.round);
  }

  private onGive(from: string, msg: Extract<ApMessage, { type: 'ap_give' }>): void {
    this.stats.repairsReceived += msg.records.length;
    this.applyRemote(from, msg.records, 'repair');
    const round = this.rounds.get(msg.round);
    if (round?.peer !== from || !round.wants?.has(msg.chunk)) return;
    round.wants.delete(msg.chunk);
    const rest = Array.isArray(msg.rest) ? msg.rest.filter((k) => typeof k === 'string') : [];
    if (rest.length > 0) {
      const chunk = ++round.lastChunk;
      round.wants.add(chunk);
      this.transport.send(from, { type: 'ap_want', round: msg.round, chunk, keys: rest });
    } else if (round.wants.size === 0) this.completeRound(msg.round);
  }

  private onReply(from: string, msg: Extract<ApMessage, { type: 'ap_reply' }>): void {
    const round = this.rounds.get(msg.round);
    if (round?.peer !== from || round.reply !== null) return;
    round.reply = msg;
    const st = this.peerState.get(from);
    if (st) st.repliedAt = this.opts.clock.now();
    if (msg.settingsDiffer === true) this.sendSettings(from, this.settingsTable.all());
    this.compareRound(msg.round);
  }

  /**
   * Once the reply and every part of the peer's versions arrived: sends the peer what it
   * lacks, asks for what this node lacks (a lost part: the next round repairs).
   */
  private compareRound(id: number): void {
    const round = this.rounds.get(id);
    const msg = round?.reply;
    if (!round || !msg || round.wants !== null || round.parts.size < msg.parts) return;
    const from = round.peer;
    // What the peer deleted and collected while this node held it: dropped, not pushed.
    if (round.gone.size > 0) this.dropGone(from, [...round.gone]);
    // What the peer holds of tombstones this node collected: the peer drops it (ap_gone),
    // and it is not asked for.
    const gone: [string, string][] = [];
    for (const [key, v] of round.versions) {
      // Below the tombstone's version: the peer holds the deleted record (at it: the tombstone itself).
      const c = this.collected.get(key);
      if (c && v < c.v && !this.table.get(key)) gone.push([key, c.v]);
    }
    for (let i = 0; i < gone.length; i += this.limits.apRepairMaxRecords) this.transport.send(from, { type: 'ap_gone', entries: gone.slice(i, i + this.limits.apRepairMaxRecords) });
    const push: ReplicaRecord[] = [];
    for (const k of msg.diff) {
      for (const r of this.table.serviceRecords(k)) {
        const theirs = round.versions.get(recordKey(r));
        if (theirs === undefined || theirs < r.v) push.push(strip(r));
      }
    }
    const want: string[] = [];
    for (const [key, v] of round.versions) {
      const mine = this.table.get(key);
      const c = this.collected.get(key);
      if ((!mine || mine.v < v) && !(c && v <= c.v)) want.push(key);
    }
    for (const records of this.split(push, this.limits.apRepairMaxRecords)) this.transport.send(from, { type: 'ap_push', records });
    round.wants = new Set();
    for (let i = 0; i < want.length; i += this.limits.apRepairMaxRecords) {
      const chunk = ++round.lastChunk;
      round.wants.add(chunk);
      this.transport.send(from, { type: 'ap_want', round: id, chunk, keys: want.slice(i, i + this.limits.apRepairMaxRecords) });
    }
    if (round.wants.size === 0) this.completeRound(id);
  }

  /** Every record asked for arrived: the round counts for synchronisation and catch-up. */
  private completeRound(id: number): void {
    const round = this.rounds.get(id);
    const msg = round?.reply;
    if (!round || !msg) return;
    const from = round.peer;
    this.rounds.delete(id);
    const st = this.peerState.get(from);
    if (st) st.pass = this.notePage(from, st.pass, { from: round.from, to: round.to, differs: msg.diff.length > 0, match: msg.match, cut: round.cut, at: round.startedAt });
    if (st?.catchUp?.delete(id) && st.catchUp.size === 0) {
      st.catchUp = null;
      st.caughtUp = true;
    }
    if (!this.readyFlag && [...this.peerState.values()].every((p) => p.caughtUp || !p.up)) {
      const names = [...this.peerState].filter(([, p]) => p.caughtUp).map(([id]) => id).sort().join(', ');
      // Ready once what was merged is durable.
      this.persist({ entry: null, events: [], revision: this.registry.revision }, () => this.becomeReady(`caught up from ${names}`)).catch(() => undefined); // a failed log stops the node (onFatal)
    }
  }

  /**
   * Tombstones `peer` collected (key, version) while this node still holds what they
   * deleted (it was away longer than tombstones are kept, or fed by a node that was): each
   * record held at or below the tombstone's version is dropped and the tombstone remembered
   * as collected, so that no peer hands the record back. Records the peer never had, or
   * newer ones, are not touched (a rebuild that dropped every record the peer lacked lost
   * records written elsewhere while the peer was away).
   */
  private dropGone(peer: string, entries: unknown[]): void {
    const now = this.opts.clock.now();
    const forget: ForgetRecord[] = [];
    const unshow = new Map<string, Change>();
    for (const e of entries) {
      if (!Array.isArray(e) || typeof e[0] !== 'string' || typeof e[1] !== 'string') continue;
      const [key, v] = e as [string, string];
      const mine = this.table.get(key);
      // A tombstone held here is left to this node's own collection, which marks the peers
      // that lack it as owing (dropping it early here forgot them, and an absent peer could
      // later hand the deleted record back).
      if (!mine || mine.v > v || mine.del) continue;
      this.table.remove(key);
      rememberCollected(this.collected, key, v, now);
      // Replay removes the record (its version) and remembers the tombstone (the peer's).
      forget.push({ key, v: mine.v, collected: false }, { key, v, collected: true });
      if (this.registry.instance(mine.namespace, mine.service, mine.id)) {
        unshow.set(key, { op: 'delete', namespace: mine.namespace, service: mine.service, id: mine.id, reason: mine.del ?? 'deregistered', detail: `deleted on ${peer} while this node was away`, repl: { view: true } });
      }
    }
    if (forget.length === 0) return;
    this.stats.rebuilds++;
    this.opts.onEvent?.('rebuild', { peer, dropped: forget.length / 2 });
    // Logged with the view's deletes: a restart must not replay the records back.
    this.logForget(forget, (slice) => slice.flatMap((f) => (f.collected ? [] : (unshow.get(f.key) ?? []))));
  }

  /** `at`: when the digests the round compared were taken (a tombstone learned later is not covered). */
  private markSynced(peer: string, at = this.opts.clock.now()): void {
    const st = this.peerState.get(peer);
    if (!st) return;
    st.syncedAt = Math.max(st.syncedAt ?? at, at);
    // Only digests taken after the mark show that the peer dropped what it owed.
    if (at > st.owedAt) st.owed = false;
  }

  /**
   * One compared page (a round this node started, or answered) in a pass over the whole key
   * range: pages that follow each other from the first service to the last, each without
   * difference, show the peer in sync (whole, or up to the smallest cut). Returns the pass
   * that goes on (null: none).
   */
  private notePage(peer: string, current: Pass | null, page: Page): Pass | null {
    const pass = page.from === '' ? { next: '', at: page.at, upTo: null } : current;
    if (!pass || pass.next !== page.from || page.differs) return null;
    // Dated from the earliest digests of the pass (a page's reply may come after a later page's).
    pass.at = Math.min(pass.at, page.at);
    // No difference: a match, or differences only above the page's cut.
    if (!page.match) {
      if (page.cut === null) return null;
      if (pass.upTo === null || page.cut < pass.upTo) pass.upTo = page.cut;
    }
    if (page.to !== null) {
      pass.next = page.to;
      return pass;
    }
    if (pass.upTo === null) this.markSynced(peer, pass.at);
    else this.markSyncedUpTo(peer, pass.upTo, pass.at);
    return null;
  }

  /** A round (or pass) that found no difference up to `cut`, with digests taken at `at` (see cutSync). */
  private markSyncedUpTo(peer: string, cut: string, at: number): void {
    const st = this.peerState.get(peer);
    // A cut from a clock further ahead than this node follows is not taken: it would hide
    // every later, lower one for as long as the skew lasts.
    if (!st || versionMs(cut) > this.hlc.physicalNow() + this.limits.apMaxClockOffsetMs) return;
    const f = { cut, at };
    // The peer owed a rebuild for tombstones collected before it had them (kept longer than
    // apTombstoneMaxMs: their versions, and those of the records they deleted, are far
    // below any cut). Matching up to a cut since then, it holds none of those records.
    if (st.owed && at > st.owedAt && cut >= st.owedVersion) st.owed = false;
    const { highest, latest } = st.cutSync;
    if (!highest || cut >= highest.cut) st.cutSync.highest = f;
    if (!latest || at >= latest.at) st.cutSync.latest = f;
  }

  /** Drops tombstones every peer has had time to see (or kept past apTombstoneMaxMs). */
  private collectTombstones(): void {
    const now = this.opts.clock.now();
    // Remembered for apTombstoneMaxMs, and for as long as a peer may still hold what they
    // deleted (it owes: it was away when they were collected); at most MAX_COLLECTED.
    const owedPeer = [...this.peerState.values()].some((p) => p.owed);
    for (const [key, c] of this.collected) {
      if (this.collected.size <= MAX_COLLECTED && (owedPeer || now - c.at < this.limits.apTombstoneMaxMs)) break;
      this.collected.delete(key);
    }
    if (this.table.tombstones === 0) return;
    const peers = [...this.peerState.values()];
    // A peer has the tombstone when a round that matched whole, or one that matched up to
    // its cut, took its digests after this node learned the tombstone (and, for a cut, the
    // tombstone's version is within it: an expiry's version is as old as the incarnation).
    const covers = (f: CutSync | null, r: StoredRecord): boolean => f !== null && f.at > r.at && r.v <= f.cut;
    const has = (p: PeerState, r: StoredRecord): boolean => (p.syncedAt !== null && p.syncedAt > r.at) || covers(p.cutSync.highest, r) || covers(p.cutSync.latest, r);
    const collected = this.table.collect((r) => {
      const age = now - r.at;
      if (age < this.limits.apTombstoneMinMs) return false;
      if (peers.every((p) => has(p, r))) return true;
      if (age < this.limits.apTombstoneMaxMs) return false;
      for (const p of peers) {
        if (has(p, r)) continue;
        p.owed = true;
        p.owedAt = now;
        if (r.v > p.owedVersion) p.owedVersion = r.v;
      }
      return true;
    });
    this.stats.tombstonesCollected += collected.length;
    const forget: ForgetRecord[] = [];
    for (const r of collected) {
      const key = recordKey(r);
      rememberCollected(this.collected, key, r.v, now);
      forget.push({ key, v: r.v, collected: true });
    }
    // Logged, so that a restart neither replays them back nor forgets that it collected them.
    this.logForget(forget);
  }

  /**
   * Logs records dropped from the replica table (replica_forget, at most FORGET_PER_ENTRY
   * per entry, well below the log's largest record), each slice with the changes
   * `alongside` gives for it.
   */
  private logForget(forget: ForgetRecord[], alongside: (slice: ForgetRecord[]) => Change[] = () => []): void {
    for (let i = 0; i < forget.length; i += FORGET_PER_ENTRY) {
      const slice = forget.slice(i, i + FORGET_PER_ENTRY);
      this.persist(this.registry.applyReplicated([...alongside(slice), { op: 'replica_forget', records: slice }])).catch(() => undefined);
    }
  }

  // ---- reachability and the view ----

  private onPeerChange(peer: string, up: boolean): void {
    if (this.closed || this.removed.has(peer)) return;
    let st = this.peerState.get(peer);
    if (!st) {
      // A member learned through --join or from another member.
      st = this.newPeer(false);
      this.peerState.set(peer, st);
    }
    if (st.up === up) return;
    st.up = up;
    st.downSince = up ? null : this.opts.clock.now();
    // Passes of pages begin again: pages compared before the link went down say nothing of now.
    st.pass = null;
    st.answered = null;
    if (up) st.upSince = this.opts.clock.now();
    this.viewDirty = true;
    if (!up) {
      // Its acknowledgements will not come: batches stop waiting for them.
      this.stopWaitingFor(peer);
    }
    this.opts.onEvent?.(up ? 'peer_up' : 'peer_down', { peer });
    // The removals this node knows go first, so that the peer settles the records of
    // removed members before the exchange below could hand it any.
    if (up && this.removed.size > 0) this.transport.send(peer, { type: 'ap_forget', ids: this.removed.list() });
    if (up) {
      // One side starts the exchange with a peer that comes back (the other would only
      // repeat it); a node catching up always does.
      if (!this.readyFlag) this.startPass(peer);
      else if (this.nodeId < peer) this.startRound(peer);
    }
    this.reconcile();
  }

  private newPeer(up: boolean): PeerState {
    return { up, downSince: up ? null : this.opts.clock.now(), upSince: this.opts.clock.now(), syncedAt: null, revision: null, lagMs: null, cursor: '', cutSync: { highest: null, latest: null }, owed: false, owedAt: -Infinity, owedVersion: '', waiting: 0, caughtUp: false, catchUp: null, catchUpAt: 0, repliedAt: -Infinity, roundAt: this.opts.clock.now(), pass: null, answered: null };
  }

  private peerUp(id: string): boolean {
    return this.peerState.get(id)?.up ?? false;
  }

  /** Whether a record is shown: live, and its owner reachable, within grace, or protected. */
  private visible(r: StoredRecord): boolean {
    if (r.del || !r.i) return false;
    if (r.o === this.nodeId || r.i.leaseId === null || this.peerUp(r.o)) return true;
    if (this.protection.engaged) return true;
    const down = this.peerState.get(r.o)?.downSince ?? this.started;
    return this.opts.clock.now() - down < this.limits.apOwnerGraceMs;
  }

  private toInstance(r: StoredRecord): Instance {
    const i = r.i as WireInstance;
    // Field by field, in the order of a registration's instance (see wire()).
    const inst: Instance = { id: i.id, service: i.service, namespace: i.namespace, address: i.address, port: i.port, protocol: i.protocol, zone: i.zone, version: i.version, tags: i.tags, metadata: i.metadata, weight: i.weight, status: i.status, health: i.health, checks: i.checks, leaseId: i.leaseId, createRevision: 0, modRevision: 0 };
    if (i.owner !== undefined) inst.owner = i.owner;
    if (r.o !== this.nodeId && !this.peerUp(r.o)) inst.unconfirmed = true;
    return inst;
  }

  /**
   * Brings the view in line with reachability: flags or unflags the records of owners that
   * went or came back, hides lease-bound ones past the grace, and decides cluster-wide
   * self-preservation (a whole side gone quiet is a partition, not a die-off).
   */
  private reconcile(): void {
    if (this.closed) return;
    const allUp = [...this.peerState.values()].every((p) => p.up);
    // With every peer reachable and nothing flagged since, the view is right: a table walk is saved.
    if (allUp && !this.viewDirty) return;
    this.viewDirty = !allUp;
    // One walk of the table: the leases that self-preservation weighs, and the records of
    // other owners, whose visibility depends on the protection those leases decide.
    const leases = new Set<string>();
    const away = new Set<string>();
    const others: StoredRecord[] = [];
    for (const r of this.table.values()) {
      if (r.del) continue;
      const mine = r.o === this.nodeId;
      const lease = r.i?.leaseId;
      if (lease) {
        leases.add(lease);
        if (!mine && !this.peerUp(r.o)) away.add(lease);
      }
      if (!mine) others.push(r);
    }
    this.updateProtection(leases, away);
    const changes: Change[] = [];
    const counts = { unconfirmed: 0, hidden: 0 };
    this.viewCounts = counts;
    for (const r of others) {
      const shown = this.registry.instance(r.namespace, r.service, r.id);
      const want = this.visible(r);
      if (!want) {
        counts.hidden++;
        if (shown) changes.push({ op: 'delete', namespace: r.namespace, service: r.service, id: r.id, reason: 'owner_unreachable', detail: `owner ${r.o} unreachable for longer than ${this.limits.apOwnerGraceMs} ms`, repl: { view: true } });
        continue;
      }
      const flag = !this.peerUp(r.o);
      if (flag) counts.unconfirmed++;
      if (shown && (shown.instance.unconfirmed === true) === flag) continue;
      changes.push({
        op: 'put',
        instance: this.toInstance(r),
        specs: r.specs ?? [],
        reason: flag ? 'owner_unreachable' : 'owner_reachable',
        detail: flag ? `owner ${r.o} unreachable; kept, unconfirmed` : `owner ${r.o} reachable`,
        repl: { view: true },
      });
    }
    if (changes.length > 0) this.persistAll(changes);
  }

  /** Engages or releases self-preservation from the leases of live records (`all`) and those of unreachable owners (`away`). */
  private updateProtection(all: Set<string>, away: Set<string>): void {
    const now = this.opts.clock.now();
    const cfg = this.limits;
    const want = away.size >= cfg.selfPreservationMinLeases && away.size * 100 > all.size * cfg.selfPreservationThresholdPercent && cfg.selfPreservationThresholdPercent < 100;
    const p = this.protection;
    // Protection that ran its longest allowed hold does not start again before the
    // condition has ended once: it would drop and put back every held record each hold.
    if (!want) this.protectionSpent = false;
    if (want && !p.engaged && !this.protectionSpent) {
      p.engaged = true;
      p.since = now;
      p.reason = `${away.size} of ${all.size} leases belong to unreachable peers`;
      this.opts.onProtectionChange?.({ engaged: true, zone: null, reason: `cluster: ${p.reason}` });
    } else if (p.engaged && (!want || (cfg.selfPreservationMaxHoldMs > 0 && now - (p.since ?? now) >= cfg.selfPreservationMaxHoldMs))) {
      const why = want ? `held for the longest allowed (${cfg.selfPreservationMaxHoldMs} ms); not again until the peers are back or hold few enough leases` : 'unreachable peers hold few enough leases';
      if (want) this.protectionSpent = true;
      p.engaged = false;
      p.since = null;
      p.reason = null;
      this.opts.onProtectionChange?.({ engaged: false, zone: null, reason: `cluster: ${why}` });
    }
    p.heldLeases = p.engaged ? away.size : 0;
  }

  /**
   * apCatchUpTimeoutMs passed without a completed catch-up. A node no peer answers becomes
   * ready alone; one whose peers answer but whose records take longer to arrive (a large
   * registry, a slow link) waits on, for up to CATCH_UP_MAX_WAITS such periods in all,
   * rather than serving reads with what it had before the peers' records came.
   */
  private catchUpTimedOut(): void {
    this.readyTimer = null;
    if (this.readyFlag || this.closed) return;
    const now = this.opts.clock.now();
    const timeout = this.limits.apCatchUpTimeoutMs;
    const answering = [...this.peerState].filter(([, st]) => st.up && !st.caughtUp && now - st.repliedAt < timeout).map(([id]) => id).sort();
    const waited = now - this.started;
    if (answering.length === 0) return this.becomeReady(`no peer answered within ${timeout} ms; serving what this node has`);
    if (waited < CATCH_UP_MAX_WAITS * timeout) {
      this.readyTimer = this.timers.set(() => this.catchUpTimedOut(), timeout);
      return;
    }
    this.becomeReady(`the catch-up from ${answering.join(', ')} did not complete within ${Math.round(waited)} ms (${CATCH_UP_MAX_WAITS} times apCatchUpTimeoutMs); serving what this node has`);
  }

  private becomeReady(reason: string): void {
    if (this.readyFlag || this.closed) return;
    this.readyFlag = true;
    this.readyReason = reason;
    // Orphans kept from before this rule (or learned while catching up) end now.
    this.endOrphans(this.table.snapshot().filter((r) => this.orphaned(r)));
    if (this.readyTimer !== null) {
      this.timers.clear(this.readyTimer);
      this.readyTimer = null;
    }
    this.opts.onEvent?.('ready', { reason });
  }

  // ---- expiry ----

  private scheduleTick(): void {
    if (this.closed) return;
    this.tickTimer = this.timers.set(() => {
      this.tickTimer = null;
      this.tick();
      this.scheduleTick();
    }, this.opts.expiryTickMs ?? 100);
  }

  private tick(): void {
    if (this.closed) return;
    for (const outcome of [...this.registry.expireDue(), ...this.registry.healthDue()]) this.persist(outcome).catch(() => undefined);
    for (const change of this.registry.takeProtectionChanges()) this.opts.onProtectionChange?.(change);
  }
}

/** What a logged change teaches the replica table (replay after a restart). */
function learnFromChange(table: ReplicaTable, settings: SettingsReplica, collected: Collected, c: Change, now: number): void {
  if (c.op === 'replica_forget') {
    for (const f of c.records) {
      if (table.get(f.key)?.v === f.v) table.remove(f.key);
      if (f.collected) rememberCollected(collected, f.key, f.v, now);
    }
    return;
  }
  if (c.op === 'settings') {
    if (c.repl && 'v' in c.repl) settings.merge({ namespace: c.namespace, service: c.service, v: c.repl.v, o: c.repl.o, settings: c.settings });
    return;
  }
  if (c.op === 'replica') {
    for (const r of c.records) table.merge(r, now);
    return;
  }
  if ((c.op !== 'put' && c.op !== 'delete') || !c.repl || 'view' in c.repl) return;
  if (c.op === 'put') {
    const rec: ReplicaRecord = { namespace: c.instance.namespace, service: c.instance.service, id: c.instance.id, v: c.repl.v, o: c.repl.o, i: wire(c.instance), specs: c.specs };
    if (c.reason) rec.why = c.reason;
    if (c.detail) rec.detail = c.detail;
    table.merge(rec, now);
  } else {
    const rec: ReplicaRecord = { namespace: c.namespace, service: c.service, id: c.id, v: c.repl.v, o: c.repl.o, del: c.reason };
    if (c.detail) rec.detail = c.detail;
    table.merge(rec, now);
  }
}

/** A record as sent: without this node's bookkeeping. */
function strip(r: StoredRecord): ReplicaRecord {
  const { at: _at, ...rest } = r;
  return rest;
}

function validRecord(r: unknown): r is ReplicaRecord {
  if (typeof r !== 'object' || r === null) return false;
  const x = r as Record<string, unknown>;
  if (typeof x.namespace !== 'string' || typeof x.service !== 'string' || typeof x.id !== 'string' || typeof x.v !== 'string' || typeof x.o !== 'string') return false;
  if (x.del === undefined) return typeof x.i === 'object' && x.i !== null;
  return typeof x.del === 'string';
}

/** The first index of sorted `keys` whose key is >= `key` (keys.length when none is). */
function lowerBound(keys: readonly string[], key: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((keys[mid] as string) < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The service key (`namespace/service`) of a record key (`namespace/service/id`). */
function serviceKeyOf(key: string): string {
  return key.slice(0, key.indexOf('/', key.indexOf('/') + 1));
}
