/**
 * The cp engine: a stateless Switchboard node over an etcd cluster (docs/cp.md).
 *
 * Writes are etcd transactions. Each is planned from the local view and guarded by the
 * revisions it read (an instance's mod_revision, or "absent"); when etcd refuses the
 * guard, the view catches up to etcd's revision and the write is planned again. A write is
 * answered once the local view has applied it, so a node always reads its own writes.
 *
 * Reads come from the view (view.ts). `consistent=true` learns etcd's current revision
 * with a quorum read (concurrent ones share one) and waits until the view reached it.
 *
 * A prober reads etcd's revision with a quorum read every `probeIntervalMs`: when that
 * fails, the store is unreachable for this node: writes fail at once with 503
 * STORE_UNAVAILABLE, default reads are answered from the view marked stale, and
 * consistent reads fail with 503.
 */
import { request } from 'undici';
import {
  REPORTS_CHECK_ID,
  SwitchboardError,
  completeCheckSpec,
  formatDuration,
  limitExceeded,
  type AdminStatus,
  type CheckResult,
  type CheckState,
  type ClusterMember,
  type ClusterStatus,
  type ConsumerReport,
  type DeleteReason,
  type Instance,
  type LeaseGrant,
  type Limits,
  type PutReason,
  type ServiceSettings,
  type StoreStatus,
  type WatchEvent,
} from '@switchboard/protocol';
import type * as RPC from 'etcd3';
import type { Registry as MetricsRegistry } from 'prom-client';
import promClient from 'prom-client';
import { clipOutput, dueAction, nextCheckState } from '../../core/checks.js';
import type { Clock } from '../../core/clock.js';
import { combinedHealth, withCheckState } from '../../core/health.js';
import { Registry, describeNew, describeUpdate, instanceFromRegistration, leaseNotFound, instanceKey, sameInput, splitKey, type InstanceRecord, type RegistrationItem, type ServiceState } from '../../core/registry.js';
import { rendezvousOwner } from '../../core/rendezvous.js';
import { MAX_FORWARDED_REPORTS, ReportBook } from '../../core/reports.js';
import { HealthMonitor, noCheckStats, type CheckStats, type MonitorOptions } from '../../health/monitor.js';
import { CheckNetworks, type DenialObserver } from '../../health/networks.js';
import { FORWARDED_REPORT_HEADER, type Engine, type ForwardedWrite, type LeaseEndedListener, type WriteOptions } from '../engine.js';
import { Hub, type Subscriber } from '../hub.js';
import { barrierKeyOf, decodeJson, progressAnswersAreOrdered, encodeInstance, heardKeyOf, heardPrefixOf, instanceKeyOf, leaseIdFromEtcd, leaseIdToEtcd, leaseKeyOf, nodeKeyOf, prefixEnd, settingsKeyOf, whyKeyOf, type Layout, type StoredLease, type WhyValue } from './keys.js';
import { QueueFull, TxnBatcher } from './batcher.js';
import { ForwardFailures, failedForward, refusedForward, type ForwardFailure, type PeerApi } from './forward.js';
import { GatewayReader } from './gateway.js';
import { NotTaken, WriterLink } from './writer-link.js';
import { Store, StoreUnavailable, isUnavailable, refusalOf, type StoreTls } from './store.js';
import { View } from './view.js';

export interface CpOptions {
  nodeId: string;
  /** This node's REST address, as other nodes and operators see it. */
  address: string;
  endpoints: string[];
  prefix: string;
  limits: Limits;
  clock: Clock;
  /** TLS material for https:// endpoints (see Store). */
  tls?: StoreTls;
  /** An etcd user, when etcd has authentication enabled. */
  auth?: { username: string; password: string };
  /** Deadline of one etcd call (ms); default 2000. */
  callTimeoutMs?: number;
  /**
   * Deadline of a write transaction (ms); default 1000. A transaction sent to a follower
   * just as the leader died waits for this deadline (etcd drops the proposal); the
   * election takes one to two election timeouts anyway, so a longer deadline only
   * stretched the write gap (docs/cp.md).
   */
  writeTimeoutMs?: number;
  /** How often the prober reads etcd's revision (ms); default 500. */
  probeIntervalMs?: number;
  /** Deadline of a probe (ms); default 1000. */
  probeTimeoutMs?: number;
  /** Deadline of a consistent read (ms); default 3000. */
  consistentTimeoutMs?: number;
  /** Endpoint circuit breaker: how long a failed endpoint is skipped (ms); default 1000. */
  breakerOpenMs?: number;
  /** TTL of this node's own registration lease (s); default 5. */
  nodeTtlSec?: number;
  /** Writes that may wait for a group-commit transaction on this node; default 4096. */
  maxQueuedWrites?: number;
  /** Largest etcd transaction (etcd's --max-txn-ops, default 128). */
  maxTxnOps?: number;
  /** Quorum reads of consistent reads over etcd's JSON gateway (gateway.ts); default true, false keeps them on gRPC. */
  jsonGateway?: boolean;
  activeChecks?: boolean;
  probes?: MonitorOptions['probes'];
  /** The networks active checks may reach; default CheckNetworks.DEFAULT. */
  checkNetworks?: CheckNetworks;
  /** Every probe the network policy refused, with what its output leaves out (for the log). */
  onCheckDenied?: DenialObserver;
  log?: (level: 'info' | 'warn' | 'error', msg: string, err?: unknown) => void;
  /** How this node calls the other nodes' HTTP API (forwarded consumer reports); default plain HTTP without a token, Node's CAs for nodes that announce https. */
  peerApi?: PeerApi;
}

/** etcd's smallest lease TTL is about 1.5 election timeouts; 2 s is granted everywhere. */
export const MIN_LEASE_TTL_SEC = 2;
const MAX_WRITE_ATTEMPTS = 8;
/** While etcd is out of reach: a new probe may start when the last has waited this long (ms)... */
const PROBE_OVERLAP_MS = 250;
/** ...with at most this many in flight. */
const MAX_PROBES = 4;

interface Plan {
  compare: RPC.ICompare[];
  success: RPC.IRequestOp[];
  /** Answer for a write that changes nothing (after its compares held). */
  unchangedRevision: number;
}

/**
 * A forwarded write that could not be planned before its sender stops waiting, or whose
 * sender's link closed: not made. NOT_READY, so that a sender still waiting makes the
 * write itself (a refusal the writer link reads as "not taken").
 */
function notPlanned(attempt: number, why: string): SwitchboardError {
  return new SwitchboardError('NOT_READY', `not made: ${why}${attempt > 0 ? ` (after ${attempt} attempt${attempt > 1 ? 's' : ''} that raced with other writes)` : ''}`, {
    retryAfterSec: 1,
    hint: 'the sending node makes the write itself; if this reaches a client, retry',
  });
}

function unavailable(what: string, retryAfterSec = 1): SwitchboardError {
  return new SwitchboardError('STORE_UNAVAILABLE', `etcd cannot take this now: ${what}`, {
    retryAfterSec,
    hint: 'the etcd cluster has no quorum or cannot be reached from this node; retry after the delay, or check the etcd members (GET /v1/status shows cluster.store)',
  });
}

const b = (s: string): Buffer => Buffer.from(s);

/** The node that runs the checks of a key (and counts its consumer reports): rendezvous hashing over the live nodes. */
const ownerOf = rendezvousOwner;

export class CpEngine implements Engine {
  readonly mode = 'cp' as const;
  readonly nodeId: string;
  readonly durable = true;
  readonly dataDir = null;
  readonly checkNetworks: CheckNetworks;
  private readonly layout: Layout;
  private readonly leaseListeners = new Set<LeaseEndedListener>();
  /** Consumer reports this node forwarded to the node that counts them. */
  forwardedReports = 0;
  /** Forwards that failed (the report was counted here), by why; set up in the constructor. */
  private readonly forwardFailures: ForwardFailures;
  /** The link to the node that writes for the cluster (writer-link.ts). */
  private readonly writerLink: WriterLink | null;
  /** Forwarded reports still waiting for an answer (at most MAX_FORWARDED_REPORTS). */
  private reportsInFlight = 0;
  /**
   * Leases a session on this node keeps, with the mod revision of their lease key when the
   * session took them: a detach is guarded by it (see detachLease). At most one per lease
   * the cluster holds (maxLeasesPerNode); forgotten when the lease ends.
   */
  private readonly attached = new Map<string, number>();
  /** Detached leases waiting out their grace on this node. */
  private readonly detachTimers = new Map<string, NodeJS.Timeout>();
  private closed = false;
  private monitor: HealthMonitor | null = null;
  private monitorTimer: NodeJS.Timeout | null = null;
  private readonly probeTimer: NodeJS.Timeout;
  private readonly reports: ReportBook;
  // The store as this node sees it.
  private reachable = true;
  private leader: string | null = null;
  private etcdRevision = 0;
  private lastStatusAt = 0;
  /** When the view was last known to hold every write etcd had confirmed (Date.now()). */
  private freshAt = Date.now();
  /** Probes in flight (number -> when it started), and when etcd last answered a quorum read. */
  private readonly probesRunning = new Map<number, number>();
  private probeSeq = 0;
  private lastAnswerAt = 0;
  private keepingAlive: Promise<void> | null = null;
  private quorumRead: Promise<number> | null = null;
  private nextQuorumRead: Promise<number> | null = null;
  private nodeLease: string | null = null;
  /** Check runs of the monitors replaced when the live nodes changed (see restartMonitor). */
  private pastRuns: RunTotals = noCheckStats();
  private nodeKeepAliveAt = 0;
  private metrics: { roundTrips: promClient.Histogram<'method' | 'outcome'> } | null = null;
  private readonly cfg: Required<Pick<CpOptions, 'callTimeoutMs' | 'writeTimeoutMs' | 'probeIntervalMs' | 'probeTimeoutMs' | 'consistentTimeoutMs' | 'nodeTtlSec' | 'maxTxnOps'>>;
  private readonly startedAt = new Date().toISOString();
  private readonly ttlTimer: NodeJS.Timeout;
  private readonly batcher: TxnBatcher;

  private constructor(
    private readonly store: Store,
    private readonly view: View,
    private readonly opts: CpOptions,
  ) {
    this.nodeId = opts.nodeId;
    this.checkNetworks = opts.checkNetworks ?? CheckNetworks.DEFAULT;
    this.layout = { prefix: opts.prefix };
    this.cfg = {
      callTimeoutMs: opts.callTimeoutMs ?? 2000,
      writeTimeoutMs: opts.writeTimeoutMs ?? 1000,
      probeIntervalMs: opts.probeIntervalMs ?? 500,
      probeTimeoutMs: opts.probeTimeoutMs ?? 1000,
      consistentTimeoutMs: opts.consistentTimeoutMs ?? 3000,
      nodeTtlSec: opts.nodeTtlSec ?? 5,
      maxTxnOps: opts.maxTxnOps ?? 128,
    };
    // One transaction in flight per node: writes that arrive meanwhile wait for it and go
    // together in the next (group commit). Measured with 32 writers over three nodes, two in
    // flight made 0.38 transactions per registration and one makes 0.23, which cut etcd's CPU
    // per registration by a fifth to a third and the nodes' by a sixth, and raised throughput.
    this.batcher = new TxnBatcher({ send: (txn) => this.store.txn(txn, this.cfg.writeTimeoutMs), maxWrites: Math.min(64, this.cfg.maxTxnOps), maxTxnOps: this.cfg.maxTxnOps, maxBytes: 1024 * 1024, maxInFlight: 1, holdMs: opts.limits.cpBatchHoldMs, maxQueued: opts.maxQueuedWrites ?? 4096, unreachable: () => !this.reachable });
    this.reports = new ReportBook({ windowMs: opts.limits.reportWindowMs, minReporters: opts.limits.reportMinReporters, maxReportersPerInstance: opts.limits.maxReportersPerInstance });
    this.forwardFailures = new ForwardFailures((msg) => opts.log?.('warn', msg));
    this.writerLink = opts.peerApi
      ? new WriterLink({ nodeId: this.nodeId, peer: opts.peerApi, timeoutMs: 2 * (this.cfg.writeTimeoutMs + this.cfg.callTimeoutMs) + this.cfg.consistentTimeoutMs, handshakeTimeoutMs: this.cfg.writeTimeoutMs, maxMessageBytes: opts.limits.maxSessionMessageBytes, maxInflight: opts.limits.cpForwardMaxInflight, retryMs: WRITER_RETRY_MS, refusedRetryMs: WRITER_REFUSED_RETRY_MS, log: (level, msg) => opts.log?.(level, msg) })
      : null;
    this.probeTimer = setInterval(() => void this.probe(), this.cfg.probeIntervalMs);
    this.probeTimer.unref();
    this.ttlTimer = setInterval(() => this.ttlDue(), 250);
    this.ttlTimer.unref();
  }

  static async open(opts: CpOptions): Promise<CpEngine> {
    let engine: CpEngine | null = null;
    // With a client certificate etcd's gateway refuses every request (it cannot apply the
    // certificate's name as the user, so it will not pretend to): gRPC only.
    const gateway =
      opts.jsonGateway !== false && !opts.tls?.cert
        ? new GatewayReader({
            endpoints: opts.endpoints,
            breakerOpenMs: opts.breakerOpenMs ?? 1000,
            ...(opts.tls && { tls: opts.tls }),
            ...(opts.auth && { auth: opts.auth }),
            onStatusRefused: (refused) => opts.log?.('warn', `etcd refused the status call that finds its leader (etcd 3.5.28+ and 3.6 allow it to the root role only): consistent reads go to the first endpoint that answers, not to the leader (${refused})`),
          })
        : null;
    let store: Store;
    try {
      store = new Store({
        endpoints: opts.endpoints,
        callTimeoutMs: opts.callTimeoutMs ?? 2000,
        breakerOpenMs: opts.breakerOpenMs ?? 1000,
        onRoundTrip: (method, ms, ok) => engine?.metrics?.roundTrips.observe({ method, outcome: ok ? 'ok' : 'error' }, ms / 1000),
        ...(opts.tls && { tls: opts.tls }),
        ...(opts.auth && { auth: opts.auth }),
        ...(gateway && {
          gateway,
          onGatewayMissing: (err: Error) => opts.log?.('warn', 'etcd\'s JSON gateway cannot be used from this node: consistent reads make their quorum reads over gRPC from now on', err),
        }),
      });
    } catch (err) {
      void gateway?.close();
      throw err;
    }
    let view: View;
    let opened = (): void => undefined;
    try {
      // Only a refusal (credentials, certificates) ends the start here: the range below
      // would meet this endpoint's open breaker and say less. Not a permission refusal:
      // etcd 3.5.28 and later 3.5 releases, and 3.6 before its backport, allow the status
      // call to the root role only (etcd issue 21663). The node then goes without the
      // release, as for an old one (barrier writes); the prefix's permissions are checked
      // by the reads and writes that follow.
      const release = await store.status().then(
        (s) => s.version,
        (err: unknown) => {
          const refusal = refusalOf(err);
          if (refusal === 'permission') opts.log?.('info', `etcd refused this user its status call (etcd 3.5.28+ allows it to the root role only): the release is unknown (${(err as Error).message})`);
          else if (refusal !== null) throw err;
          return null;
        },
      );
      const orderedProgress = release !== null && progressAnswersAreOrdered(release);
      // Said once the view is open (a start that is retried while etcd is out of reach
      // would repeat it every time).
      if (!orderedProgress) {
        const note = `etcd ${release ?? '(version unknown)'} may answer a watch progress request before events it has queued; this node learns its view's progress by writing ${barrierKeyOf({ prefix: opts.prefix }, opts.nodeId)} instead`;
        opened = () => opts.log?.('info', note);
      }
      view = await View.open(store, {
        layout: { prefix: opts.prefix },
        nodeId: opts.nodeId,
        orderedProgress,
        limits: opts.limits,
        clock: opts.clock,
        onLeaseEnded: (id, reason) => engine?.leaseEnded(id, reason),
        onNodesChanged: () => engine?.nodesChanged(),
        onError: (msg, err) => opts.log?.('warn', msg, err),
      });
    } catch (err) {
      store.close();
      throw err;
    }
    opened();
    engine = new CpEngine(store, view, opts);
    engine.etcdRevision = view.progress;
    try {
      await engine.registerNode();
    } catch (err) {
      // A node that cannot register (etcd refused the write) must not keep its watch open.
      await engine.close();
      throw err;
    }
    engine.restartMonitor();
    return engine;
  }

  get registry(): Registry {
    return this.view.registry;
  }
  get hub(): Hub {
    return this.view.hub;
  }

  // ---- reads ----

  /**
   * What a read may answer. `consistent`: waits until the view holds every write that
   * completed before the call (503 when that cannot be known). Otherwise the view as it
   * is: stale when etcd cannot be reached, with how long it has been.
   */
  async readFreshness(consistent: boolean): Promise<{ stale: boolean; staleMs: number }> {
    if (consistent) {
      await this.barrier();
      return { stale: false, staleMs: 0 };
    }
    const staleMs = Math.max(0, Date.now() - this.freshAt);
    // Reachable and caught up (or only just behind, as the watch delivers): fresh.
    if (this.reachable && (this.view.progress >= this.etcdRevision || staleMs < 2 * this.cfg.probeIntervalMs + this.cfg.probeTimeoutMs)) return { stale: false, staleMs: 0 };
    return { stale: true, staleMs };
  }

  /** Waits until the view reflects every write etcd completed before this call. */
  async barrier(timeoutMs = this.cfg.consistentTimeoutMs): Promise<void> {
    const started = Date.now();
    let revision: number;
    try {
      if (this.reachable) revision = await this.sharedQuorumRead();
      else {
        // Known to be out of reach: one quick attempt (the quorum may be back before the next probe).
        const r = await this.store.consistentRevision(b(this.layout.prefix), this.cfg.probeTimeoutMs);
        this.noteRevision(r.revision, started);
        this.lastAnswerAt = Math.max(this.lastAnswerAt, Date.now());
        this.reachable = true;
        revision = r.revision;
      }
    } catch (err) {
      if (isUnavailable(err)) throw unavailable('the quorum read for a consistent answer failed', 1);
      throw err;
    }
    const left = Math.max(1, timeoutMs - (Date.now() - started));
    // A watch stream on a cut-off endpoint answers no progress requests: replace it early.
    if (!(await this.view.waitFor(revision, Math.min(left, 1000))) && left > 1000) {
      this.view.restart(null, `the view did not reach revision ${revision} within 1 s`);
    }
    if (!(await this.view.waitFor(revision, Math.max(1, timeoutMs - (Date.now() - started))))) {
      this.view.restart(null, `the view did not reach revision ${revision} within ${timeoutMs} ms`);
      throw unavailable(`this node's view did not catch up with etcd revision ${revision} in time`, 1);
    }
  }

  /**
   * etcd's current revision from a quorum read. Callers share a read only when it was sent
   * after they arrived: a read in flight may predate their call, so they wait for the next.
   */
  private sharedQuorumRead(): Promise<number> {
    if (!this.quorumRead) {
      const started = Date.now();
      const p = this.store.consistentRevision(b(this.layout.prefix), this.cfg.consistentTimeoutMs).then((r) => {
        this.noteRevision(r.revision, started);
        return r.revision;
      });
      this.quorumRead = p;
      const clear = (): void => {
        if (this.quorumRead === p) this.quorumRead = null;
      };
      p.then(clear, clear);
      return p;
    }
    if (!this.nextQuorumRead) {
      const next = this.quorumRead.then(
        () => undefined,
        () => undefined,
      ).then(() => {
        this.nextQuorumRead = null;
        return this.sharedQuorumRead();
      });
      this.nextQuorumRead = next;
    }
    return this.nextQuorumRead;
  }

  private noteRevision(revision: number, askedAt: number): void {
    this.etcdRevision = Math.max(this.etcdRevision, revision);
    if (this.view.progress >= revision) this.freshAt = Math.max(this.freshAt, askedAt);
    else void this.view.waitFor(revision, this.cfg.consistentTimeoutMs).then((ok) => ok && (this.freshAt = Math.max(this.freshAt, askedAt)));
  }

  /** The prober: etcd's revision by quorum read; the leader now and then; this node's lease. */
  private async probe(): Promise<void> {
    if (this.closed) return;
    // One probe at a time while etcd answers (counting those started since its last
    // answer). While it is out of reach, another may start once the last one has waited
    // PROBE_OVERLAP_MS (at most MAX_PROBES at once): a probe sent during an election can
    // hang to its deadline, and the node should notice the new leader as soon as one answers.
    const started = Date.now();
    const running = [...this.probesRunning.values()];
    if (this.reachable ? running.some((at) => at >= this.lastAnswerAt) : running.length >= MAX_PROBES || running.some((at) => started - at < PROBE_OVERLAP_MS)) return;
    const seq = ++this.probeSeq;
    this.probesRunning.set(seq, started);
    try {
      const r = await this.store.quorumRevision(b(this.layout.prefix), this.cfg.probeTimeoutMs);
      // An answer always counts; a failure counts only for a probe started after the last answer.
      this.lastAnswerAt = Math.max(this.lastAnswerAt, Date.now());
      this.noteRevision(r.revision, started);
      if (!this.reachable) this.opts.log?.('info', `etcd answers with a quorum again (revision ${r.revision})`);
      this.reachable = true;
      // A view that stays behind a confirmed revision has a stalled watch: replace it.
      if (this.view.progress < r.revision && performance.now() - this.view.lastHeard > 3 * this.cfg.probeTimeoutMs + 2000) {
        this.view.restart(null, `the watch has been silent while etcd is at revision ${r.revision}`);
      }
      if (Date.now() - this.lastStatusAt > 2000) {
        this.lastStatusAt = Date.now();
        // Late answers count only while etcd is still reachable (a failed probe cleared them).
        this.store.status(this.cfg.probeTimeoutMs).then(
          (st) => {
            if (this.reachable) this.leader = st.leader === '0' ? null : BigInt(st.leader).toString(16);
          },
          () => undefined,
        );
        // Quorum reads of consistent reads go to the leader where it is one of our endpoints.
        void this.store.preferLeader(this.cfg.probeTimeoutMs);
      }
      if (Date.now() - this.nodeKeepAliveAt > (this.cfg.nodeTtlSec * 1000) / 3) {
        // A failed keep-alive says nothing about the quorum (its stream may sit on a cut-off endpoint).
        await this.keepNodeAlive().catch((err) => this.opts.log?.('warn', 'could not keep this node\'s registration in etcd alive; trying again', err));
      }
    } catch (err) {
      if (started < this.lastAnswerAt) return;
      if (this.reachable) this.opts.log?.('warn', 'etcd cannot be reached with a quorum: writes fail with 503 and reads are marked stale', err);
      this.reachable = false;
      this.leader = null;
    } finally {
      this.probesRunning.delete(seq);
    }
  }

  // ---- this node in etcd ----

  async listening(address: { host: string; port: number }): Promise<void> {
    const next = `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
    if (next === this.opts.address) return;
    this.opts.address = next;
    // Same lease, new value: the other nodes' views follow through their watch.
    if (this.nodeLease !== null) await this.putNodeKey(this.nodeLease);
  }

  /** This node's key (its address, when it started), bound to its lease. */
  private async putNodeKey(lease: string): Promise<void> {
    await this.store.txn({ success: [{ request_put: { key: b(nodeKeyOf(this.layout, this.nodeId)), value: b(JSON.stringify({ address: this.opts.address, scheme: this.opts.peerApi?.scheme ?? 'http', startedAt: this.startedAt })), lease } }] });
  }

  /**
   * Registers this node under a new lease. The lease is kept only once the node's key is
   * written: a lease kept without it (the put failed) would be kept alive for ever while the
   * other nodes never list this one, and its share of the checks would run twice.
   */
  private async registerNode(): Promise<void> {
    const grant = await this.store.leaseGrant(this.cfg.nodeTtlSec);
    try {
      await this.putNodeKey(grant.ID);
    } catch (err) {
      // Best effort: left alone, the lease expires after nodeTtlSec anyway.
      void this.store.leaseRevoke(grant.ID).catch(() => undefined);
      throw err;
    }
    this.nodeLease = grant.ID;
    this.view.barrierLease = grant.ID;
    this.nodeKeepAliveAt = Date.now();
  }

  /** One keep-alive (or registration) of this node at a time: overlapping probes share it. */
  private keepNodeAlive(): Promise<void> {
    if (!this.keepingAlive) {
      const p = this.keepNodeAliveOnce();
      this.keepingAlive = p;
      const clear = (): void => {
        if (this.keepingAlive === p) this.keepingAlive = null;
      };
      p.then(clear, clear);
    }
    return this.keepingAlive;
  }

  private async keepNodeAliveOnce(): Promise<void> {
    if (this.nodeLease === null) return this.registerNode();
    const ttl = await this.store.keepAlive(this.nodeLease, this.cfg.probeTimeoutMs);
    if (ttl <= 0) {
      this.opts.log?.('warn', 'this node\'s registration in etcd expired (etcd was out of reach); registering again');
      this.nodeLease = null;
      await this.registerNode();
    } else {
      this.nodeKeepAliveAt = Date.now();
      // The lease lives but the key is not there (caught-up view): write it again.
      if (!this.view.nodes.has(this.nodeId) && this.view.progress >= this.etcdRevision) {
        await this.putNodeKey(this.nodeLease);
      }
    }
  }

  private nodesChanged(): void {
    if (this.closed || this.monitorTimer) return;
    // Joins and deaths often come in bursts: move the checks once.
    this.monitorTimer = setTimeout(() => {
      this.monitorTimer = null;
      this.restartMonitor();
    }, 100);
  }

  /** The nodes that share the active checks: the live ones in etcd, and always this one. */
  private liveNodes(): string[] {
    const ids = new Set(this.view.nodes.keys());
    ids.add(this.nodeId);
    return [...ids];
  }

  /** (Re)starts the health monitor on the instances this node owns by rendezvous hashing. */
  private restartMonitor(): void {
    if (this.opts.activeChecks === false || this.closed) return;
    if (this.monitor) {
      // The runs of the monitor being replaced stay counted (the totals are counters).
      this.pastRuns = addRuns(this.pastRuns, this.monitor.stats());
    }
    this.monitor?.close();
    const nodes = this.liveNodes();
    const mine = (i: { namespace: string; service: string; id: string }): boolean => ownerOf(instanceKey(i.namespace, i.service, i.id), nodes) === this.nodeId;
    const reg = this.registry;
    const hub = this.hub;
    const facade = {
      instance: (ns: string, svc: string, id: string): InstanceRecord | undefined => (mine({ namespace: ns, service: svc, id }) ? reg.instance(ns, svc, id) : undefined),
      listServices: (): ServiceState[] =>
        reg.listServices().map((s) => ({ ...s, instances: new Map([...s.instances].filter(([, r]) => mine(r.instance))) })),
    } as unknown as Registry;
    const filteredHub = {
      subscribe: (sub: Subscriber) =>
        hub.subscribe({
          services: sub.services,
          deliver: (events: WatchEvent[], revision: number) => {
            const own = events.filter((e) => mine(e.instance));
            if (own.length > 0) sub.deliver(own, revision);
          },
        }),
    } as unknown as Hub;
    this.monitor = new HealthMonitor(
      { registry: facade, hub: filteredHub, recordCheckResult: (ns, svc, id, checkId, specKey, r) => this.recordCheckResult(ns, svc, id, checkId, specKey, r) },
      { maxConcurrentChecks: this.opts.limits.maxConcurrentChecks, checkNetworks: this.checkNetworks, ...(this.opts.onCheckDenied ? { onDenied: this.opts.onCheckDenied } : {}), ...(this.opts.probes ? { probes: this.opts.probes } : {}), onError: () => undefined },
    );
    this.monitor.start();
  }

  // ---- check time rules ----

  /**
   * Consumer warnings this node set: kept while enough reporters keep reporting within the
   * window, cleared (reason `reported`) when they stop, as in standalone mode.
   */
  private reportsDue(): void {
    const now = this.opts.clock.now();
    for (const key of this.reports.due(now)) {
      const [namespace, service, id] = splitKey(key);
      const rec = this.registry.instance(namespace, service, id);
      if (!rec || !rec.instance.checks.some((c) => c.id === REPORTS_CHECK_ID)) {
        this.reports.clear(key);
      } else if (this.reports.warns(key, now)) {
        this.reports.watch(key, now);
      } else {
        this.reports.clear(key);
        const why = `consumer reports cleared: fewer than ${this.opts.limits.reportMinReporters} reporters within ${formatDuration(this.opts.limits.reportWindowMs)}`;
        this.write(() => {
          const cur = this.requireInstance(namespace, service, id);
          if (!cur.instance.checks.some((c) => c.id === REPORTS_CHECK_ID)) return this.unchanged(cur);
          const checks = cur.instance.checks.filter((c) => c.id !== REPORTS_CHECK_ID);
          return this.putPlan(cur, { ...cur.instance, checks, health: combinedHealth(checks) }, 'reported', why);
        }).catch(() => undefined);
      }
    }
  }

  /**
   * Every node's view keeps the deadlines of every check (its registry's check book, so
   * that a check's new owner has them at once); only the owner carries a due one out: a
   * ttl check that heard nothing turns critical, a persistent instance critical for its
   * deregisterCriticalAfter is deregistered.
   */
  private ttlDue(): void {
    if (this.closed || !this.reachable) return;
    this.reportsDue();
    const due = this.registry.checkDeadlinesDue();
    if (due.length === 0) return;
    const nodes = this.liveNodes();
    for (const d of due) {
      if (ownerOf(d.check.instanceKey, nodes) !== this.nodeId) continue;
      const [namespace, service, id] = splitKey(d.check.instanceKey);
      const rec = this.registry.instance(namespace, service, id);
      const action = rec ? dueAction(d, rec.instance) : null;
      if (!rec || !action) continue;
      const checkId = d.check.id;
      if (action.kind === 'show') this.putChecks(rec, checkId, action.state).catch(() => undefined);
      else this.deleteInstance(namespace, service, id, 'critical_timeout', action.detail, (cur) => cur.instance.checks.find((c) => c.id === checkId)?.status === 'critical').catch(() => undefined);
    }
  }

  // ---- leases ----

  async grantLease(ttlMs: number): Promise<LeaseGrant> {
    this.requireReachable();
    if (this.registry.leaseCount >= this.opts.limits.maxLeasesPerNode) {
      throw limitExceeded('maxLeasesPerNode', 'ttlMs', `the cluster holds ${this.registry.leaseCount} leases`, 'share one lease among all instances of a process, or raise the limit');
    }
    const ttlSec = Math.max(MIN_LEASE_TTL_SEC, Math.ceil(ttlMs / 1000));
    const grant = await this.guard('creating a lease', () => this.store.leaseGrant(ttlSec));
    if (grant.error) throw unavailable(`etcd refused the lease: ${grant.error}`);
    const granted = Number(grant.TTL) * 1000;
    const leaseId = leaseIdFromEtcd(grant.ID);
    const res = await this.guard('creating a lease', () => this.store.txn({ success: [{ request_put: { key: b(leaseKeyOf(this.layout, leaseId)), value: b(JSON.stringify({ ttlMs: granted })), lease: grant.ID } }] }));
    await this.view.waitFor(Number(res.header.revision), this.cfg.callTimeoutMs);
    this.attached.set(leaseId, Number(res.header.revision));
    return { leaseId, ttlMs: granted };
  }

  async keepAlive(leaseId: string): Promise<LeaseGrant> {
    this.requireReachable();
    const etcdId = leaseIdToEtcd(leaseId);
    if (etcdId === null) throw leaseNotFound(leaseId);
    const ttl = await this.guard('keeping the lease alive', () => this.store.keepAlive(etcdId));
    if (ttl <= 0) throw leaseNotFound(leaseId);
    return { leaseId, ttlMs: ttl * 1000 };
  }

  /**
   * A session on this node resumed the lease: its lease key is written again (naming this
   * node), which both cancels a detach pending on any node (its guard no longer holds)
   * and guards this node's own detach later.
   */
  async attachLease(leaseId: string): Promise<void> {
    const etcdId = leaseIdToEtcd(leaseId);
    if (etcdId === null || this.closed) return;
    this.cancelDetach(leaseId);
    const key = b(leaseKeyOf(this.layout, leaseId));
    // Guarded by the key as read: a lease another node is revoking right now is not
    // resumed (the client is told it is gone and takes a new one).
    for (let attempt = 0; attempt < 3; attempt++) {
      const cur = await this.guard('resuming the lease', () => this.store.range({ key }));
      const kv = cur.kvs[0];
      const value = kv ? decodeJson<StoredLease>(kv.value) : null;
      if (!kv || value?.revoking) throw leaseNotFound(leaseId);
      const ttlMs = value?.ttlMs || this.registry.lease(leaseId)?.ttlMs || 0;
      const res = await this.guard('resuming the lease', () =>
        this.store.txn({ compare: [{ key, target: 'Mod', result: 'Equal', mod_revision: kv.mod_revision }], success: [{ request_put: { key, value: b(JSON.stringify({ ttlMs, attached: this.nodeId })), lease: etcdId } }] }),
      );
      if (res.succeeded) {
        this.attached.set(leaseId, Number(res.header.revision));
        return;
      }
    }
  }

  /**
   * The session closed without a hand-over, so its process most likely died. etcd leases
   * cannot be shortened, so the lease is revoked after `graceMs` instead, unless a session
   * resumes it on any node first. Both steps are guarded transactions on the lease key:
   * the detach mark only if the key is as this node's session left it (nobody resumed it
   * elsewhere in between), the revoke only if the key still holds that mark (a resume on
   * any node rewrites it). A lease kept alive only with REST keep-alives after its session
   * closed is revoked too: the SDK resumes a session instead.
   */
  detachLease(leaseId: string, graceMs: number): void {
    const seen = this.attached.get(leaseId);
    const etcdId = leaseIdToEtcd(leaseId);
    const ttlMs = this.registry.lease(leaseId)?.ttlMs ?? 0;
    this.attached.delete(leaseId);
    if (seen === undefined || etcdId === null || this.closed || graceMs >= ttlMs) return;
    const key = b(leaseKeyOf(this.layout, leaseId));
    const detach = async (): Promise<void> => {
      const mark = await this.store.txn({ compare: [{ key, target: 'Mod', result: 'Equal', mod_revision: seen }], success: [{ request_put: { key, value: b(JSON.stringify({ ttlMs, detached: this.nodeId })), lease: etcdId } }] });
      if (!mark.succeeded || this.closed) return; // resumed elsewhere, or already gone
      const marked = Number(mark.header.revision);
      const timer = setTimeout(() => {
        this.detachTimers.delete(leaseId);
        void this.endDetached(leaseId, etcdId, key, marked, ttlMs).catch((err) => this.opts.log?.('warn', `could not end lease ${leaseId} after its session closed; it ends after its TTL`, err));
      }, graceMs);
      timer.unref();
      this.detachTimers.set(leaseId, timer);
    };
    detach().catch((err) => this.opts.log?.('warn', `could not mark lease ${leaseId} as detached; it ends after its TTL`, err));
  }

  private async endDetached(leaseId: string, etcdId: string, key: Buffer, marked: number, ttlMs: number): Promise<void> {
    if (this.closed) return;
    const end = await this.store.txn({ compare: [{ key, target: 'Mod', result: 'Equal', mod_revision: marked }], success: [{ request_put: { key, value: b(JSON.stringify({ ttlMs, revoking: true, reason: 'connection_lost' })), lease: etcdId } }] });
    if (!end.succeeded) return; // a session resumed it
    this.view.markRevoking(leaseId, 'connection_lost');
    await this.store.leaseRevoke(etcdId);
  }

  onLeaseEnded(listener: LeaseEndedListener): () => void {
    this.leaseListeners.add(listener);
    return () => this.leaseListeners.delete(listener);
  }

  private cancelDetach(leaseId: string): void {
    const pending = this.detachTimers.get(leaseId);
    if (pending) clearTimeout(pending);
    this.detachTimers.delete(leaseId);
  }

  private leaseEnded(leaseId: string, reason: 'lease_expired' | 'lease_revoked'): void {
    this.attached.delete(leaseId);
    this.cancelDetach(leaseId);
    for (const l of this.leaseListeners) l(leaseId, reason);
  }

  async revokeLease(leaseId: string): Promise<number> {
    this.requireReachable();
    const etcdId = leaseIdToEtcd(leaseId);
    if (etcdId === null) throw leaseNotFound(leaseId);
    if (!this.registry.lease(leaseId)) {
      await this.barrier();
      if (!this.registry.lease(leaseId)) throw leaseNotFound(leaseId);
    }
    const ttlMs = this.registry.lease(leaseId)?.ttlMs ?? 0;
    const key = b(leaseKeyOf(this.layout, leaseId));
    // Marks the lease as revoked (so that every node's history says so), then revokes it.
    const mark = await this.guard('revoking the lease', () =>
      this.store.txn({ compare: [{ key, target: 'Version', result: 'Greater', version: 0 }], success: [{ request_put: { key, value: b(JSON.stringify({ ttlMs, revoking: true })), lease: etcdId } }] }),
    );
    if (!mark.succeeded) throw leaseNotFound(leaseId);
    this.view.markRevoking(leaseId);
    let res: RPC.ILeaseRevokeResponse;
    try {
      res = await this.guard('revoking the lease', () => this.store.leaseRevoke(etcdId));
    } catch (err) {
      if (/not found/i.test(String((err as Error).message))) throw leaseNotFound(leaseId);
      throw err;
    }
    const revision = Number(res.header.revision);
    await this.view.waitFor(revision, this.cfg.callTimeoutMs);
    return revision;
  }

  // ---- instances ----

  register(item: RegistrationItem, opts?: WriteOptions): Promise<number> {
    return this.registerItems([item], opts);
  }

  registerBatch(items: RegistrationItem[]): Promise<number> {
    return this.registerItems(items);
  }

  private registerItems(items: RegistrationItem[], opts?: WriteOptions): Promise<number> {
    // One guard per instance and one per distinct lease, in one transaction.
    const guards = items.length + new Set(items.map((i) => i.input.leaseId).filter((l) => l !== null)).size;
    if (guards > this.cfg.maxTxnOps) {
      throw limitExceeded('maxTxnOps', 'instances', `${items.length} instances on their leases need ${guards} guards in one etcd transaction, which takes at most ${this.cfg.maxTxnOps} operations`, 'split the batch, or raise etcd\'s --max-txn-ops');
    }
    return this.write(() => this.planRegistration(items), opts);
  }

  private planRegistration(items: RegistrationItem[]): Plan {
    const reg = this.registry;
    const compare: RPC.ICompare[] = [];
    const success: RPC.IRequestOp[] = [];
    const added = new Map<string, number>();
    const leases = new Set<string>();
    let newInstances = 0;
    let unchangedRevision = 0;
    const at = Date.now();
    for (const item of items) {
      const prev = reg.instance(item.namespace, item.service, item.id);
      const key = b(instanceKeyOf(this.layout, item.namespace, item.service, item.id));
      const leaseId = item.input.leaseId;
      let etcdLease: string | null = null;
      if (leaseId !== null) {
        etcdLease = leaseIdToEtcd(leaseId);
        const lease = reg.lease(leaseId);
        if (!lease || etcdLease === null) throw leaseNotFound(leaseId);
        if (prev?.instance.leaseId !== leaseId) {
          const n = (added.get(leaseId) ?? 0) + 1;
          added.set(leaseId, n);
          if (lease.instances.size + n > this.opts.limits.maxInstancesPerLease) {
            throw limitExceeded('maxInstancesPerLease', 'leaseId', `lease ${leaseId} already holds ${lease.instances.size} instances`, 'use another lease for more instances, or raise the limit');
          }
        }
        if (!leases.has(leaseId)) {
          leases.add(leaseId);
          compare.push({ key: b(leaseKeyOf(this.layout, leaseId)), target: 'Version', result: 'Greater', version: 0 });
        }
      }
      compare.push(prev ? { key, target: 'Mod', result: 'Equal', mod_revision: prev.instance.modRevision } : { key, target: 'Version', result: 'Equal', version: 0 });
      if (prev && sameInput(prev, item.input, item.input.checks.map(completeCheckSpec))) {
        unchangedRevision = Math.max(unchangedRevision, prev.instance.modRevision);
        continue;
      }
      if (!prev) newInstances++;
      const instance = buildInstance(item, prev);
      const reason: PutReason = prev ? 'updated' : 'registered';
      const detail = prev ? describeUpdate(prev.instance, instance) : describeNew(instance);
      const put: RPC.IPutRequest = { key, value: b(encodeInstance(instance, item.input.checks, reason, detail, at)) };
      if (etcdLease !== null) put.lease = etcdLease;
      success.push({ request_put: put });
    }
    if (reg.instanceCount + newInstances > this.opts.limits.maxInstancesPerNode) {
      throw limitExceeded('maxInstancesPerNode', 'instances', `the cluster holds ${reg.instanceCount} instances`, 'raise the limit or spread services over another cluster');
    }
    return { compare, success, unchangedRevision };
  }

  deregister(namespace: string, service: string, id: string, opts?: WriteOptions): Promise<number> {
    return this.deleteInstance(namespace, service, id, 'deregistered', undefined, undefined, opts);
  }

  /** Deletes an instance (and its ttl report keys), saying why, guarded by its revision. */
  private deleteInstance(namespace: string, service: string, id: string, reason: DeleteReason, detail?: string, still?: (rec: InstanceRecord) => boolean, opts?: WriteOptions): Promise<number> {
    return this.write(() => {
      const prev = this.requireInstance(namespace, service, id);
      if (still && !still(prev)) return this.unchanged(prev);
      const key = instanceKeyOf(this.layout, namespace, service, id);
      const heard = heardPrefixOf(this.layout, namespace, service, id);
      const why: WhyValue = { [instanceKey(namespace, service, id)]: detail === undefined ? { reason } : { reason, detail } };
      return {
        compare: [{ key: b(key), target: 'Mod', result: 'Equal', mod_revision: prev.instance.modRevision }],
        success: [
          { request_delete_range: { key: b(key) } },
          { request_delete_range: { key: b(heard), range_end: prefixEnd(heard) } },
          { request_put: { key: b(whyKeyOf(this.layout)), value: b(JSON.stringify(why)) } },
        ],
        unchangedRevision: 0,
      };
    }, opts);
  }

  setStatus(namespace: string, service: string, id: string, status: AdminStatus, reason: 'status_changed' | 'drained' = 'status_changed'): Promise<number> {
    return this.write(() => {
      const rec = this.requireInstance(namespace, service, id);
      if (rec.instance.status === status) return this.unchanged(rec);
      const instance: Instance = { ...rec.instance, status };
      return this.putPlan(rec, instance, reason, `${rec.instance.status} -> ${status}`);
    });
  }

  private unchanged(rec: InstanceRecord): Plan {
    const key = b(instanceKeyOf(this.layout, rec.instance.namespace, rec.instance.service, rec.instance.id));
    return { compare: [{ key, target: 'Mod', result: 'Equal', mod_revision: rec.instance.modRevision }], success: [], unchangedRevision: rec.instance.modRevision };
  }

  /** A put of an existing instance, kept on its lease, guarded by its mod revision. */
  private putPlan(rec: InstanceRecord, instance: Instance, reason: PutReason, detail: string): Plan {
    const i = rec.instance;
    const key = b(instanceKeyOf(this.layout, i.namespace, i.service, i.id));
    const put: RPC.IPutRequest = { key, value: b(encodeInstance(instance, rec.specs, reason, detail, Date.now())) };
    const lease = i.leaseId === null ? null : leaseIdToEtcd(i.leaseId);
    if (lease !== null) put.lease = lease;
    return { compare: [{ key, target: 'Mod', result: 'Equal', mod_revision: i.modRevision }], success: [{ request_put: put }], unchangedRevision: 0 };
  }

  // ---- health ----

  /**
   * A result of an active check this node runs. The counters are this node's (the owner's);
   * a result that lost a race with another write is dropped: the next run reports again.
   */
  async recordCheckResult(namespace: string, service: string, id: string, checkId: string, specKey: string | null, result: CheckResult): Promise<number> {
    if (this.closed) return this.registry.revision;
    const rec = this.registry.instance(namespace, service, id);
    const tracked = this.registry.trackedCheck(namespace, service, id, checkId);
    if (!rec || !tracked || (specKey !== null && tracked.specKey !== specKey)) return rec?.instance.modRevision ?? this.registry.revision;
    const shown = rec.instance.checks.find((c) => c.id === checkId);
    if (!shown) return rec.instance.modRevision;
    const next = nextCheckState(tracked.spec, shown, tracked.counters, { status: result.status, output: clipOutput(result.output, this.opts.limits.maxCheckOutputLength) });
    if (!next) return rec.instance.modRevision;
    if (!this.reachable) throw unavailable('recording a check result');
    return this.putChecks(rec, checkId, next);
  }

  private async putChecks(rec: InstanceRecord, checkId: string, state: CheckState): Promise<number> {
    const { checks, health, detail, reportsCleared } = withCheckState(rec.instance.checks, checkId, state);
    if (reportsCleared) this.reports.clear(instanceKey(rec.instance.namespace, rec.instance.service, rec.instance.id));
    const instance: Instance = { ...rec.instance, checks, health };
    const plan = this.putPlan(rec, instance, state.status === 'passing' ? 'check_passed' : 'check_failed', detail);
    const res = await this.guard('recording a check result', () => this.store.txn(plan));
    const revision = Number(res.header.revision);
    await this.view.waitFor(revision, this.cfg.callTimeoutMs);
    return res.succeeded ? revision : (this.registry.instance(rec.instance.namespace, rec.instance.service, rec.instance.id)?.instance.modRevision ?? revision);
  }

  async reportCheck(namespace: string, service: string, id: string, checkId: string, result: CheckResult): Promise<number> {
    this.requireReachable();
    let rec = this.registry.instance(namespace, service, id);
    if (!rec) {
      await this.barrier();
      rec = this.requireInstance(namespace, service, id);
    }
    this.registry.requireTtlCheck(namespace, service, id, checkId);
    // The report itself restarts the TTL on every node (the owner times it).
    const put: RPC.IPutRequest = { key: b(heardKeyOf(this.layout, namespace, service, id, checkId)), value: b(JSON.stringify({ at: Date.now() })) };
    const lease = rec.instance.leaseId === null ? null : leaseIdToEtcd(rec.instance.leaseId);
    if (lease !== null) put.lease = lease;
    await this.guard('recording a report', () => this.store.txn({ success: [{ request_put: put }] }));
    return this.recordCheckResult(namespace, service, id, checkId, null, result);
  }

  async setServiceSettings(namespace: string, service: string, settings: ServiceSettings): Promise<number> {
    this.requireReachable();
    const key = b(settingsKeyOf(this.layout, namespace, service));
    const op: RPC.IRequestOp = settings.protectThreshold === null ? { request_delete_range: { key } } : { request_put: { key, value: b(JSON.stringify(settings)) } };
    const res = await this.guard('changing service settings', () => this.store.txn({ success: [op] }));
    const revision = Number(res.header.revision);
    await this.view.waitFor(revision, this.cfg.callTimeoutMs);
    return this.registry.serviceRevision(namespace, service);
  }

  /**
   * A consumer's report. Reporters of an instance are counted by one node, the one that
   * runs its checks (rendezvous hashing over the live nodes), so that consumers reporting
   * through different nodes add up: a report taken elsewhere is forwarded to it over its
   * REST address (docs/cp.md). When that node cannot be asked (no routable address, no
   * answer within apReportTimeoutMs, MAX_FORWARDED_REPORTS already waiting, or it does not
   * know the instance yet), this node counts it. The
   * warning itself is written to etcd like any other change.
   */
  async reportInstance(namespace: string, service: string, id: string, report: ConsumerReport, opts: { forwarded?: boolean } = {}): Promise<{ revision: number; reporters: number; warning: boolean }> {
    this.requireReachable();
    let rec = this.registry.instance(namespace, service, id);
    if (!rec) {
      await this.barrier();
      rec = this.requireInstance(namespace, service, id);
    }
    const key = instanceKey(namespace, service, id);
    const counter = ownerOf(key, this.liveNodes());
    if (!opts.forwarded && counter !== undefined && counter !== this.nodeId && this.reportsInFlight < MAX_FORWARDED_REPORTS) {
      const counted = await this.forwardReport(counter, namespace, service, id, report);
      if (counted) return counted;
    }
    const now = this.opts.clock.now();
    const reporters = this.reports.add(key, report, now);
    const warned = rec.instance.checks.some((c) => c.id === REPORTS_CHECK_ID);
    if (warned || reporters < this.opts.limits.reportMinReporters) return { revision: rec.instance.modRevision, reporters, warning: warned };
    this.reports.watch(key, now);
    const state = this.reports.state(key, now);
    // Built from the instance as the write finds it, so that a change in between is kept.
    const revision = await this.write(() => {
      const cur = this.requireInstance(namespace, service, id);
      if (cur.instance.checks.some((c) => c.id === REPORTS_CHECK_ID)) return this.unchanged(cur);
      const checks = [...cur.instance.checks, state];
      return this.putPlan(cur, { ...cur.instance, checks, health: combinedHealth(checks) }, 'reported', state.output);
    });
    return { revision, reporters, warning: true };
  }

  /**
   * The base URL of another node's API, as it announced it in its nodes/ key (a node of an
   * earlier version announced no scheme: as this node serves); null when it announced no
   * address another node can call.
   */
  private nodeUrl(node: string): { url: string; address: string } | null {
    const announced = this.view.nodes.get(node);
    const address = announced?.address ?? '';
    const host = address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    if (!address || /:0$/.test(address) || host === '' || host === '0.0.0.0' || host === '::') return null;
    return { url: `${announced?.scheme ?? this.opts.peerApi?.scheme ?? 'http'}://${address}`, address };
  }

  /**
   * Sends a registration or deregistration to the node that writes for the cluster, the
   * live node with the smallest id (writer-link.ts), answered once this node's view has
   * the write's revision, as a write of its own is. `local` makes it on this node instead:
   * when it is that node, that node announced no address, the link is not up or is full,
   * or the writer refused the write before making it.
   */
  forwardWrite(w: ForwardedWrite, local: () => Promise<number>): Promise<number> {
    if (this.writerLink === null || this.closed || !this.reachable) return local();
    let writer = this.nodeId;
    for (const id of this.view.nodes.keys()) if (id < writer) writer = id;
    if (writer === this.nodeId) return local();
    const to = this.nodeUrl(writer);
    const sent = to === null ? null : this.writerLink.send(writer, to.url, w);
    if (sent === null) return local();
    return sent.then(
      async (revision) => {
        await this.seeWrite(revision);
        return revision;
      },
      // Refused before it was made (the writer is shutting down, say): made here.
      (err: unknown) => (err instanceof NotTaken ? local() : Promise.reject(err)),
    );
  }

  private async forwardReport(node: string, namespace: string, service: string, id: string, report: ConsumerReport): Promise<{ revision: number; reporters: number; warning: boolean } | null> {
    const to = this.nodeUrl(node);
    if (to === null) return null;
    const { url, address } = to;
    const timeoutMs = this.opts.limits.apReportTimeoutMs;
    const peer = this.opts.peerApi;
    const failed = (f: ForwardFailure): null => {
      this.forwardFailures.note(node, f);
      return null;
    };
    this.reportsInFlight++;
    try {
      const token = peer?.token() ?? null;
      const res = await request(`${url}/v1/services/${encodeURIComponent(service)}/instances/${encodeURIComponent(id)}/reports?namespace=${encodeURIComponent(namespace)}`, {
        method: 'POST',
        ...(peer?.dispatcher ? { dispatcher: peer.dispatcher } : {}),
        headers: { 'content-type': 'application/json', [FORWARDED_REPORT_HEADER]: this.nodeId, ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
        body: JSON.stringify(report),
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        signal: AbortSignal.timeout(timeoutMs),
      });
      const body = (await res.body.json().catch(() => undefined)) as { revision?: unknown; reporters?: unknown; warning?: unknown; code?: unknown; detail?: unknown } | undefined;
      if (res.statusCode === 401 || res.statusCode === 403) return failed(refusedForward(node, url, res.statusCode, body));
      if (res.statusCode !== 200 || typeof body?.revision !== 'number' || typeof body.reporters !== 'number') {
        return failed({ kind: 'other', reason: `node ${node} at ${url} answered ${res.statusCode}${typeof body?.code === 'string' ? ` ${body.code}` : ''}` });
      }
      this.forwardedReports++;
      return { revision: body.revision, reporters: body.reporters, warning: body.warning === true };
    } catch (err) {
      return failed(failedForward(node, url, address, err));
    } finally {
      this.reportsInFlight--;
    }
  }

  checkStats(): CheckStats {
    const now = this.monitor?.stats() ?? noCheckStats();
    return { ...now, ...addRuns(now, this.pastRuns) };
  }

  // ---- the write loop ----

  /**
   * Plans a write from the view and commits it as one etcd transaction guarded by what the
   * plan read. When a guard fails (the view was behind), the view catches up to the
   * transaction's revision and the write is planned again. "Not found" answers from the
   * view are confirmed with a consistent read before they are given.
   *
   * A forwarded write (`opts`): no plan is made after `planBy` (performance.now() ms) or
   * once `signal` is aborted (its sender's link closed), the first plan included; the
   * write is refused as not made (NOT_READY) and nothing is sent to etcd. A plan made in
   * time whose transaction lands later carries its guards, so it cannot overwrite a write
   * made meanwhile; planning again after the guards failed could.
   */
  private async write(plan: () => Plan, opts?: WriteOptions): Promise<number> {
    const planBy = opts?.planBy;
    this.requireReachable(opts?.forwarded === true);
    let confirmed = false;
    for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
      if (opts?.signal?.aborted) throw notPlanned(attempt, 'the link of the node that sent the write closed before it was planned');
      if (planBy !== undefined && performance.now() >= planBy) throw notPlanned(attempt, 'the write could not be planned within the time its sending node waits for it');
      let p: Plan;
      try {
        p = plan();
      } catch (err) {
        if (!confirmed && err instanceof SwitchboardError && (err.code === 'INSTANCE_NOT_FOUND' || err.code === 'LEASE_NOT_FOUND')) {
          confirmed = true;
          await this.barrier();
          continue;
        }
        throw err;
      }
      const res = await this.guard('writing', () => this.batcher.submit(p));
      // A write whose guards failed is not planned again from a view that cannot show why.
      if (!(await this.seeWrite(res.revision)) && !res.succeeded) throw unavailable(`writing: this node's view of etcd is behind (revision ${this.view.progress}, the write's ${res.revision})`);
      if (res.succeeded) return p.success.length === 0 ? p.unchangedRevision : res.revision;
    }
    throw new SwitchboardError('STORE_UNAVAILABLE', `the write kept racing with other writes to the same keys (${MAX_WRITE_ATTEMPTS} attempts)`, { retryAfterSec: 1, hint: 'retry; other clients are changing the same instances right now' });
  }

  /**
   * Waits (at most callTimeoutMs) until this node's view has a write's revision: one of its
   * own or one the writer node made for it. When the watch did not bring it, a stream
   * silent that long is stuck and is replaced (one still delivering is only behind, and
   * replacing it would set it further back).
   */
  private async seeWrite(revision: number): Promise<boolean> {
    const seen = await this.view.waitFor(revision, this.cfg.callTimeoutMs);
    if (!seen && performance.now() - this.view.lastHeard > this.cfg.callTimeoutMs) this.view.restart(null, `the watch brought nothing for ${this.cfg.callTimeoutMs} ms, not even revision ${revision} (a write made for this node)`);
    return seen;
  }

  /** Runs an etcd call; "etcd did not answer" becomes 503 STORE_UNAVAILABLE. */
  private async guard<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof StoreUnavailable || isUnavailable(err)) {
        // The prober decides whether etcd as a whole is out of reach (one endpoint may be).
        void this.probe();
        throw unavailable(`${what}: ${(err as Error).message}`);
      }
      if (err instanceof QueueFull) throw unavailable(`${what}: ${err.message}`, 1);
      if (/lease not found/i.test(String((err as Error).message))) throw leaseNotFound('(unknown)');
      throw err;
    }
  }

  /**
   * Refuses a write while the node is closing or cannot reach an etcd quorum. `forwarded`:
   * a write another node sent here (it has a budget); it is refused as not made
   * (NOT_READY), so that the sending node, which may reach etcd, makes it itself.
   */
  private requireReachable(forwarded = false): void {
    if (this.closed) throw new SwitchboardError('NOT_READY', 'the node is shutting down', { retryAfterSec: 1, hint: 'send requests to another node' });
    if (!this.reachable) {
      // Refused writes start a probe (one at a time): the node takes writes again as soon as
      // a quorum answers, not at the next tick of the prober.
      void this.probe();
      if (forwarded) throw new SwitchboardError('NOT_READY', 'not made: no etcd quorum is reachable from the node that writes for the cluster', { retryAfterSec: 1, hint: 'the sending node makes the write itself' });
      throw unavailable('no etcd quorum is reachable from this node', 1);
    }
  }

  private requireInstance(namespace: string, service: string, id: string): InstanceRecord {
    return this.registry.requireInstance(namespace, service, id);
  }

  // ---- status and metrics ----

  storeStatus(): StoreStatus {
    const last = this.store.lastContact;
    return {
      kind: 'etcd',
      endpoints: this.opts.endpoints,
      reachable: this.reachable,
      leader: this.leader,
      revision: this.etcdRevision,
      viewRevision: this.view.progress,
      lagMs: this.view.progress >= this.etcdRevision ? 0 : Math.max(0, Date.now() - this.freshAt),
      lastContactMs: last === null ? null : Date.now() - last,
      // How this node reaches etcd, never with what: no password, no key.
      tls: this.opts.endpoints.every((u) => u.startsWith('https://')),
      clientCert: this.opts.tls?.cert != null,
      auth: this.opts.auth !== undefined,
      username: this.opts.auth?.username ?? null,
    };
  }

  cluster(): ClusterStatus {
    const members: ClusterMember[] = [...this.view.nodes].map(([id, n]) => ({ id, address: n.address, self: id === this.nodeId, reachable: true, lastSeenMs: null, revision: this.view.progress }));
    if (!this.view.nodes.has(this.nodeId)) members.push({ id: this.nodeId, address: this.opts.address, self: true, reachable: true, lastSeenMs: null });
    members.sort((a, b2) => (a.id < b2.id ? -1 : a.id > b2.id ? 1 : 0));
    return {
      members,
      ready: true,
      store: this.storeStatus(),
      prefix: this.opts.prefix,
      expiry: 'etcd: leases end when etcd expires them; self-preservation does not apply in cp mode',
      checksOwned: this.checkStats().scheduled,
      watchRestarts: this.view.watchRestarts,
      writeBatches: { batches: this.batcher.batches, writes: this.batcher.writes, held: this.batcher.held, holdsTimedOut: this.batcher.holdsTimedOut },
      writeForwarding: { writer: this.writerLink?.writer ?? null, forwarded: this.writerLink?.forwarded ?? 0, lost: this.writerLink?.lost ?? 0, clockAgeMs: this.writerLink?.clockAgeMs ?? null },
      consistentReadsVia: this.store.consistentReadsVia,
      consistentReadsLeader: this.reachable ? this.store.consistentReadsLeader : null,
      reportsForwarded: this.forwardedReports,
      reportsNotForwarded: { ...this.forwardFailures.counts },
      barrierWrites: this.view.barrierWrites,
    };
  }

  registerMetrics(registry: MetricsRegistry): void {
    const roundTrips = new promClient.Histogram({
      name: 'switchboard_etcd_round_trip_seconds',
      help: 'Round trips of this node to etcd, by RPC and outcome',
      labelNames: ['method', 'outcome'] as const,
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    });
    this.metrics = { roundTrips };
    const self = this;
    new promClient.Gauge({
      name: 'switchboard_etcd_reachable',
      help: '1 when this node reached an etcd quorum at its last probe',
      registers: [registry],
      collect() {
        this.set(self.reachable ? 1 : 0);
      },
    });
    new promClient.Gauge({
      name: 'switchboard_etcd_view_lag_revisions',
      help: 'etcd revisions this node\'s view is behind the last revision confirmed by a quorum',
      registers: [registry],
      collect() {
        this.set(Math.max(0, self.etcdRevision - self.view.progress));
      },
    });
    new promClient.Gauge({
      name: 'switchboard_etcd_view_stale_seconds',
      help: 'How long ago this node\'s view was last known to hold every confirmed write',
      registers: [registry],
      collect() {
        this.set(Math.max(0, Date.now() - self.freshAt) / 1000);
      },
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.probeTimer);
    clearInterval(this.ttlTimer);
    if (this.monitorTimer) clearTimeout(this.monitorTimer);
    for (const t of this.detachTimers.values()) clearTimeout(t);
    this.detachTimers.clear();
    this.monitor?.close();
    this.writerLink?.close();
    // Writes still waiting for a transaction are refused (503 NOT_READY: never sent).
    this.batcher.close(new SwitchboardError('NOT_READY', 'the node is shutting down', { retryAfterSec: 1, hint: 'send requests to another node' }));
    // Leaving: other nodes take this node's checks at once.
    if (this.nodeLease !== null) await this.store.leaseRevoke(this.nodeLease).catch(() => undefined);
    this.view.close();
    this.store.close();
  }
}


/** After the link to the writer failed, how long a node writes itself before it tries again. */
const WRITER_RETRY_MS = 1_000;
/** The same after the writer refused this node's token (a forward token: reports only). */
const WRITER_REFUSED_RETRY_MS = 10 * 60_000;

function buildInstance(item: RegistrationItem, prev: InstanceRecord | undefined): Instance {
  // Revisions are etcd's: the view stamps them when the change comes back from the watch.
  return instanceFromRegistration(item, prev, 0);
}



type RunTotals = Pick<CheckStats, 'runs' | 'timeouts' | 'denied'>;

/** Check run totals of two schedulers added up. */
function addRuns(a: RunTotals, b: RunTotals): RunTotals {
  return { runs: { passing: a.runs.passing + b.runs.passing, warning: a.runs.warning + b.runs.warning, critical: a.runs.critical + b.runs.critical }, timeouts: a.timeouts + b.timeouts, denied: a.denied + b.denied };
}
