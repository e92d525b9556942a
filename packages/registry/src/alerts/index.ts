/**
 * Alerts of one node: watches the engine (the services its events touch, self-preservation,
 * the cluster status), evaluates the rules (rules.ts) every alertEvaluateIntervalMs and
 * sends each transition to every configured webhook (webhooks.ts). Active only when the
 * agent has alert webhooks. Described in docs/alerts.md.
 */
import { randomBytes } from 'node:crypto';
import { DELETE_REASONS, type AlertMessage, type AlertName, type AlertsStatus, type DeleteReason, type Limits, type WatchEvent, ALERT_NAMES } from '@switchboard/protocol';
import client from 'prom-client';
import type { Logger } from 'pino';
import type { Clock } from '../core/clock.js';
import type { Engine } from '../engines/engine.js';
import { serviceKey } from '../core/registry.js';
import { AlertRules, type AlertTransition, type ServiceObservation } from './rules.js';
import { Webhook, displayUrl, type DeliveryResult } from './webhooks.js';

export interface AlertsOptions {
  engine: Engine;
  webhooks: string[];
  limits: Limits;
  logger: Logger;
  /** Wall clock for the messages' times; Date.now by default. */
  clock?: Clock;
  fetch?: typeof fetch;
}

const DELETES = new Set<string>(DELETE_REASONS);

export class Alerts {
  private readonly rules: AlertRules;
  private readonly hooks: Webhook[];
  /** Services touched since the last evaluation, with the reason of their last delete. */
  private dirty = new Map<string, { namespace: string; service: string; lastRemoval?: DeleteReason }>();
  private readonly unsubscribe: () => void;
  private readonly timer: NodeJS.Timeout;
  private fired = new Map<AlertName, number>();
  private results = new Map<DeliveryResult, number>();
  private closed = false;

  constructor(private readonly opts: AlertsOptions) {
    const { engine, limits } = opts;
    this.rules = new AlertRules({ clock: opts.clock ?? { now: () => Date.now() }, newId: () => randomBytes(8).toString('hex') });
    this.hooks = opts.webhooks.map(
      (url) =>
        new Webhook({
          url,
          limits,
          ...(opts.fetch ? { fetch: opts.fetch } : {}),
          onResult: (result, message, error) => {
            this.results.set(result, (this.results.get(result) ?? 0) + 1);
            const log = { alert: message.alert, status: message.status, episodeId: message.episodeId, subject: message.subject, webhook: displayUrl(url), error };
            if (result === 'failed' || result === 'dropped') opts.logger.error(log, `alert message ${result === 'failed' ? 'given up after the last attempt' : 'dropped: the webhook queue is full'}`);
            else if (result === 'retried') opts.logger.warn(log, 'alert delivery failed; retrying');
          },
        }),
    );
    // Every service known now is evaluated once, so that the ones with healthy instances
    // are remembered as such.
    for (const svc of engine.registry.allServices()) this.dirty.set(serviceKey(svc.namespace, svc.name), { namespace: svc.namespace, service: svc.name });
    this.unsubscribe = engine.hub.subscribe({
      services: null,
      deliver: (events: WatchEvent[]) => {
        for (const e of events) {
          const key = serviceKey(e.namespace, e.service);
          let d = this.dirty.get(key);
          if (!d) this.dirty.set(key, (d = { namespace: e.namespace, service: e.service }));
          if (e.type === 'delete' && e.reason !== undefined && DELETES.has(e.reason)) d.lastRemoval = e.reason as DeleteReason;
        }
      },
    });
    this.timer = setInterval(() => this.evaluate(), Math.max(10, limits.alertEvaluateIntervalMs));
    this.timer.unref();
    this.evaluate();
  }

  /** Evaluates now (also run on a timer) and sends the transitions. */
  evaluate(): AlertTransition[] {
    if (this.closed) return [];
    const { engine } = this.opts;
    const dirty = this.dirty;
    this.dirty = new Map();
    const services: ServiceObservation[] = [];
    for (const d of dirty.values()) {
      const svc = engine.registry.service(d.namespace, d.service);
      services.push({ namespace: d.namespace, service: d.service, instances: svc?.instances.size ?? 0, up: svc?.up ?? 0, healthy: svc?.healthy ?? 0, ...(d.lastRemoval ? { lastRemoval: d.lastRemoval } : {}) });
    }
    const transitions = this.rules.evaluate({ services, selfPreservation: engine.registry.selfPreservationStatus(), cluster: engine.cluster?.() });
    for (const t of transitions) {
      if (t.status === 'firing') this.fired.set(t.episode.alert, (this.fired.get(t.episode.alert) ?? 0) + 1);
      const message: AlertMessage = { version: 1, status: t.status, ...t.episode, node: { id: engine.nodeId, mode: engine.mode }, sentAt: '' };
      const log = { alert: t.episode.alert, episodeId: t.episode.episodeId, subject: t.episode.subject };
      if (t.status === 'firing') this.opts.logger.warn(log, `alert firing: ${t.episode.summary}`);
      else this.opts.logger.info(log, `alert resolved: ${t.episode.summary}`);
      for (const h of this.hooks) h.send(message);
    }
    return transitions;
  }

  status(): AlertsStatus {
    return { active: this.rules.active(), webhooks: this.hooks.map((h) => h.status()) };
  }

  registerMetrics(registry: client.Registry): void {
    const self = this;
    new client.Gauge({
      name: 'switchboard_alerts_active',
      help: 'Alert episodes now active, by alert',
      labelNames: ['alert'] as const,
      registers: [registry],
      collect() {
        const counts = new Map<string, number>(ALERT_NAMES.map((a) => [a, 0]));
        for (const e of self.rules.active()) counts.set(e.alert, (counts.get(e.alert) ?? 0) + 1);
        for (const [alert, n] of counts) this.set({ alert }, n);
      },
    });
    new client.Counter({
      name: 'switchboard_alerts_fired_total',
      help: 'Alert episodes started, by alert',
      labelNames: ['alert'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const alert of ALERT_NAMES) this.inc({ alert }, self.fired.get(alert) ?? 0);
      },
    });
    new client.Counter({
      name: 'switchboard_alert_deliveries_total',
      help: 'Alert message delivery outcomes over all webhooks: delivered, retried (an attempt failed), failed (given up), dropped (queue full)',
      labelNames: ['result'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const result of ['delivered', 'retried', 'failed', 'dropped'] as const) this.inc({ result }, self.results.get(result) ?? 0);
      },
    });
    new client.Gauge({
      name: 'switchboard_alert_deliveries_pending',
      help: 'Alert messages waiting to be delivered, over all webhooks',
      registers: [registry],
      collect() {
        this.set(self.hooks.reduce((n, h) => n + h.pending, 0));
      },
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.unsubscribe();
    for (const h of this.hooks) h.close();
  }
}
