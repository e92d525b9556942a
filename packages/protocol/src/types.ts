/** Wire types of REST API v1 (api-v1.md). Field names are camelCase. */

export const ADMIN_STATUSES = ['up', 'draining', 'out_of_service'] as const;
export type AdminStatus = (typeof ADMIN_STATUSES)[number];

export const HEALTH_STATES = ['passing', 'warning', 'critical'] as const;
export type Health = (typeof HEALTH_STATES)[number];

export const PROTOCOLS = ['http', 'https', 'grpc', 'tcp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

export const CHECK_TYPES = ['http', 'tcp', 'grpc', 'ttl'] as const;
export type CheckType = (typeof CHECK_TYPES)[number];

export const MODES = ['standalone', 'ap', 'cp'] as const;
export type Mode = (typeof MODES)[number];

/** A check as declared at registration. */
export interface CheckSpec {
  id: string;
  type: CheckType;
  /** http: the URL to GET; tcp and grpc: `host:port` (default: the instance's). */
  target: string | null;
  intervalMs: number;
  timeoutMs: number;
  /** ttl checks: how long a report stays valid. */
  ttlMs: number | null;
}

/** A check as reported with an instance. */
export interface CheckState {
  id: string;
  type: CheckType;
  status: Health;
  output: string;
}

/** The body of a registration, after validation and defaults. */
export interface InstanceInput {
  address: string;
  port: number;
  leaseId: string | null;
  zone: string | null;
  version: string | null;
  tags: string[];
  metadata: Record<string, string>;
  weight: number;
  protocol: Protocol;
  checks: CheckSpec[];
}

/** An instance as returned by the API. */
export interface Instance {
  id: string;
  service: string;
  namespace: string;
  address: string;
  port: number;
  protocol: Protocol;
  zone: string | null;
  version: string | null;
  tags: string[];
  metadata: Record<string, string>;
  weight: number;
  status: AdminStatus;
  health: Health;
  checks: CheckState[];
  leaseId: string | null;
  createRevision: number;
  modRevision: number;
}

export interface LeaseGrant {
  leaseId: string;
  ttlMs: number;
}

export interface WriteResult {
  revision: number;
}

export interface ServiceSummary {
  name: string;
  namespace?: string;
  instances: number;
  passing: number;
}

export interface ServiceList {
  revision: number;
  services: ServiceSummary[];
}

export interface ServiceAnswer {
  service: string;
  revision: number;
  instances: Instance[];
  protected?: boolean;
  stale?: boolean;
  staleMs?: number;
}

export const DELETE_REASONS = [
  'deregistered',
  'lease_expired',
  'lease_revoked',
  'critical_timeout',
] as const;
export type DeleteReason = (typeof DELETE_REASONS)[number];

export interface WatchEvent {
  epoch: string;
  revision: number;
  type: 'put' | 'delete';
  service: string;
  namespace: string;
  instance: Instance;
  reason?: DeleteReason;
}

export interface ResetEvent {
  epoch: string;
  revision: number;
}

export interface NodeStatus {
  nodeId: string;
  mode: Mode;
  version: string;
  epoch: string;
  revision: number;
  startedAt: string;
  uptimeMs: number;
  leases: number;
  instances: number;
  services: number;
  watchers: number;
  sessions: number;
  selfPreservation: { engaged: boolean };
  storage: { durable: boolean; dataDir: string | null };
}
