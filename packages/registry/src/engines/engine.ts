/** What the API needs from an engine, whatever the mode. */
import type { AdminStatus, CheckResult, ClusterStatus, ConsumerReport, LeaseGrant, MemberRemoval, Mode, ServiceSettings } from '@switchboard/protocol';
import type { Registry as MetricsRegistry } from 'prom-client';
import type { Registry, RegistrationItem } from '../core/registry.js';
import type { CheckStats } from '../health/monitor.js';
import type { CheckNetworks } from '../health/networks.js';
import type { StorageObservers } from '../storage/observer.js';
import type { Hub } from './hub.js';

/** cp: the header on a consumer report one node forwards to the node that counts it (its value: the sender's node id). */
export const FORWARDED_REPORT_HEADER = 'x-switchboard-forwarded-report';

/**
 * cp: the header on the session a node opens to the node that writes for the cluster (its
 * value: the sender's node id). Requests on such a session are never sent on again, and
 * it takes no lease messages.
 */
export const FORWARDED_WRITES_HEADER = 'x-switchboard-forwarded-writes';

/** How a write may be made. */
export interface WriteOptions {
  /**
   * Always true: options are given only to a write that another cp node forwarded over its
   * link, and this marks it so (a refusal is then NOT_READY, "not made", so that the
   * sender makes the write itself, where a client's own write would get 503).
   */
  forwarded: true;
  /**
   * The write is planned no later than this (performance.now() ms), or refused with 503
   * and not made: a write forwarded by another cp node, whose sender stops waiting for it
   * (docs/cp.md, *One node writes*). Standalone and ap writes are planned when called.
   */
  planBy?: number;
  /**
   * Aborted when the sender can no longer be answered (its link closed): the write is then
   * not planned again either (a retry of it may be made another way meanwhile).
   */
  signal?: AbortSignal;
}

/** cp: a registration or deregistration sent to the node that writes for the cluster, as a session request. */
export interface ForwardedWrite {
  type: 'register' | 'deregister';
  namespace: string;
  service: string;
  instanceId: string;
  /** register: the instance as the client sent it (the writer checks it again). */
  instance?: unknown;
}

/** Makes a write through the node that writes for the cluster where the engine has one (cp), else `local()`. */
export function writeThrough(engine: Pick<Engine, 'forwardWrite'>, w: ForwardedWrite, local: () => Promise<number>): Promise<number> {
  return engine.forwardWrite ? engine.forwardWrite(w, local) : local();
}

/** Told of each lease that ends (expired or revoked), after it is durable. */
export type LeaseEndedListener = (leaseId: string, reason: 'lease_expired' | 'lease_revoked') => void;

export interface Engine {
  readonly mode: Mode;
  readonly nodeId: string;
  /** The read model: reads are served from it without waiting. */
  readonly registry: Registry;
  readonly hub: Hub;
  readonly durable: boolean;
  readonly dataDir: string | null;

  grantLease(ttlMs: number): Promise<LeaseGrant>;
  keepAlive(leaseId: string): Promise<LeaseGrant>;
  revokeLease(leaseId: string): Promise<number>;
  /** The lease's session closed without a hand-over: end it after `graceMs`. */
  detachLease(leaseId: string, graceMs: number): void;
  /** Called with each lease that ends (expired or revoked), after it is durable. */
  onLeaseEnded(listener: LeaseEndedListener): () => void;
  register(item: RegistrationItem, opts?: WriteOptions): Promise<number>;
  registerBatch(items: RegistrationItem[]): Promise<number>;
  deregister(namespace: string, service: string, id: string, opts?: WriteOptions): Promise<number>;
  /** `drained` when the drain call set it (the history says so). */
  setStatus(namespace: string, service: string, id: string, status: AdminStatus, reason?: 'status_changed' | 'drained'): Promise<number>;
  /** A result of an active check run by this node (see Registry.recordCheckResult). */
  recordCheckResult(namespace: string, service: string, id: string, checkId: string, specKey: string, result: CheckResult): Promise<number>;
  /** A report into a ttl check. */
  reportCheck(namespace: string, service: string, id: string, checkId: string, result: CheckResult): Promise<number>;
  setServiceSettings(namespace: string, service: string, settings: ServiceSettings): Promise<number>;
  /**
   * A consumer's report about an instance (see Registry.reportInstance). `forwarded`: another
   * node of the cluster sent it here to be counted (cp), so it is counted here.
   */
  reportInstance(namespace: string, service: string, id: string, report: ConsumerReport, opts?: { forwarded?: boolean }): Promise<{ revision: number; reporters: number; warning: boolean }>;
  /** The active checks this node runs. */
  checkStats(): CheckStats;
  /** The networks this node's checks may reach (registrations whose check targets it refuses are answered 400). */
  readonly checkNetworks: CheckNetworks;
  /**
   * A session (on this node) now keeps the lease: cp notes it in etcd, so that a session
   * of the lease that closed on another node does not end it after its grace.
   */
  attachLease?(leaseId: string): Promise<void>;
  /**
   * The REST API is listening at this address (the port the OS chose when 0 was asked):
   * cp re-announces the node with it, so that other nodes and operators see a real port.
   */
  listening?(address: { host: string; port: number }): Promise<void>;
  /** ap and cp: members, reachability, lag, the store (in /v1/status as `cluster`). */
  cluster?(): ClusterStatus;
  /**
   * ap: an operator removes a member that is gone for good (DELETE /v1/cluster/members/{id});
   * absent in the other modes, where the call is refused.
   */
  removeMember?(id: string): Promise<MemberRemoval>;
  /** Adds the mode's own metrics (replication lag, etcd round trips, ...) to /metrics. */
  registerMetrics?(registry: MetricsRegistry): void;
  /** ap with peer TLS: new certificate revocation lists (SIGHUP); returns how many peer links were made again. */
  reloadPeerRevocationLists?(crl: Buffer[]): number;
  /** The storage's reports (group commits), when the engine has local storage. */
  readonly storageObservers?: StorageObservers;
  /**
   * cp: what a read may answer. `consistent`: resolves once the read model reflects every
   * write completed before the call (503 STORE_UNAVAILABLE when that cannot be known);
   * otherwise says whether the read model may be stale, and since how long.
   */
  readFreshness?(consistent: boolean): Promise<{ stale: boolean; staleMs: number }>;
  /**
   * cp: sends a registration or deregistration to the node that writes for the cluster
   * and resolves with its revision once this node's view has it; `local` makes it on this
   * node instead (it is that node, the link to it is not up, or the writer did not take it).
   */
  forwardWrite?(w: ForwardedWrite, local: () => Promise<number>): Promise<number>;
  close(): Promise<void>;
}
