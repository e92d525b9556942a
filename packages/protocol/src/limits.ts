/**
 * Every limit of the API, by name. The defaults are documented in docs/limits.md; each
 * can be changed in the agent's configuration under `limits`.
 */
export interface Limits {
  /** Largest request body accepted, in bytes. */
  maxBodyBytes: number;
  /** Longest `address` (a DNS name is at most 253 characters). */
  maxAddressLength: number;
  /** Most tags on one instance. */
  maxTagsPerInstance: number;
  /** Longest single tag. */
  maxTagLength: number;
  /** Most metadata keys on one instance. */
  maxMetadataKeys: number;
  /** Longest metadata key. */
  maxMetadataKeyLength: number;
  /** Total size of metadata keys and values of one instance, in bytes (UTF-8). */
  maxMetadataBytes: number;
  /** Most checks declared on one instance. */
  maxChecksPerInstance: number;
  /** Longest `version` string. */
  maxVersionLength: number;
  /** Shortest lease TTL granted; shorter requests are refused. */
  leaseTtlMinMs: number;
  /** Longest lease TTL granted; longer requests are refused. */
  leaseTtlMaxMs: number;
  /** Most instances bound to one lease. */
  maxInstancesPerLease: number;
  /** Most live leases on one node. */
  maxLeasesPerNode: number;
  /** Most instances on one node (all namespaces). */
  maxInstancesPerNode: number;
  /** Most items in one batch registration. */
  maxBatchItems: number;
  /** Most open watch streams on one node. */
  maxWatchStreamsPerNode: number;
  /** Most open watch streams from one client address. */
  maxWatchStreamsPerClient: number;
  /** Most `service` parameters on one watch. */
  maxWatchServices: number;
  /** Most blocking queries waiting at once on one node. */
  maxBlockingQueriesPerNode: number;
  /** Default wait of a blocking query. */
  blockingWaitDefaultMs: number;
  /** Longest wait of a blocking query. */
  blockingWaitMaxMs: number;
  /** Events kept in memory for watch resumption (the retained log). */
  retainedEvents: number;
  /** Bytes buffered for one slow watcher before it is cut off (it resumes by Last-Event-ID). */
  maxWatchBufferBytes: number;
  /** Longest query `tag` list. */
  maxQueryTags: number;
  /** Most session streams (GET /v1/session) open on one node. */
  maxSessionsPerNode: number;
  /** Largest message accepted on a session stream, in bytes. */
  maxSessionMessageBytes: number;
  /** ap: most peers one node links to (configured, joined and learned ones together). */
  peerMaxPeers: number;
  /** ap: largest frame accepted on a peer link, in bytes; a larger one closes the link. */
  peerMaxFrameBytes: number;
  /** ap: messages waiting to be written to one peer; more are dropped (and counted). */
  peerQueueMaxMessages: number;
  /** ap: bytes waiting to be written to one peer; more are dropped (and counted). */
  peerQueueMaxBytes: number;
  /** ap: a ping goes to every peer this often (round-trip time and liveness). */
  peerPingIntervalMs: number;
  /** ap: a peer silent for this many ping intervals is unreachable (its link is closed and redialed). */
  peerMissedPings: number;
  /** ap: longest TCP connect plus handshake of a peer link. */
  peerHandshakeTimeoutMs: number;
  /** ap: first reconnect wait to an unreachable peer (full jitter, doubling). */
  peerReconnectMinMs: number;
  /** ap: longest reconnect wait to an unreachable peer. */
  peerReconnectMaxMs: number;
  /**
   * How long a lease outlives its session's connection when that closes without a
   * hand-over (the process most likely died). Long enough for a reconnect that hands over
   * properly, short enough that consumers stop calling a dead process within a second.
   */
  sessionGraceMs: number;
  /**
   * Active checks (http, tcp, grpc) running at once on one node; the others wait their
   * turn. Every run is time-boxed by its timeout, so a slow target holds a slot for at most
   * that long and never blocks the rest.
   */
  maxConcurrentChecks: number;
  /** Longest check output kept (a ttl report's output, an active check's message). */
  maxCheckOutputLength: number;
  /** State changes kept per instance for GET .../history. */
  maxHistoryPerInstance: number;
  /** Instances gone from the registry whose history is still kept (oldest forgotten first). */
  maxDeletedHistories: number;
  /** The window over which lapsing leases are counted for self-preservation. */
  selfPreservationWindowMs: number;
  /** Self-preservation engages when more than this percentage of leases lapse in the window (100: never). */
  selfPreservationThresholdPercent: number;
  /** Below this many leases (in the whole node, or in a zone) self-preservation never engages. */
  selfPreservationMinLeases: number;
  /** Longest a lease is held past its deadline by self-preservation (0: as long as it is engaged). */
  selfPreservationMaxHoldMs: number;
  /** Services with settings (PUT /v1/services/{service}/settings) on one node. */
  maxServiceSettings: number;
  /** How long a consumer report counts. */
  reportWindowMs: number;
  /** Distinct reporters within the window that turn an instance `warning` (at least 2). */
  reportMinReporters: number;
  /** Reporters remembered per instance (the oldest report is forgotten first). */
  maxReportersPerInstance: number;
  /** How often alert conditions are evaluated. */
  alertEvaluateIntervalMs: number;
  /** Attempts to deliver one alert message to one webhook before it is given up. */
  alertDeliveryAttempts: number;
  /** Messages waiting per webhook; when full, the oldest is dropped (and counted). */
  alertMaxPending: number;
  /** First retry delay of a failed delivery; doubled per attempt up to alertRetryMaxMs. */
  alertRetryBaseMs: number;
  /** Longest delay between two delivery attempts. */
  alertRetryMaxMs: number;
  /** Longest wait for a webhook's answer to one attempt. */
  alertWebhookTimeoutMs: number;
  /**
   * cp: longest a node holds a group-commit transaction back for the writers of the one
   * just answered (0: never held; docs/cp.md).
   */
  cpBatchHoldMs: number;
  /**
   * cp: writes a node has sent to the node that writes for the cluster and waits for at
   * once (at most 256, the requests one session runs at once); beyond it the node writes
   * itself (0: every node writes itself; docs/cp.md).
   */
  cpForwardMaxInflight: number;
  /** ap: most records in one replication batch to a peer. */
  apBatchMaxRecords: number;
  /** ap: longest a change waits to be batched before it is sent to the peers. */
  apBatchDelayMs: number;
  /** ap: how often a node compares its per-service digests with one peer (anti-entropy). */
  apAntiEntropyIntervalMs: number;
  /**
   * ap: longest a node puts off its anti-entropy round with a peer while its own batches to
   * that peer are still unacknowledged (their records would only show up as differences).
   */
  apAntiEntropyMaxDeferMs: number;
  /** ap and cp: longest a node waits for the node that counts an instance's consumer reports (ap: its owner) to answer one it forwarded (then it counts it itself). */
  apReportTimeoutMs: number;
  /** ap: most service digests in one anti-entropy message (more services go in later rounds). */
  apDigestMaxServices: number;
  /** ap: most records in one repair message (a larger repair is split). */
  apRepairMaxRecords: number;
  /** ap: how long lease-bound records of an unreachable owner stay (flagged unconfirmed) before they are hidden. */
  apOwnerGraceMs: number;
  /** ap: tombstones are kept at least this long, and until every peer has them. */
  apTombstoneMinMs: number;
  /** ap: tombstones are collected after this long even if a peer never caught up (it is then told precisely what was deleted). */
  apTombstoneMaxMs: number;
  /** ap: a starting node waits this long for a peer to catch up from before it reports ready alone. */
  apCatchUpTimeoutMs: number;
  /** ap: a peer's version further ahead of this node's clock than this is not followed. */
  apMaxClockOffsetMs: number;
  /** ap: about how many bytes of records one replication message carries (well under peerMaxFrameBytes). */
  apMessageMaxBytes: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxBodyBytes: 1024 * 1024,
  maxAddressLength: 253,
  maxTagsPerInstance: 64,
  maxTagLength: 128,
  maxMetadataKeys: 64,
  maxMetadataKeyLength: 128,
  maxMetadataBytes: 16 * 1024,
  maxChecksPerInstance: 8,
  maxVersionLength: 64,
  leaseTtlMinMs: 1000,
  leaseTtlMaxMs: 60 * 60 * 1000,
  maxInstancesPerLease: 1000,
  maxLeasesPerNode: 100_000,
  maxInstancesPerNode: 1_000_000,
  maxBatchItems: 1000,
  maxWatchStreamsPerNode: 10_000,
  maxWatchStreamsPerClient: 1_000,
  maxWatchServices: 256,
  maxBlockingQueriesPerNode: 10_000,
  blockingWaitDefaultMs: 60_000,
  blockingWaitMaxMs: 5 * 60_000,
  retainedEvents: 10_000,
  maxWatchBufferBytes: 4 * 1024 * 1024,
  maxQueryTags: 16,
  maxSessionsPerNode: 100_000,
  maxSessionMessageBytes: 65536,
  peerMaxPeers: 16,
  peerMaxFrameBytes: 16 * 1024 * 1024,
  peerQueueMaxMessages: 100_000,
  peerQueueMaxBytes: 64 * 1024 * 1024,
  peerPingIntervalMs: 500,
  peerMissedPings: 4,
  peerHandshakeTimeoutMs: 2_000,
  peerReconnectMinMs: 100,
  peerReconnectMaxMs: 500,
  sessionGraceMs: 500,
  maxConcurrentChecks: 256,
  maxCheckOutputLength: 1024,
  maxHistoryPerInstance: 32,
  maxDeletedHistories: 10_000,
  selfPreservationWindowMs: 15_000,
  selfPreservationThresholdPercent: 50,
  selfPreservationMinLeases: 10,
  selfPreservationMaxHoldMs: 5 * 60_000,
  maxServiceSettings: 10_000,
  reportWindowMs: 30_000,
  reportMinReporters: 2,
  maxReportersPerInstance: 16,
  alertEvaluateIntervalMs: 1000,
  alertDeliveryAttempts: 8,
  alertMaxPending: 256,
  alertRetryBaseMs: 500,
  alertRetryMaxMs: 30_000,
  alertWebhookTimeoutMs: 5000,
  cpBatchHoldMs: 2,
  cpForwardMaxInflight: 256,
  apBatchMaxRecords: 1_000,
  apBatchDelayMs: 5,
  apAntiEntropyIntervalMs: 1_000,
  apAntiEntropyMaxDeferMs: 5_000,
  apReportTimeoutMs: 1_000,
  apDigestMaxServices: 5_000,
  apRepairMaxRecords: 2_000,
  apOwnerGraceMs: 30_000,
  apTombstoneMinMs: 60_000,
  apTombstoneMaxMs: 60 * 60_000,
  apCatchUpTimeoutMs: 10_000,
  apMaxClockOffsetMs: 60_000,
  apMessageMaxBytes: 4 * 1024 * 1024,
});

/** One line per limit, for docs and `--help`. */
export const LIMIT_NAMES = Object.keys(DEFAULT_LIMITS) as (keyof Limits)[];
