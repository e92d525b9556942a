import type { AlertsStatus, Limits } from '@switchboard/protocol';
import type { Engine } from '../engines/engine.js';
import type { Metrics } from './metrics.js';

/** What every route plugin gets. */
export interface ApiContext {
  engine: Engine;
  limits: Limits;
  metrics: Metrics;
  version: string;
  startedAt: Date;
  /** Set while the node shuts down: /readyz fails and streams end. */
  closing: { value: boolean };
  /** Drains waiting for their watchers (they count against maxBlockingQueriesPerNode with blocking queries). */
  drainsWaiting: { value: number };
  /** Milliseconds between keep-alive comments on idle watch streams. */
  watchHeartbeatMs: number;
  /** The node's alerts (status field `alerts`), when the agent runs them. */
  alerts?: AlertsView;
}

/** What the API shows of the alerts (alerts/index.ts). */
export interface AlertsView {
  status(): AlertsStatus;
  registerMetrics(registry: import('prom-client').Registry): void;
}

export const errorResponses = {
  '4xx': { $ref: 'Problem#' },
  '5xx': { $ref: 'Problem#' },
} as const;
