/**
 * JSON Schemas of API v1, used to publish the OpenAPI document (`/v1/openapi.json`).
 * Validation itself is done by validate.ts, which gives precise fields and hints.
 */
import { ADMIN_STATUSES, CHECK_REPORT_STATUSES, CHECK_TYPES, DELETE_REASONS, HEALTH_STATES, PROTOCOLS, PUT_REASONS, REPORT_KINDS } from './types.js';

const str = { type: 'string' } as const;
const int = { type: 'integer' } as const;
const nullableStr = { type: ['string', 'null'] } as const;
const revision = { type: 'integer', minimum: 0, description: 'store revision' } as const;

export const labelSchema = { type: 'string', pattern: '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$' } as const;
export const instanceIdSchema = { type: 'string', pattern: '^[A-Za-z0-9._:-]{1,128}$' } as const;

export const checkSpecSchema = {
  type: 'object',
  required: ['type'],
  properties: {
    id: instanceIdSchema,
    type: { type: 'string', enum: [...CHECK_TYPES] },
    target: { type: 'string', description: 'http: URL; tcp, grpc: host:port (default: the instance)' },
    interval: { type: 'string', description: 'duration, default 10s (100ms..1h)' },
    timeout: { type: 'string', description: 'duration, default 2s or the interval if shorter; every run is cut off after it' },
    ttl: { type: 'string', description: 'ttl checks: how long a report stays valid, default 30s' },
    jitter: { type: 'string', description: 'each run moves by a random amount up to this, default a tenth of the interval (at most half of it)' },
    expectBody: { type: 'string', maxLength: 1024, description: 'http checks: a 2xx answer passes only if its body contains this text' },
    grpcService: { type: 'string', maxLength: 256, description: 'grpc checks: the service name sent in grpc.health.v1 HealthCheckRequest, default "" (the whole server)' },
    passingThreshold: { type: 'integer', minimum: 1, maximum: 100, default: 1, description: 'consecutive passing results before a failing check shows passing' },
    criticalThreshold: { type: 'integer', minimum: 1, maximum: 100, description: 'consecutive failing results before a passing check shows failing; default 2 (ttl checks: 1)' },
    deregisterCriticalAfter: { type: 'string', description: 'persistent instances: deregister (reason critical_timeout) once this check has been critical this long' },
  },
} as const;

export const checkStateSchema = {
  type: 'object',
  properties: {
    id: str,
    type: { type: 'string', enum: [...CHECK_TYPES, 'reports'], description: '`reports`: the warning raised by consumer reports (not declared)' },
    status: { type: 'string', enum: [...HEALTH_STATES] },
    output: str,
  },
} as const;

export const instanceInputSchema = {
  type: 'object',
  required: ['address', 'port'],
  properties: {
    address: { type: 'string', maxLength: 253, description: 'hostname or IP literal' },
    port: { type: 'integer', minimum: 1, maximum: 65535 },
    leaseId: { ...nullableStr, description: 'absent: a persistent instance' },
    zone: { ...labelSchema, type: ['string', 'null'] },
    version: { ...nullableStr, description: 'semver version' },
    tags: { type: 'array', items: str },
    metadata: { type: 'object', additionalProperties: str },
    weight: { type: 'integer', minimum: 0, maximum: 10000, default: 100 },
    protocol: { type: 'string', enum: [...PROTOCOLS], default: 'http' },
    checks: { type: 'array', items: checkSpecSchema },
  },
} as const;

export const instanceSchema = {
  type: 'object',
  properties: {
    id: str,
    service: str,
    namespace: str,
    address: str,
    port: int,
    protocol: { type: 'string', enum: [...PROTOCOLS] },
    zone: nullableStr,
    version: nullableStr,
    tags: { type: 'array', items: str },
    metadata: { type: 'object', additionalProperties: str },
    weight: int,
    status: { type: 'string', enum: [...ADMIN_STATUSES] },
    health: { type: 'string', enum: [...HEALTH_STATES] },
    checks: { type: 'array', items: checkStateSchema },
    leaseId: nullableStr,
    createRevision: revision,
    modRevision: revision,
    owner: { type: 'string', description: 'ap mode (an extension): the node that owns the record' },
    unconfirmed: { type: 'boolean', description: 'ap mode (an extension): present and true while the owner node is unreachable' },
  },
} as const;

/**
 * The fields of an instance in the order answers give them: the names a read's `fields`
 * projection may choose from (`id` is always answered).
 */
export const INSTANCE_FIELDS = Object.freeze(Object.keys(instanceSchema.properties)) as readonly (keyof typeof instanceSchema.properties)[];

export const problemSchema = {
  type: 'object',
  description: 'application/problem+json',
  properties: {
    type: str,
    title: str,
    status: int,
    detail: str,
    code: str,
    hint: str,
    field: str,
    limit: str,
    retryAfterSec: int,
  },
} as const;

const warnings = { type: 'array', items: str, description: '(extension) body fields the node ignored because it does not know them, each with the field meant when one is close; absent when there were none' } as const;
export const writeResultSchema = { type: 'object', properties: { revision, warnings } } as const;
export const leaseGrantSchema = { type: 'object', properties: { leaseId: str, ttlMs: int, warnings } } as const;
export const leaseRequestSchema = { type: 'object', required: ['ttlMs'], properties: { ttlMs: { type: 'integer' } } } as const;
export const statusBodySchema = { type: 'object', required: ['status'], properties: { status: { type: 'string', enum: [...ADMIN_STATUSES] } } } as const;

export const batchSchema = {
  type: 'object',
  required: ['instances'],
  properties: {
    instances: {
      type: 'array',
      items: {
        type: 'object',
        required: ['service', 'id', 'address', 'port'],
        properties: { service: labelSchema, id: instanceIdSchema, namespace: labelSchema, ...instanceInputSchema.properties },
      },
    },
  },
} as const;

export const serviceAnswerSchema = {
  type: 'object',
  properties: {
    service: str,
    revision,
    instances: { type: 'array', items: instanceSchema },
    protected: { type: 'boolean' },
    epoch: { type: 'string', description: 'the epoch the revision belongs to (extension)' },
    stale: { type: 'boolean' },
    staleMs: int,
  },
} as const;

export const serviceListSchema = {
  type: 'object',
  properties: {
    revision,
    services: {
      type: 'array',
      items: { type: 'object', properties: { name: str, namespace: str, instances: int, passing: int } },
    },
  },
} as const;

export const watchEventSchema = {
  type: 'object',
  description: 'data of an SSE `put` or `delete` event',
  properties: {
    epoch: str,
    revision,
    type: { type: 'string', enum: ['put', 'delete'] },
    service: str,
    namespace: str,
    instance: instanceSchema,
    reason: { type: 'string', enum: [...PUT_REASONS, ...DELETE_REASONS], description: 'why the instance changed; on puts an extension of the contract' },
  },
} as const;

export const checkReportSchema = {
  type: 'object',
  required: ['status'],
  properties: {
    status: { type: 'string', enum: [...CHECK_REPORT_STATUSES], description: 'pass, warn and fail are passing, warning and critical' },
    output: { type: 'string', description: 'one line of text, at most maxCheckOutputLength characters' },
  },
} as const;

export const serviceSettingsSchema = {
  type: 'object',
  required: ['protectThreshold'],
  properties: {
    protectThreshold: { type: ['number', 'null'], exclusiveMinimum: 0, maximum: 1, description: 'below this healthy share, healthy=true answers include the unhealthy instances and say "protected"; null turns it off' },
  },
} as const;

export const consumerReportSchema = {
  type: 'object',
  required: ['reporter', 'kind'],
  properties: {
    reporter: { ...instanceIdSchema, description: 'who reports: one id per consumer process, such as its own instance id' },
    kind: { type: 'string', enum: [...REPORT_KINDS] },
    detail: { type: 'string', description: 'one line of text' },
  },
} as const;

export const consumerReportResultSchema = {
  type: 'object',
  properties: {
    revision,
    reporters: { type: 'integer', description: 'distinct reporters of this instance within the window' },
    warning: { type: 'boolean', description: 'the reports hold the instance at warning' },
    warnings,
  },
} as const;

export const historyEntrySchema = {
  type: 'object',
  properties: {
    revision,
    at: { type: ['string', 'null'], format: 'date-time' },
    type: { type: 'string', enum: ['put', 'delete'] },
    reason: { type: 'string', enum: [...PUT_REASONS, ...DELETE_REASONS] },
    detail: nullableStr,
    status: { type: 'string', enum: [...ADMIN_STATUSES] },
    health: { type: 'string', enum: [...HEALTH_STATES] },
  },
} as const;

export const instanceHistorySchema = {
  type: 'object',
  properties: {
    service: str,
    namespace: str,
    id: str,
    exists: { type: 'boolean', description: 'false: the instance is gone, its history remains' },
    history: { type: 'array', items: historyEntrySchema, description: 'oldest first' },
  },
} as const;

export const drainResultSchema = {
  type: 'object',
  properties: {
    revision,
    watchers: { type: 'integer', description: 'watch streams of the service on this node' },
    reached: { type: 'integer', description: 'streams that were sent the change and flushed it' },
    timedOut: { type: 'integer', description: 'streams not flushed when the wait ended' },
    gone: { type: 'integer', description: 'streams that closed first' },
    warnings,
  },
} as const;

const selfPreservationScopeSchema = {
  type: 'object',
  properties: { zone: nullableStr, engaged: { type: 'boolean' }, since: { type: ['string', 'null'], format: 'date-time' }, expiredInWindow: int, leases: int },
} as const;

export const selfPreservationSchema = {
  type: 'object',
  properties: {
    engaged: { type: 'boolean' },
    state: { type: 'string', enum: ['normal', 'protecting'] },
    reason: nullableStr,
    since: { type: ['string', 'null'], format: 'date-time' },
    expiredInWindow: { type: 'integer', description: 'leases that lapsed within the window or are held' },
    leases: { type: 'integer', description: 'leases counted: live ones and those evicted within the window' },
    threshold: { type: 'number', description: 'share of leases that must lapse to engage' },
    windowMs: int,
    minLeases: int,
    maxHoldMs: int,
    blockedLeases: { type: 'integer', description: 'leases held past their deadline now' },
    releasingLeases: { type: 'integer', description: 'held leases no longer protected, each with its TTL once more to renew before it is evicted' },
    blockedEvictions: { type: 'integer', description: 'evictions blocked since the node started' },
    zones: { type: 'array', items: selfPreservationScopeSchema, description: 'zones engaged on their own' },
  },
} as const;
