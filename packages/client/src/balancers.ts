/**
 * Client-side load balancing. The balancers are pure code shared with the registry's
 * server-side `pick` (they live in `@switchboard/protocol`); the SDK exports them from
 * here as before.
 */
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
