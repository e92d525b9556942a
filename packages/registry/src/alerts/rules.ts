/**
 * Alert rules: pure code over an injected clock. Given what changed in the registry and
 * the node's self-preservation and cluster status, they decide which alert episodes start
 * (firing) and which end (resolved). Each episode fires once and resolves once; delivery
 * is elsewhere (webhooks.ts). Described in docs/alerts.md.
 *
 *   service_unavailable  (critical) a service that had a healthy instance has none: its
 *                        instances that are up are all critical, or the last one went away other than
 *                        by deregistration (its lease expired, its connection was lost, a
 *                        check deregistered it). A service whose last instance was
 *                        deregistered on purpose is retired, not down: no alert, and an
 *                        open episode resolves. One with no instance at all for
 *                        SERVICE_GONE_MS is gone: its episode resolves and it is forgotten.
 *   self_preservation    (warning) self-preservation engaged, for the node or a zone.
 *   peer_unreachable     (warning) ap: a cluster member other than this node is unreachable.
 *   store_unreachable    (critical) cp: the etcd cluster is unreachable; resolves once it
 *                        has answered for STORE_SETTLE_MS.
 */
import type { AlertEpisode, AlertName, AlertSeverity, ClusterStatus, DeleteReason, SelfPreservationStatus } from '@switchboard/protocol';
import type { Clock } from '../core/clock.js';

/** The state of one service that changed since the last evaluation. */
export interface ServiceObservation {
  namespace: string;
  service: string;
  /** Instances now registered, how many have admin status `up`, and how many of those are healthy (not critical). */
  instances: number;
  up: number;
  healthy: number;
  /** When no instance is left: why the last one went. */
  lastRemoval?: DeleteReason;
}

export interface AlertInputs {
  /** Services that changed since the last evaluation (all of them the first time). */
  services: Iterable<ServiceObservation>;
  selfPreservation: Pick<SelfPreservationStatus, 'state' | 'reason' | 'since' | 'blockedLeases' | 'expiredInWindow' | 'leases' | 'zones'>;
  cluster?: ClusterStatus | undefined;
}

export interface AlertTransition {
  status: 'firing' | 'resolved';
  episode: AlertEpisode;
}

export interface AlertRulesOptions {
  /** Wall-clock milliseconds (for startedAt and resolvedAt). */
  clock: Clock;
  /** A new unique episode id. */
  newId: () => string;
}

const SEVERITY: Record<AlertName, AlertSeverity> = {
  service_unavailable: 'critical',
  self_preservation: 'warning',
  peer_unreachable: 'warning',
  store_unreachable: 'critical',
};

/**
 * A service that has had no instance at all for this long is gone, not down: its
 * service_unavailable episode resolves (`"gone": true`) and the service is forgotten.
 * Without it, every short-lived service whose last instance went by its lease (a batch
 * job, an SDK shutting down) would keep an episode open for ever. Five minutes is long
 * past a restart or a redeploy, which bring an instance back.
 */
export const SERVICE_GONE_MS = 5 * 60_000;

/**
 * The most services the rules remember as having had a healthy instance. Beyond it the one
 * with no instance left the longest is forgotten first (its open episode resolves as gone),
 * else the one seen healthy the longest ago (it alerts again once seen healthy again).
 */
export const MAX_ALERT_SERVICES = 10_000;

/**
 * store_unreachable resolves only once the store has answered for this long without a
 * break: a store that comes back for a moment between two failures (an etcd leader
 * election, a flapping network) stays one episode, not one a second.
 */
export const STORE_SETTLE_MS = 10_000;

export class AlertRules {
  /** Open episodes by `alert|subject`. */
  private readonly open = new Map<string, AlertEpisode>();
  /**
   * Services (`namespace/service`) seen with a healthy instance at least once, in the
   * order they were last seen so (at most MAX_ALERT_SERVICES).
   */
  private readonly everHealthy = new Set<string>();
  /** Of those, the ones with no instance left, with the time they lost their last one (oldest first). */
  private readonly emptySince = new Map<string, number>();
  /** When the store was first seen reachable again while store_unreachable is open; null while it is not. */
  private storeBackSince: number | null = null;

  constructor(private readonly opts: AlertRulesOptions) {}

  /** The open episodes, oldest first. */
  active(): AlertEpisode[] {
    return [...this.open.values()];
  }

  evaluate(inputs: AlertInputs): AlertTransition[] {
    const out: AlertTransition[] = [];
    for (const s of inputs.services) this.service(s, out);
    this.gone(out);
    this.selfPreservation(inputs.selfPreservation, out);
    this.cluster(inputs.cluster, out);
    return out;
  }

  private service(s: ServiceObservation, out: AlertTransition[]): void {
    const subject = `${s.namespace}/${s.service}`;
    if (s.instances > 0) this.emptySince.delete(subject);
    if (s.healthy > 0) {
      // Moved to the end: the order is the one of the last time seen healthy.
      this.everHealthy.delete(subject);
      this.everHealthy.add(subject);
      this.resolve('service_unavailable', subject, out, { healthy: s.healthy, instances: s.instances });
      this.bound(out);
      return;
    }
    if (s.instances === 0 && (s.lastRemoval === 'deregistered' || s.lastRemoval === undefined)) {
      // Retired on purpose (or never seen go): forget it.
      this.forget(subject);
      this.resolve('service_unavailable', subject, out, { instances: 0, retired: true });
      return;
    }
    if (!this.everHealthy.has(subject)) return;
    if (s.instances === 0 && !this.emptySince.has(subject)) this.emptySince.set(subject, this.opts.clock.now());
    // Every instance left was taken out of service on purpose (draining, out_of_service):
    // no new episode; an open one stays open until a healthy instance is back.
    if (s.instances > 0 && s.up === 0) return;
    const details: Record<string, unknown> = { namespace: s.namespace, service: s.service, instances: s.instances, healthy: 0 };
    if (s.lastRemoval !== undefined && s.instances === 0) details.lastRemoval = s.lastRemoval;
    const summary = s.instances === 0
      ? `service ${subject} has no instance left (the last one went: ${s.lastRemoval})`
      : `service ${subject} has no healthy instance (${s.instances} registered, ${s.up} of them up, all critical)`;
    this.fire('service_unavailable', subject, summary, details, out);
  }

  /** Services with no instance for SERVICE_GONE_MS: their episode resolves and they are forgotten. */
  private gone(out: AlertTransition[]): void {
    const now = this.opts.clock.now();
    for (const [subject, since] of this.emptySince) {
      if (now - since < SERVICE_GONE_MS) break; // oldest first: the rest are younger
      this.forgetGone(subject, out);
    }
  }

  /** Keeps at most MAX_ALERT_SERVICES services: the ones empty the longest go first. */
  private bound(out: AlertTransition[]): void {
    while (this.everHealthy.size > MAX_ALERT_SERVICES) {
      const empty = this.emptySince.keys().next();
      if (!empty.done) this.forgetGone(empty.value, out);
      else this.forget(this.everHealthy.values().next().value as string);
    }
  }

  private forgetGone(subject: string, out: AlertTransition[]): void {
    this.forget(subject);
    this.resolve('service_unavailable', subject, out, { instances: 0, gone: true });
  }

  private forget(subject: string): void {
    this.everHealthy.delete(subject);
    this.emptySince.delete(subject);
  }

  private selfPreservation(sp: AlertInputs['selfPreservation'], out: AlertTransition[]): void {
    if (sp.state === 'protecting') {
      const zones = sp.zones.filter((z) => z.engaged).map((z) => z.zone);
      this.fire('self_preservation', 'node', `self-preservation engaged: lapsed leases are held, not evicted (${sp.reason ?? 'too many leases lapsed'})`, {
        reason: sp.reason,
        since: sp.since,
        zones,
        blockedLeases: sp.blockedLeases,
        expiredInWindow: sp.expiredInWindow,
        leases: sp.leases,
      }, out);
    } else {
      this.resolve('self_preservation', 'node', out, { blockedLeases: sp.blockedLeases });
    }
  }

  private cluster(cluster: ClusterStatus | undefined, out: AlertTransition[]): void {
    const down = new Set<string>();
    for (const m of cluster?.members ?? []) {
      if (m.self || m.reachable) continue;
      down.add(m.id);
      this.fire('peer_unreachable', m.id, `cluster member ${m.id} (${m.address}) is unreachable`, { member: m.id, address: m.address, lastSeenMs: m.lastSeenMs }, out);
    }
    for (const e of [...this.open.values()]) {
      if (e.alert === 'peer_unreachable' && !down.has(e.subject)) {
        const member = cluster?.members.find((m) => m.id === e.subject);
        this.resolve('peer_unreachable', e.subject, out, member ? { reachable: true } : { removed: true });
      }
    }
    const store = cluster?.store;
    if (store && !store.reachable) {
      this.storeBackSince = null;
      this.fire('store_unreachable', 'store', `the ${store.kind} cluster (${store.endpoints.join(', ')}) is unreachable`, { kind: store.kind, endpoints: store.endpoints, lastContactMs: store.lastContactMs }, out);
    } else if (!store) {
      this.storeBackSince = null;
      this.resolve('store_unreachable', 'store', out, {});
    } else if (this.open.has('store_unreachable|store')) {
      // Back: resolved once it has stayed so for STORE_SETTLE_MS.
      const now = this.opts.clock.now();
      this.storeBackSince ??= now;
      if (now - this.storeBackSince >= STORE_SETTLE_MS) {
        this.storeBackSince = null;
        this.resolve('store_unreachable', 'store', out, { reachable: true });
      }
    }
  }

  private fire(alert: AlertName, subject: string, summary: string, details: Record<string, unknown>, out: AlertTransition[]): void {
    const key = `${alert}|${subject}`;
    if (this.open.has(key)) return;
    const episode: AlertEpisode = {
      alert,
      severity: SEVERITY[alert],
      episodeId: this.opts.newId(),
      subject,
      summary,
      startedAt: new Date(this.opts.clock.now()).toISOString(),
      resolvedAt: null,
      details,
    };
    this.open.set(key, episode);
    out.push({ status: 'firing', episode });
  }

  private resolve(alert: AlertName, subject: string, out: AlertTransition[], details: Record<string, unknown>): void {
    const key = `${alert}|${subject}`;
    const episode = this.open.get(key);
    if (!episode) return;
    this.open.delete(key);
    out.push({ status: 'resolved', episode: { ...episode, resolvedAt: new Date(this.opts.clock.now()).toISOString(), details: { ...episode.details, resolution: details } } });
  }
}

/** Delay before attempt `attempt` (2, 3, ...) of a delivery: doubling from `baseMs`, capped. */
export function retryDelayMs(attempt: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 2));
}
