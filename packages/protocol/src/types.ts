/** Wire types of REST API v1 (api-v1.md). Field names are camelCase. */

export const ADMIN_STATUSES = ['up', 'draining', 'out_of_service'] as const;
export type AdminStatus = (typeof ADMIN_STATUSES)[number];

export const HEALTH_STATES = ['passing', 'warning', 'critical'] as const;
export type Health = (typeof HEALTH_STATES)[number];

export const PROTOCOLS = ['http', 'https', 'grpc', 'tcp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

export const CHECK_TYPES = ['http', 'tcp', 'grpc', 'ttl'] as const;
export type CheckType = (typeof CHECK_TYPES)[number];

export const MODES = ['standalone', 'ap', 'cp'] as const;
export type Mode = (typeof MODES)[number];

/** A check as declared at registration, after validation and defaults. */
export interface CheckSpec {
  id: string;
  type: CheckType;
  /**
   * http: the URL to GET (default `http://<address>:<port>/`); tcp and grpc: `host:port`
   * (default: the instance's). Unused by ttl checks.
   */
  target: string | null;
  intervalMs: number;
  timeoutMs: number;
  /** ttl checks: how long a report stays valid. */
  ttlMs: number | null;
  /** Each run is moved by a random amount in [-jitterMs, +jitterMs] so that checks spread out. */
  jitterMs: number;
  /** http: a substring the answer's body must contain for the check to pass. */
  expectBody: string | null;
  /** grpc: the service name sent in grpc.health.v1 HealthCheckRequest ("" = the whole server). */
  grpcService: string | null;
  /** Consecutive passing results before a failing check shows passing again. */
  passingThreshold: number;
  /** Consecutive failing results (warning or critical) before a passing check shows failing. */
  criticalThreshold: number;
  /**
   * Persistent instances only: deregister the instance (reason `critical_timeout`) once this
   * check has been critical for this long. null: never.
   */
  deregisterCriticalAfterMs: number | null;
}

/** The id of the check state that shows a warning raised by consumer reports (type `reports`). */
export const REPORTS_CHECK_ID = 'consumer-reports';

/** The type of a check state: a declared check, or `reports` (consumer reports, not declared). */
export type CheckStateType = CheckType | 'reports';

/** A check as reported with an instance. */
export interface CheckState {
  id: string;
  type: CheckStateType;
  status: Health;
  output: string;
}

/** One result of running a check, or one report into a ttl check. */
export interface CheckResult {
  status: Health;
  output: string;
}

/** What a service may report into its ttl check: the contract's states and Consul's short words. */
export const CHECK_REPORT_STATUSES = ['passing', 'warning', 'critical', 'pass', 'warn', 'fail'] as const;

/** Kinds of failure a consumer may report about an instance. */
export const REPORT_KINDS = ['connect_refused', 'connect_timeout', 'timeout', 'reset', 'http_5xx', 'grpc_unavailable', 'tls_error', 'other'] as const;
export type ReportKind = (typeof REPORT_KINDS)[number];

/** A consumer's report about an instance it failed to use. */
export interface ConsumerReport {
  reporter: string;
  kind: ReportKind;
  detail: string | null;
}

/** Settings of one service (`PUT /v1/services/{service}/settings`). */
export interface ServiceSettings {
  /**
   * When the share of healthy instances among those a `healthy=true` query would consider
   * falls below this (0..1), the answer includes the unhealthy ones and says `protected`.
   * null: off.
   */
  protectThreshold: number | null;
}

/** The body of a registration, after validation and defaults. */
export interface InstanceInput {
  address: string;
  port: number;
  leaseId: string | null;
  zone: string | null;
  version: string | null;
  tags: string[];
  metadata: Record<string, string>;
  weight: number;
  protocol: Protocol;
  checks: CheckSpec[];
}

/** An instance as returned by the API. */
export interface Instance {
  id: string;
  service: string;
  namespace: string;
  address: string;
  port: number;
  protocol: Protocol;
  zone: string | null;
  version: string | null;
  tags: string[];
  metadata: Record<string, string>;
  weight: number;
  status: AdminStatus;
  health: Health;
  checks: CheckState[];
  leaseId: string | null;
  createRevision: number;
  modRevision: number;
  /** ap mode (an extension): the node that owns the record (holds its lease, or took the write). */
  owner?: string;
  /** ap mode (an extension): present and true while the owner node is unreachable from the answering node. */
  unconfirmed?: true;
}

export interface LeaseGrant {
  leaseId: string;
  ttlMs: number;
}

export interface WriteResult {
  revision: number;
}

export interface ServiceSummary {
  name: string;
  namespace?: string;
  instances: number;
  passing: number;
}

export interface ServiceList {
  revision: number;
  services: ServiceSummary[];
}

export interface ServiceAnswer {
  service: string;
  revision: number;
  instances: Instance[];
  protected?: boolean;
  stale?: boolean;
  staleMs?: number;
}

export const DELETE_REASONS = [
  'deregistered',
  'lease_expired',
  'lease_revoked',
  'critical_timeout',
  /** The lease's session closed without a hand-over and its grace ran out. */
  'connection_lost',
  /** ap mode: its owner node stayed unreachable past the grace period (the record comes back if the owner does). */
  'owner_unreachable',
  /** ap mode: its owner node was removed from the cluster and it was bound to a lease there. */
  'owner_removed',
] as const;
export type DeleteReason = (typeof DELETE_REASONS)[number];

/** Why an instance was put (an extension: put events carry it too). */
export const PUT_REASONS = [
  /** A new instance. */
  'registered',
  /** A re-registration that changed it. */
  'updated',
  /** The status call changed its admin status. */
  'status_changed',
  /** A drain set it to draining. */
  'drained',
  /** A check turned warning or critical. */
  'check_failed',
  /** A check turned passing. */
  'check_passed',
  /** Consumer reports turned it warning, or their warning cleared. */
  'reported',
  /** Its lease expired while self-preservation was engaged: it stays. */
  'eviction_blocked',
  /** ap mode: its owner node became unreachable; it is kept and flagged `unconfirmed`. */
  'owner_unreachable',
  /** ap mode: its owner node is reachable again (or it is shown again after being hidden). */
  'owner_reachable',
  /** ap mode: its owner node was removed from the cluster; a remaining node took the persistent instance over. */
  'owner_removed',
] as const;
export type PutReason = (typeof PUT_REASONS)[number];
export type ChangeReason = PutReason | DeleteReason;

export interface WatchEvent {
  epoch: string;
  revision: number;
  type: 'put' | 'delete';
  service: string;
  namespace: string;
  instance: Instance;
  reason?: ChangeReason;
}

/** One state change of an instance, as kept in its history. */
export interface HistoryEntry {
  revision: number;
  /** Wall-clock time of the change (ISO 8601), null when unknown (entries of older versions). */
  at: string | null;
  type: 'put' | 'delete';
  reason: ChangeReason;
  /** What happened in a few words: the check and its output, the reporters, the lease. */
  detail: string | null;
  status: AdminStatus;
  health: Health;
}

export interface InstanceHistory {
  service: string;
  namespace: string;
  id: string;
  /** false when the instance is gone and only its history remains. */
  exists: boolean;
  /** Oldest first; at most `maxHistoryPerInstance` entries. */
  history: HistoryEntry[];
}

/** The answer to a drain: the change and how many watchers of the service saw it. */
export interface DrainResult {
  revision: number;
  /** Watch streams of this service on this node when the drain was applied. */
  watchers: number;
  /** Those that were sent the change (written and flushed to their connection). */
  reached: number;
  /** Those still not flushed when the wait ended. */
  timedOut: number;
  /** Those that closed before being reached. */
  gone: number;
}

export interface SelfPreservationScope {
  /** The zone, or null for the whole node. */
  zone: string | null;
  engaged: boolean;
  since: string | null;
  /** Leases that ran out within the window, plus those held past their deadline. */
  expiredInWindow: number;
  /** Leases counted: live ones plus those evicted within the window. */
  leases: number;
}

export interface SelfPreservationStatus {
  engaged: boolean;
  /** `protecting` while engaged (globally or in a zone), else `normal`. */
  state: 'normal' | 'protecting';
  reason: string | null;
  since: string | null;
  expiredInWindow: number;
  leases: number;
  /** Share of leases (0..1) that must lapse within the window to engage. */
  threshold: number;
  windowMs: number;
  minLeases: number;
  maxHoldMs: number;
  /** Leases held past their deadline right now. */
  blockedLeases: number;
  /** Held leases that protection no longer covers: each has its TTL once more to renew (added with the release grace). */
  releasingLeases?: number;
  /** Evictions blocked since the node started. */
  blockedEvictions: number;
  /** Zones that are engaged on their own. */
  zones: SelfPreservationScope[];
}

export interface ResetEvent {
  epoch: string;
  revision: number;
}

export interface NodeStatus {
  nodeId: string;
  mode: Mode;
  version: string;
  epoch: string;
  revision: number;
  startedAt: string;
  uptimeMs: number;
  leases: number;
  instances: number;
  services: number;
  watchers: number;
  sessions: number;
  selfPreservation: SelfPreservationStatus;
  /**
   * Active checks (http, tcp, grpc) this node runs; `denied`: probes the check networks
   * refused since the node started (checkDenyNetworks, checkAllowNetworks; absent from
   * nodes that predate it).
   */
  checks: { scheduled: number; running: number; queued: number; maxConcurrent: number; denied?: number };
  storage: { durable: boolean; dataDir: string | null };
  /** ap and cp: the cluster as this node sees it (absent in standalone mode). */
  cluster?: ClusterStatus;
  /** Alert episodes now active and the delivery state of each webhook (docs/alerts.md). */
  alerts?: AlertsStatus;
}

/** One member of a cluster as seen from the node that answers. */
export interface ClusterMember {
  id: string;
  /** ap: the peer-link address; cp: the node's REST address. */
  address: string;
  self: boolean;
  reachable: boolean;
  /** Milliseconds since the member was last heard from (null: never). */
  lastSeenMs: number | null;
  /** ap: replication lag from this node to the member, in milliseconds. */
  lagMs?: number;
  /** The member's own revision as last heard (ap: its change counter). */
  revision?: number;
}

/** The store under a cp node: the etcd cluster. */
export interface StoreStatus {
  kind: 'etcd';
  endpoints: string[];
  reachable: boolean;
  /** The etcd member id of the leader, when known. */
  leader: string | null;
  /** etcd's revision as last learned, and how far the local view is behind it. */
  revision: number;
  viewRevision: number;
  lagMs: number;
  /** Milliseconds since etcd last answered (null: never). */
  lastContactMs: number | null;
  /** How the node reaches etcd (cp nodes always say): over TLS (https:// endpoints). */
  tls?: boolean;
  /** With a client certificate (for etcd's --client-cert-auth). */
  clientCert?: boolean;
  /** As an etcd user (etcd auth enabled), which `username` names. Never the password. */
  auth?: boolean;
  username?: string | null;
}

export interface ClusterStatus {
  members: ClusterMember[];
  /** True when this node has caught up and takes requests (ap: after catching up from a peer). */
  ready: boolean;
  /** cp: the etcd cluster under this node. */
  store?: StoreStatus;
  /** Anything else the mode reports (documented in docs/api.md). */
  [extra: string]: unknown;
}

/** ap mode: the answer of `DELETE /v1/cluster/members/{id}` (docs/ap.md, "Removing a member"). */
export interface MemberRemoval {
  member: string;
  /** Persistent instances of the member this node took over: re-stamped as its own and replicated. */
  adopted: number;
  /** Persistent instances of the member that another remaining node takes over (it was chosen for them). */
  adoptedElsewhere: number;
  /** Lease-bound instances of the member dropped: their leases lived on it. */
  dropped: number;
  /** Reachable peers the removal was sent to; the others learn it when they next link to a node that knows. */
  notified: string[];
}

/** The alerts a node raises (docs/alerts.md). */
export const ALERT_NAMES = ['service_unavailable', 'self_preservation', 'peer_unreachable', 'store_unreachable'] as const;
export type AlertName = (typeof ALERT_NAMES)[number];
export type AlertSeverity = 'critical' | 'warning';

/** One episode of an alert: from the moment its condition held to the moment it ended. */
export interface AlertEpisode {
  alert: AlertName;
  severity: AlertSeverity;
  /** Unique per episode: the firing and the resolved message of one episode share it. */
  episodeId: string;
  /** What the alert is about: `namespace/service`, a member id, or `node`/`store`. */
  subject: string;
  summary: string;
  startedAt: string;
  /** null while the episode lasts. */
  resolvedAt: string | null;
  details: Record<string, unknown>;
}

/** The JSON body POSTed to each alert webhook. */
export interface AlertMessage extends AlertEpisode {
  /** Body format version. */
  version: 1;
  status: 'firing' | 'resolved';
  node: { id: string; mode: Mode };
  sentAt: string;
}

export interface AlertWebhookStatus {
  /** The webhook's URL without credentials or query. */
  url: string;
  /** Messages waiting to be delivered (the first may be between attempts). */
  pending: number;
  delivered: number;
  /** Messages given up on after the last attempt. */
  failed: number;
  /** Messages dropped because the queue was full (alertMaxPending). */
  dropped: number;
  lastError: string | null;
  lastDeliveredAt: string | null;
}

export interface AlertsStatus {
  active: AlertEpisode[];
  webhooks: AlertWebhookStatus[];
}
