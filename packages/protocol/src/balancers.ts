/**
 * Load balancing, shared by the SDK's service views (client side) and the registry's
 * `pick` query (server side), so that both pick alike: the same strategies, health tiers
 * and hash ring (a key goes to the same instance either way, given the same candidates).
 * A balancer is handed its candidates (instances that are `up`, not `critical`, with
 * weight > 0, and in the SDK not ejected by a circuit breaker) whenever they change;
 * `pick()` then works on arrays built beforehand and makes no allocation, so that a pick
 * costs tens of nanoseconds. Pure code: no I/O, randomness injectable.
 *
 * Health tiers: instances in `warning` are deprioritised. Built-in balancers pick among
 * `passing` instances only, as long as those are at least `minPassingShare` (default half)
 * of the candidates; below that, sending everything to the few passing ones would overload
 * them, so every candidate is used.
 */
import type { Instance } from './types.js';

/**
 * What a pick may take into account.
 *
 * @example
 * view.pick({ key: userId });                      // consistent hashing
 * view.pick({ exclude: new Set(['orders-1']) });   // a retry on another instance
 */
export interface PickContext {
  /** The hash key (consistent hashing); other balancers ignore it. */
  key?: string;
  /** Instance ids not to pick (already tried by this call). */
  exclude?: ReadonlySet<string>;
}

/**
 * Outstanding requests per instance, as counted by the view's calls.
 *
 * @example
 * const load: LoadView = { outstanding: (id) => inflight.get(id) ?? 0 };
 */
export interface LoadView {
  outstanding(instanceId: string): number;
}

/**
 * Everything a balancer is told besides its candidates.
 *
 * @example
 * balancer.update(candidates, { all: view.instances(), load: new LoadTracker() });
 */
export interface BalancerContext {
  /** Every instance of the view (also those that cannot be picked), e.g. to count a zone. */
  readonly all: readonly Instance[];
  readonly load: LoadView;
}

/**
 * A load-balancing policy. `update` is called on every change of the candidates (rare);
 * `pick` on every call (hot: keep it allocation-free).
 *
 * @example
 * class FirstBalancer implements Balancer {
 *   readonly name = 'first';
 *   private list: readonly Instance[] = [];
 *   update(candidates: readonly Instance[]) { this.list = candidates; }
 *   pick(ctx?: PickContext) { return this.list.find((i) => !ctx?.exclude?.has(i.id)); }
 * }
 * const view = client.service('orders', { balancer: () => new FirstBalancer() });
 */
export interface Balancer {
  readonly name: string;
  update(candidates: readonly Instance[], ctx: BalancerContext): void;
  pick(ctx?: PickContext): Instance | undefined;
}

/**
 * Names of the built-in balancers.
 *
 * @example
 * const name: BalancerName = 'least-outstanding';
 * client.service('orders', { balancer: name });
 */
export type BalancerName = 'round-robin' | 'random' | 'weighted' | 'least-outstanding' | 'p2c' | 'consistent-hash';

/**
 * Options shared by the built-in balancers.
 *
 * @example
 * new RoundRobinBalancer({ minPassingShare: 0.3 });
 */
export interface BalancerOptions {
  /** Source of randomness in [0, 1). Tests inject a seeded one. */
  random?: () => number;
  /** Below this share of `passing` candidates, `warning` ones are used too. Default 0.5. */
  minPassingShare?: number;
}

const NO_LOAD: LoadView = { outstanding: () => 0 };

/**
 * The candidates a built-in balancer picks from: the `passing` ones when they are at least
 * `minShare` of all candidates, else all of them.
 *
 * @example
 * preferPassing(candidates, 0.5);
 */
export function preferPassing(candidates: readonly Instance[], minShare = 0.5): readonly Instance[] {
  let passing = 0;
  for (const c of candidates) if (c.health === 'passing') passing++;
  if (passing === candidates.length || passing === 0 || passing < candidates.length * minShare) return candidates;
  return candidates.filter((c) => c.health === 'passing');
}

/**
 * Base of the built-in balancers: health tiers, and the exclusion of instances already
 * tried (a retry picks another instance: first from the tier, then from every candidate).
 *
 * @example
 * class Fixed extends BaseBalancer {
 *   readonly name = 'fixed';
 *   protected choose() { return this.list[0]; }
 * }
 */
export abstract class BaseBalancer implements Balancer {
  abstract readonly name: string;
  /** The candidates of the preferred tier. */
  protected list: readonly Instance[] = [];
  /** Every candidate (both tiers). */
  protected all: readonly Instance[] = [];
  protected load: LoadView = NO_LOAD;
  protected readonly random: () => number;
  private readonly minPassingShare: number;

  constructor(opts: BalancerOptions = {}) {
    this.random = opts.random ?? Math.random;
    this.minPassingShare = opts.minPassingShare ?? 0.5;
  }

  update(candidates: readonly Instance[], ctx: BalancerContext): void {
    this.all = candidates;
    this.list = preferPassing(candidates, this.minPassingShare);
    this.load = ctx.load;
    this.rebuild();
  }

  /** Called after the candidates changed. */
  protected rebuild(): void {}

  /** Picks from `this.list`, ignoring exclusions. */
  protected abstract choose(ctx?: PickContext): Instance | undefined;

  pick(ctx?: PickContext): Instance | undefined {
    const i = this.choose(ctx);
    if (i === undefined || ctx === undefined || ctx.exclude === undefined || !ctx.exclude.has(i.id)) return i;
    return this.pickExcluding(ctx.exclude, ctx);
  }

  /** A pick that avoids `exclude` (rare: retries). Random among what is left. */
  protected pickExcluding(exclude: ReadonlySet<string>, _ctx: PickContext): Instance | undefined {
    for (const pool of [this.list, this.all]) {
      const rest = pool.filter((i) => !exclude.has(i.id));
      if (rest.length > 0) return rest[Math.floor(this.random() * rest.length)];
    }
    return undefined;
  }
}

/**
 * Round-robin over the candidates, starting at a random offset so that many clients
 * started together do not all begin with the same instance.
 *
 * @example
 * client.service('orders', { balancer: 'round-robin' });
 */
export class RoundRobinBalancer extends BaseBalancer {
  readonly name = 'round-robin';
  private next: number;

  constructor(opts: BalancerOptions = {}) {
    super(opts);
    this.next = Math.floor(this.random() * 1024);
  }

  protected choose(): Instance | undefined {
    const list = this.list;
    const n = list.length;
    if (n === 0) return undefined;
    if (this.next >= n) this.next %= n;
    return list[this.next++];
  }
}

/**
 * Uniformly random.
 *
 * @example
 * client.service('orders', { balancer: 'random' });
 */
export class RandomBalancer extends BaseBalancer {
  readonly name = 'random';

  protected choose(): Instance | undefined {
    const list = this.list;
    return list.length === 0 ? undefined : list[Math.floor(this.random() * list.length)];
  }
}

/**
 * Smooth weighted round-robin (nginx's algorithm): each pick adds every instance's weight
 * to its current weight, picks the highest (the first on ties) and takes the total off it.
 * Weights 5, 1, 1 give a, a, b, a, c, a, a: proportional and interleaved, never bursts.
 * Current weights survive updates by instance id, so a change elsewhere does not restart
 * the sequence.
 *
 * @example
 * client.service('orders', { balancer: 'weighted' }); // uses each instance's `weight`
 */
export class WeightedRoundRobinBalancer extends BaseBalancer {
  readonly name = 'weighted';
  private weights = new Float64Array(0);
  private current = new Float64Array(0);
  private total = 0;
  private previousIds: string[] = [];

  protected override rebuild(): void {
    const list = this.list;
    const prev = new Map<string, number>();
    // Keep the current weights of instances that stay (by id).
    const old = this.previousIds;
    for (let i = 0; i < old.length; i++) prev.set(old[i] as string, this.current[i] as number);
    this.weights = new Float64Array(list.length);
    this.current = new Float64Array(list.length);
    this.total = 0;
    for (let i = 0; i < list.length; i++) {
      const inst = list[i] as Instance;
      this.weights[i] = inst.weight;
      this.current[i] = prev.get(inst.id) ?? 0;
      this.total += inst.weight;
    }
    this.previousIds = list.map((i) => i.id);
  }

  protected choose(): Instance | undefined {
    const n = this.list.length;
    if (n === 0) return undefined;
    const w = this.weights;
    const cur = this.current;
    let best = 0;
    let bestWeight = -Infinity;
    for (let i = 0; i < n; i++) {
      const c = (cur[i] as number) + (w[i] as number);
      cur[i] = c;
      if (c > bestWeight) {
        bestWeight = c;
        best = i;
      }
    }
    cur[best] = bestWeight - this.total;
    return this.list[best];
  }
}

/**
 * Least outstanding requests: the candidate with the fewest calls in flight (counted by the
 * view's fetch/call). Ties go round-robin, so an idle service is still spread. O(n) a pick.
 *
 * @example
 * client.service('orders', { balancer: 'least-outstanding' });
 */
export class LeastOutstandingBalancer extends BaseBalancer {
  readonly name = 'least-outstanding';
  private offset = 0;

  protected choose(): Instance | undefined {
    const list = this.list;
    const n = list.length;
    if (n === 0) return undefined;
    const start = this.offset++ % n;
    let best = list[start] as Instance;
    let bestLoad = this.load.outstanding(best.id);
    for (let k = 1; k < n && bestLoad > 0; k++) {
      const inst = list[(start + k) % n] as Instance;
      const l = this.load.outstanding(inst.id);
      if (l < bestLoad) {
        best = inst;
        bestLoad = l;
      }
    }
    return best;
  }
}

/**
 * Power of two choices: two distinct random candidates, the one with fewer outstanding
 * requests wins. Nearly as good as least-outstanding at O(1), and without its herding when
 * many clients see the same counts.
 *
 * @example
 * client.service('orders', { balancer: 'p2c' });
 */
export class PowerOfTwoChoicesBalancer extends BaseBalancer {
  readonly name = 'p2c';

  protected choose(): Instance | undefined {
    const list = this.list;
    const n = list.length;
    if (n <= 1) return list[0];
    const a = Math.floor(this.random() * n);
    let b = Math.floor(this.random() * (n - 1));
    if (b >= a) b++;
    const x = list[a] as Instance;
    const y = list[b] as Instance;
    return this.load.outstanding(y.id) < this.load.outstanding(x.id) ? y : x;
  }
}

/**
 * Most ring points of one instance, whatever its weight (bounds ring size and rebuild time).
 *
 * @example
 * new ConsistentHashBalancer({ pointsPerInstance: MAX_POINTS_PER_INSTANCE / 10 });
 */
export const MAX_POINTS_PER_INSTANCE = 1_000;

/**
 * Ring points of an instance of `weight` in a consistent-hash ring with `perInstance`
 * points per instance of weight 100 (at least 1, at most MAX_POINTS_PER_INSTANCE).
 *
 * @example
 * ringPoints(100); // 100
 */
export function ringPoints(weight: number, perInstance = 100): number {
  return Math.min(MAX_POINTS_PER_INSTANCE, Math.max(1, Math.round((perInstance * weight) / 100)));
}

/**
 * Options of the consistent-hash balancer.
 *
 * @example
 * new ConsistentHashBalancer({ pointsPerInstance: 160 });
 */
export interface ConsistentHashOptions extends BalancerOptions {
  /** Ring points of an instance of weight 100 (scaled by weight, at most 1000). Default 100. */
  pointsPerInstance?: number;
}

/**
 * Consistent hashing on `ctx.key`: a hash ring with virtual nodes (Ketama-style; 32-bit
 * FNV-1a with murmur3's finaliser instead of MD5). Each instance owns points in proportion
 * to its weight, placed by hashing `<id>#<n>`, so the ring depends on instance ids only:
 * removing an instance moves only the keys it owned (about 1/n of them). A pick without a
 * key is random. A retry walks the ring to the next instance not yet tried.
 *
 * @example
 * const carts = client.service('carts', { balancer: 'consistent-hash' });
 * await carts.fetch(`/carts/${userId}`, { key: userId });
 */
export class ConsistentHashBalancer extends BaseBalancer {
  readonly name = 'consistent-hash';
  private points = new Uint32Array(0);
  private owners = new Int32Array(0);
  /**
   * Bucket index over the ring: `index[b]` is the first point whose top `bits` bits are
   * >= b, so a lookup scans only the few points of one bucket instead of a binary search
   * (about one point per bucket: 2^bits is the ring size rounded up).
   */
  private index = new Uint32Array(1);
  private shift = 32;
  private readonly perInstance: number;

  constructor(opts: ConsistentHashOptions = {}) {
    super(opts);
    this.perInstance = opts.pointsPerInstance ?? 100;
  }

  protected override rebuild(): void {
    const list = this.list;
    const pairs: [number, number][] = [];
    list.forEach((inst, idx) => {
      const count = ringPoints(inst.weight, this.perInstance);
      for (let j = 0; j < count; j++) pairs.push([hash32(`${inst.id}#${j}`), idx]);
    });
    pairs.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    this.points = Uint32Array.from(pairs, (p) => p[0]);
    this.owners = Int32Array.from(pairs, (p) => p[1]);
    const bits = Math.min(16, Math.max(4, Math.ceil(Math.log2(Math.max(1, pairs.length)))));
    this.shift = 32 - bits;
    const buckets = 1 << bits;
    this.index = new Uint32Array(buckets + 1);
    let p = 0;
    for (let b = 0; b < buckets; b++) {
      const low = b * 2 ** this.shift;
      while (p < this.points.length && (this.points[p] as number) < low) p++;
      this.index[b] = p;
    }
    this.index[buckets] = this.points.length;
  }

  private position(key: string): number {
    const h = hash32(key);
    const pts = this.points;
    const b = h >>> this.shift;
    let i = this.index[b] as number;
    const end = this.index[b + 1] as number;
    while (i < end && (pts[i] as number) < h) i++;
    return i === pts.length ? 0 : i;
  }

  protected choose(ctx?: PickContext): Instance | undefined {
    const n = this.list.length;
    if (n === 0) return undefined;
    if (ctx?.key === undefined) return this.list[Math.floor(this.random() * n)];
    return this.list[this.owners[this.position(ctx.key)] as number];
  }

  protected override pickExcluding(exclude: ReadonlySet<string>, ctx: PickContext): Instance | undefined {
    if (ctx.key !== undefined && this.points.length > 0) {
      const start = this.position(ctx.key);
      for (let k = 1; k < this.points.length; k++) {
        const inst = this.list[this.owners[(start + k) % this.points.length] as number] as Instance;
        if (!exclude.has(inst.id)) return inst;
      }
    }
    return super.pickExcluding(exclude, ctx);
  }
}

/**
 * 32-bit FNV-1a over UTF-16 code units, mixed by murmur3's fmix32 (FNV alone clusters
 * similar keys such as `a#1`, `a#2` on the ring).
 *
 * @example
 * hash32('user-42'); // a uint32
 */
export function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Zone preference.
 *
 * @example
 * const opts: ZonePreference = { zone: 'eu-1', minHealthyShare: 0.7 };
 */
export interface ZonePreference {
  /** This client's zone. */
  zone: string;
  /**
   * The local zone is used alone while at least this share of its instances can be picked
   * (up, not critical, not ejected); below it, calls spill over to every zone. Default 0.5.
   */
  minHealthyShare?: number;
}

/**
 * Zone preference around any balancer: calls stay in the client's zone while enough of the
 * zone's instances are healthy (`minHealthyShare` of them), and spill over to all zones
 * (local ones included) when too few are. A retry that has tried every local candidate
 * also goes to other zones.
 *
 * @example
 * client.service('orders', { balancer: 'p2c', preferZone: { zone: 'eu-1', minHealthyShare: 0.5 } });
 * // or by hand:
 * new ZoneAwareBalancer(() => new PowerOfTwoChoicesBalancer(), { zone: 'eu-1' });
 */
export class ZoneAwareBalancer implements Balancer {
  readonly name: string;
  private readonly local: Balancer;
  private readonly global: Balancer;
  private useLocal = false;
  private readonly share: number;

  constructor(
    inner: () => Balancer,
    readonly pref: ZonePreference,
  ) {
    this.local = inner();
    this.global = inner();
    this.name = `zone-aware(${this.local.name})`;
    this.share = pref.minHealthyShare ?? 0.5;
  }

  /** True while picks stay in the local zone. */
  get localOnly(): boolean {
    return this.useLocal;
  }

  update(candidates: readonly Instance[], ctx: BalancerContext): void {
    const zone = this.pref.zone;
    const local = candidates.filter((i) => i.zone === zone);
    let localTotal = 0;
    for (const i of ctx.all) if (i.zone === zone) localTotal++;
    this.useLocal = local.length > 0 && local.length >= this.share * localTotal;
    if (this.useLocal) this.local.update(local, ctx);
    this.global.update(candidates, ctx);
  }

  pick(ctx?: PickContext): Instance | undefined {
    if (this.useLocal) {
      const i = this.local.pick(ctx);
      if (i !== undefined && (ctx?.exclude === undefined || !ctx.exclude.has(i.id))) return i;
    }
    return this.global.pick(ctx);
  }
}

/**
 * How a view's balancer is given: a built-in name, a factory, or an instance (not shared
 * between views).
 *
 * @example
 * const spec: BalancerSpec = 'p2c';
 */
export type BalancerSpec = BalancerName | Balancer | (() => Balancer);

/**
 * The balancer for a spec (a name makes a new built-in one).
 *
 * @example
 * const b = createBalancer('weighted');
 */
export function createBalancer(spec: BalancerSpec = 'round-robin', opts: BalancerOptions = {}): Balancer {
  if (typeof spec === 'function') return spec();
  if (typeof spec === 'object') return spec;
  switch (spec) {
    case 'round-robin':
      return new RoundRobinBalancer(opts);
    case 'random':
      return new RandomBalancer(opts);
    case 'weighted':
      return new WeightedRoundRobinBalancer(opts);
    case 'least-outstanding':
      return new LeastOutstandingBalancer(opts);
    case 'p2c':
      return new PowerOfTwoChoicesBalancer(opts);
    case 'consistent-hash':
      return new ConsistentHashBalancer(opts);
    default:
      throw new RangeError(`unknown balancer "${String(spec)}"; use one of round-robin, random, weighted, least-outstanding, p2c, consistent-hash, or pass a Balancer`);
  }
}

/**
 * Outstanding requests per instance id, fed by the view's calls.
 *
 * @example
 * const load = new LoadTracker();
 * load.begin('orders-1'); load.outstanding('orders-1'); // 1
 * load.end('orders-1');
 */
export class LoadTracker implements LoadView {
  private readonly counts = new Map<string, number>();

  outstanding(instanceId: string): number {
    return this.counts.get(instanceId) ?? 0;
  }

  begin(instanceId: string): void {
    this.counts.set(instanceId, (this.counts.get(instanceId) ?? 0) + 1);
  }

  end(instanceId: string): void {
    const n = (this.counts.get(instanceId) ?? 1) - 1;
    if (n <= 0) this.counts.delete(instanceId);
    else this.counts.set(instanceId, n);
  }
}
