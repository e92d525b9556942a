/**
 * Server-side picks (`GET /v1/services/{service}/pick`, an extension): the registry chooses
 * an instance for a client that has no SDK (a shell script, a program in another language,
 * a reverse proxy). It uses the SDK's own balancers (`@switchboard/protocol`'s), with the
 * same candidates (status `up`, health not `critical`, weight > 0) and health tiers, so a
 * pick here and a pick in an SDK view agree; a key hashes to the same instance either way.
 *
 * One balancer is kept per service, filter, strategy and zone preference, rebuilt when the
 * service's revision moves; their number is bounded (`MAX_PICKERS`, least recently used
 * first out). Pure: no I/O, no timers; randomness is injected.
 */
import { ZoneAwareBalancer, createBalancer, isHealthy, ringPoints, type Balancer, type BalancerName, type Instance, type LoadView, type Protocol } from '@switchboard/protocol';
import type { ServiceState } from './registry.js';
import { selectInstances, type ServiceQuery } from './views.js';

/** Balancers kept at once (one per service, filter, strategy and zone preference). */
export const MAX_PICKERS = 10_000;
/**
 * What the kept balancers may hold in all, in candidates (a consistent-hash balancer counts
 * its ring points, up to 1,000 per instance): the least recently used go first beyond it,
 * so that callers varying their filters cannot make the node keep a ring per variant.
 */
export const MAX_PICKER_COST = 2_000_000;
/** Most instances one pick answers (the first, then fallbacks to try in order). */
export const MAX_PICK_COUNT = 16;
/** Most instance ids one pick may exclude. */
export const MAX_PICK_EXCLUDES = 64;

/**
 * The strategies a server-side pick offers: the SDK's balancers that need nothing but the
 * instances. `least-outstanding` and `p2c` need the caller's own in-flight counts, which the
 * registry does not see.
 */
export const PICK_STRATEGIES = ['round-robin', 'random', 'weighted', 'consistent-hash'] as const satisfies readonly BalancerName[];
export type PickStrategy = (typeof PICK_STRATEGIES)[number];

export interface PickRequest {
  namespace: string;
  service: string;
  /** zone, tags and version as a read filters them (`healthy` is implied, `fields` unused). */
  filter: ServiceQuery;
  strategy: PickStrategy;
  /** The consistent-hash key (a user id, a cart id); other strategies ignore it. */
  key?: string;
  /** Prefer this zone while at least half of its instances can be picked. */
  preferZone?: string;
  /** How many distinct instances to answer, 1 to MAX_PICK_COUNT. */
  count: number;
  /** Instance ids not to answer (already tried by the caller). */
  exclude: readonly string[];
  /** Instance ids to answer only when nothing else can be (the proxy's ejected ones). */
  avoid?: readonly string[];
  /** The service's protect threshold (settings), if any. */
  protectThreshold: number | null;
  /** Only instances of these protocols (the proxy: http and https); all when absent. */
  protocols?: readonly Protocol[];
}

export interface PickResult {
  /** The picked instances, best first; empty when none can be picked. */
  instances: Instance[];
  /** Instances matching the filters (any state), and how many of them could be picked. */
  matching: number;
  candidates: number;
  /** True when the protect threshold widened the candidates to unhealthy instances. */
  protected: boolean;
}

const NO_LOAD: LoadView = { outstanding: () => 0 };

interface Entry {
  revision: number;
  balancer: Balancer;
  /** The candidates, in the order of the service's instances (by id). */
  list: readonly Instance[];
  matching: number;
  protected: boolean;
  cost: number;
}

/** Can be picked: what an SDK view hands its balancer (less its circuit breakers). */
export function pickable(i: Instance): boolean {
  return isHealthy(i) && i.weight > 0;
}

export class Pickers {
  private readonly entries = new Map<string, Entry>();
  private cost = 0;

  constructor(
    private readonly random: () => number = Math.random,
    private readonly max = MAX_PICKERS,
    private readonly maxCost = MAX_PICKER_COST,
  ) {}

  /** Balancers held now. */
  get size(): number {
    return this.entries.size;
  }

  /** What they hold, in candidates and ring points (bounded by MAX_PICKER_COST). */
  get heldCost(): number {
    return this.cost;
  }

  pick(svc: ServiceState | undefined, req: PickRequest): PickResult {
    const entry = this.entryFor(svc, req);
    const instances: Instance[] = [];
    const done = (): PickResult => ({ instances, matching: entry.matching, candidates: entry.list.length, protected: entry.protected });
    if (entry.list.length === 0) return done();
    let exclude = new Set(req.exclude);
    if (req.avoid !== undefined && req.avoid.length > 0) {
      const soft = new Set([...exclude, ...req.avoid]);
      if (entry.list.some((i) => !soft.has(i.id))) exclude = soft;
    }
    // One step of the balancer per request, whatever `count` is: a round-robin or weighted
    // sequence advanced once per fallback would only ever start on some of the instances.
    const first = entry.balancer.pick({ key: req.key, exclude });
    if (first === undefined || exclude.has(first.id)) return done();
    instances.push(first);
    exclude.add(first.id);
    if (req.strategy === 'consistent-hash' && req.key !== undefined) {
      // Fallbacks along the ring (no state moves): the same key gets the same ones.
      while (instances.length < req.count) {
        const i = entry.balancer.pick({ key: req.key, exclude });
        if (i === undefined || exclude.has(i.id)) break;
        instances.push(i);
        exclude.add(i.id);
      }
      return done();
    }
    // The others: the candidates after the first, in order.
    const at = entry.list.indexOf(first);
    for (let k = 1; k < entry.list.length && instances.length < req.count; k++) {
      const i = entry.list[(at + k) % entry.list.length] as Instance;
      if (!exclude.has(i.id)) instances.push(i);
    }
    return done();
  }

  private entryFor(svc: ServiceState | undefined, req: PickRequest): Entry {
    const f = req.filter;
    const id = JSON.stringify([req.namespace, req.service, f.zone, f.tags, f.version, req.strategy, req.preferZone ?? null, req.protectThreshold, req.protocols ?? null]);
    const revision = svc?.revision ?? -1;
    let entry = this.entries.get(id);
    if (entry !== undefined) {
      this.entries.delete(id); // re-inserted below: the map's order is least recently used first
      this.cost -= entry.cost;
      if (entry.revision !== revision) entry = this.rebuild(entry.balancer, svc, req, revision);
    } else {
      const make = (): Balancer => createBalancer(req.strategy, { random: this.random });
      entry = this.rebuild(req.preferZone === undefined ? make() : new ZoneAwareBalancer(make, { zone: req.preferZone }), svc, req, revision);
    }
    for (const [oldId, old] of this.entries) {
      if (this.entries.size < this.max && this.cost + entry.cost <= this.maxCost) break;
      this.entries.delete(oldId);
      this.cost -= old.cost;
    }
    this.entries.set(id, entry);
    this.cost += entry.cost;
    return entry;
  }

  private rebuild(balancer: Balancer, svc: ServiceState | undefined, req: PickRequest, revision: number): Entry {
    const protocols = req.protocols;
    const all = selectInstances(svc, { ...req.filter, healthy: false }).map((r) => r.instance).filter((i) => protocols === undefined || protocols.includes(i.protocol));
    let candidates = all.filter(pickable);
    let widened = false;
    // Under a protect threshold, too few healthy instances widen the candidates to every
    // instance an operator has not taken out (as a healthy=true read answers them all).
    if (req.protectThreshold !== null) {
      const up = all.filter((i) => i.status === 'up' && i.weight > 0);
      if (up.length > 0 && candidates.length < req.protectThreshold * up.length) {
        candidates = up;
        widened = true;
      }
    }
    balancer.update(candidates, { all, load: NO_LOAD });
    // A hash ring holds its points (by weight); a zone preference keeps two balancers.
    let cost = req.strategy === 'consistent-hash' ? candidates.reduce((n, i) => n + ringPoints(i.weight), 0) : candidates.length;
    if (req.preferZone !== undefined) cost *= 2;
    return { revision, balancer, list: candidates, matching: all.length, protected: widened, cost: Math.max(1, cost) };
  }
}
