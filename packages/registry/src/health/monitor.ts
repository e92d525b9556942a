/**
 * The health monitor of a node: it follows the registry (every announced put and delete)
 * and keeps the scheduler's set of active checks (http, tcp, grpc) in line with the
 * instances' declarations; results go back to the engine, which makes only state changes
 * durable. ttl checks need no runner: the core times them.
 */
import { lookup as dnsLookup } from 'node:dns';
import type { CheckResult, CheckSpec, Instance, WatchEvent } from '@switchboard/protocol';
import { instanceKey, type InstanceRecord, type Registry } from '../core/registry.js';
import type { Hub, Subscriber } from '../engines/hub.js';
import { GrpcProber } from './grpc.js';
import { HttpProber } from './http.js';
import { CheckNetworks, TargetGuard, type DenialObserver } from './networks.js';
import type { Probe } from './runner.js';
import { CheckScheduler, type ScheduledCheck, type SchedulerStats } from './scheduler.js';
import { tcpProbe } from './tcp.js';

export interface MonitorHost {
  readonly registry: Registry;
  readonly hub: Hub;
  recordCheckResult(namespace: string, service: string, id: string, checkId: string, specKey: string, result: CheckResult): Promise<number>;
}

export interface MonitorOptions {
  maxConcurrentChecks: number;
  /** The networks probes may reach; default CheckNetworks.DEFAULT (the metadata services denied). */
  checkNetworks?: CheckNetworks;
  /** Told of every probe the network policy refuses, with the details its output leaves out (the agent logs them). */
  onDenied?: DenialObserver;
  /** Probes by check type; tests may replace them. */
  probes?: Partial<Record<'http' | 'tcp' | 'grpc', Probe>>;
  random?: () => number;
  /** A result could not be recorded (storage failure: the engine reports it). */
  onError?: (err: unknown) => void;
}

/** The scheduler's figures and the probes the network policy refused. */
export interface CheckStats extends SchedulerStats {
  denied: number;
}

/** The figures of a node that runs no active checks. */
export function noCheckStats(): CheckStats {
  return { scheduled: 0, running: 0, queued: 0, runs: { passing: 0, warning: 0, critical: 0 }, timeouts: 0, denied: 0 };
}

const ACTIVE = new Set(['http', 'tcp', 'grpc']);

/** A host as it goes into a URL or host:port (IPv6 literals in brackets). */
function hostPart(address: string): string {
  return address.includes(':') ? `[${address}]` : address;
}

/** Where a check probes: its target, or the instance's own address. */
export function checkTarget(spec: CheckSpec, instance: Instance): string {
  if (spec.target !== null) return spec.target;
  const host = `${hostPart(instance.address)}:${instance.port}`;
  return spec.type === 'http' ? `${instance.protocol === 'https' ? 'https' : 'http'}://${host}/` : host;
}

/** No check to keep (read only). */
const NONE: ReadonlySet<string> = new Set();

export class HealthMonitor implements Subscriber {
  readonly services = null;
  private readonly scheduler: CheckScheduler;
  /** instance key -> keys of its scheduled checks */
  private readonly byInstance = new Map<string, Set<string>>();
  /** gRPC targets -> checks probing them: a channel is closed when none is left. */
  private readonly grpcTargets = new Map<string, number>();
  private unsubscribe: () => void = () => undefined;
  private readonly guard: TargetGuard;
  private readonly http: HttpProber;
  private readonly grpc: GrpcProber;

  constructor(
    private readonly host: MonitorHost,
    private readonly opts: MonitorOptions,
  ) {
    this.guard = new TargetGuard(opts.checkNetworks ?? CheckNetworks.DEFAULT, dnsLookup, opts.onDenied);
    this.http = new HttpProber(this.guard);
    this.grpc = new GrpcProber(this.guard);
    const probes: Record<string, Probe> = { http: this.http.probe, tcp: tcpProbe(this.guard), grpc: this.grpc.probe, ...opts.probes };
    this.scheduler = new CheckScheduler({
      maxConcurrent: opts.maxConcurrentChecks,
      probe: (c, signal) => (probes[c.spec.type] as Probe)({ spec: c.spec, target: c.target }, signal),
      onResult: (c, r) => this.record(c, r),
      ...(opts.random ? { random: opts.random } : {}),
    });
  }

  /** Schedules the checks of every instance already registered, spread over their intervals. */
  start(): void {
    for (const svc of this.host.registry.listServices()) {
      for (const rec of svc.instances.values()) this.sync(rec, true);
    }
    this.unsubscribe = this.host.hub.subscribe(this);
  }

  stats(): CheckStats {
    return { ...this.scheduler.stats(), denied: this.guard.denied };
  }

  deliver(events: WatchEvent[]): void {
    for (const ev of events) {
      const { namespace, service, id } = ev.instance;
      const rec = this.host.registry.instance(namespace, service, id);
      if (rec) this.sync(rec, false);
      else if (this.byInstance.size > 0) this.forget(instanceKey(namespace, service, id), NONE);
    }
  }

  close(): void {
    this.unsubscribe();
    this.scheduler.close();
    this.byInstance.clear();
    this.grpcTargets.clear();
    this.grpc.close();
    this.http.close();
  }

  private sync(rec: InstanceRecord, starting: boolean): void {
    const { instance } = rec;
    // ap mode: only the node that owns an instance runs its checks.
    const repl = this.host.registry.replication;
    const runsHere = !repl || instance.owner === undefined || instance.owner === repl.nodeId;
    if (!runsHere || !rec.specs.some((s) => ACTIVE.has(s.type))) {
      // Most instances of a busy node (no active check, or a peer's): nothing to schedule,
      // and with no check scheduled at all, nothing to stop either.
      if (this.byInstance.size > 0) this.forget(instanceKey(instance.namespace, instance.service, instance.id), NONE);
      return;
    }
    const ikey = instanceKey(instance.namespace, instance.service, instance.id);
    const keep = new Set<string>();
    for (const spec of rec.specs) {
      if (!ACTIVE.has(spec.type)) continue;
      const key = `${ikey}#${spec.id}`;
      keep.add(key);
      const check: ScheduledCheck = {
        key,
        namespace: instance.namespace,
        service: instance.service,
        instanceId: instance.id,
        checkId: spec.id,
        spec,
        specKey: JSON.stringify(spec),
        target: checkTarget(spec, instance),
      };
      const before = this.scheduler.get(key);
      if (!before || before.target !== check.target || before.spec.type !== check.spec.type) {
        if (before) this.untrack(before);
        if (check.spec.type === 'grpc') this.grpcTargets.set(check.target, (this.grpcTargets.get(check.target) ?? 0) + 1);
      }
      // A new instance is probed within its jitter (at least a little spread); a node
      // that starts with many spreads them over a whole interval.
      this.scheduler.upsert(check, starting ? spec.intervalMs : Math.max(spec.jitterMs, 50));
    }
    this.forget(ikey, keep);
    if (keep.size > 0) this.byInstance.set(ikey, keep);
  }

  /** Stops the checks of an instance that are not in `keep`. */
  private forget(ikey: string, keep: ReadonlySet<string>): void {
    const old = this.byInstance.get(ikey);
    if (!old) return;
    for (const key of old) {
      if (keep.has(key)) continue;
      const c = this.scheduler.get(key);
      if (c) this.untrack(c);
      this.scheduler.remove(key);
    }
    if (keep.size === 0) this.byInstance.delete(ikey);
  }

  private untrack(c: ScheduledCheck): void {
    if (c.spec.type !== 'grpc') return;
    const n = (this.grpcTargets.get(c.target) ?? 1) - 1;
    if (n > 0) return void this.grpcTargets.set(c.target, n);
    this.grpcTargets.delete(c.target);
    this.grpc.release(c.target);
  }

  private record(c: ScheduledCheck, r: CheckResult): void {
    this.host.recordCheckResult(c.namespace, c.service, c.instanceId, c.checkId, c.specKey, r).catch((err) => this.opts.onError?.(err));
  }
}
