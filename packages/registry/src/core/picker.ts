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
import { ZoneAwareBalancer, createBalancer, isHealthy, type Balancer, type BalancerName, type Instance, type LoadView, type Protocol } from '@switchboard/protocol';
import type { ServiceState } from './registry.js';
import { selectInstances, type ServiceQuery } from './views.js';

/** Balancers kept at once (one per service, filter, strategy and zone preference). */
export const MAX_PICKERS = 10_000;
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
  matching: number;
  candidates: number;
  protected: boolean;
}

/** Can be picked: what an SDK view hands its balancer (less its circuit breakers). */
export function pickable(i: Instance): boolean {
  return isHealthy(i) && i.weight > 0;
}

export class Pickers {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly random: () => number = Math.random,
    private readonly max = MAX_PICKERS,
  ) {}

  /** Balancers held now. */
  get size(): number {
    return this.entries.size;
  }

  pick(svc: ServiceState | undefined, req: PickRequest): PickResult {
    const entry = this.entryFor(svc, req);
    const instances: Instance[] = [];
    if (entry.candidates > 0) {
      const exclude = new Set(req.exclude);
      const ctx = { key: req.key, exclude };
      while (instances.length < req.count) {
        const i = entry.balancer.pick(ctx);
        if (i === undefined || exclude.has(i.id)) break;
        instances.push(i);
        exclude.add(i.id);
      }
    }
    return { instances, matching: entry.matching, candidates: entry.candidates, protected: entry.protected };
  }

  private entryFor(svc: ServiceState | undefined, req: PickRequest): Entry {
    const f = req.filter;
    const id = JSON.stringify([req.namespace, req.service, f.zone, f.tags, f.version, req.strategy, req.preferZone ?? null, req.protectThreshold, req.protocols ?? null]);
    const revision = svc?.revision ?? -1;
    let entry = this.entries.get(id);
    if (entry !== undefined) {
      this.entries.delete(id); // re-inserted below: the map's order is least recently used first
      if (entry.revision !== revision) entry = this.rebuild(entry.balancer, svc, req, revision);
    } else {
      const make = (): Balancer => createBalancer(req.strategy, { random: this.random });
      entry = this.rebuild(req.preferZone === undefined ? make() : new ZoneAwareBalancer(make, { zone: req.preferZone }), svc, req, revision);
      if (this.entries.size >= this.max) {
        const oldest = this.entries.keys().next().value;
        if (oldest !== undefined) this.entries.delete(oldest);
      }
    }
    this.entries.set(id, entry);
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
    return { revision, balancer, matching: all.length, candidates: candidates.length, protected: widened };
  }
}
