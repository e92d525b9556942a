/**
 * @switchboard/client: the Switchboard SDK. Providers register instances under one lease
 * per process; consumers hold live service views with client-side load balancing and a
 * resilient, discovery-aware fetch. The gRPC resolver is in `@switchboard/client/grpc`.
 */
export { connect, SwitchboardClient, type ClientOptions, type DrainOnSignalOptions } from './client.js';
export { Registration, REREGISTER_CONCURRENCY, type RegisterOptions, type CheckInput } from './provider.js';
export type { LeaseChange, SessionTransport } from './lease.js';
export { KEEPALIVE_DIVISOR, type LeaseInfo } from './session.js';
export {
  ServiceView,
  IDEMPOTENT_METHODS,
  DEFAULT_MAX_QUEUED_CHANGES,
  type ServiceOptions,
  type ViewChange,
  type CallOptions,
  type Verdict,
  type RetryOptions,
  type SwitchboardFetchInit,
} from './view.js';
export {
  BaseBalancer,
  RoundRobinBalancer,
  RandomBalancer,
  WeightedRoundRobinBalancer,
  LeastOutstandingBalancer,
  PowerOfTwoChoicesBalancer,
  ConsistentHashBalancer,
  ZoneAwareBalancer,
  LoadTracker,
  MAX_POINTS_PER_INSTANCE,
  createBalancer,
  preferPassing,
  hash32,
  type Balancer,
  type BalancerContext,
  type BalancerName,
  type BalancerOptions,
  type BalancerSpec,
  type ConsistentHashOptions,
  type LoadView,
  type PickContext,
  type ZonePreference,
} from '@switchboard/protocol';
export {
  RetryBudget,
  CircuitBreaker,
  Bulkhead,
  type RetryBudgetOptions,
  type CircuitBreakerOptions,
  type CircuitState,
  type BulkheadOptions,
} from './resilience.js';
export { Backoff, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
export { systemClock, type Clock } from './time.js';
export { defaultAddress, defaultInstanceId } from './identity.js';
export { readSnapshot, writeSnapshot, snapshotPath, type ServiceSnapshot } from './snapshot.js';
export * from './errors.js';
export type { Instance, AdminStatus, Health, Protocol } from '@switchboard/protocol';
export { DEFAULT_MAX_PENDING_REPORTS, DEFAULT_REPORT_INTERVAL_MS, failureKindOf, type FailureKind, type FailureReportOptions, type FailureReportStats } from './reports.js';
