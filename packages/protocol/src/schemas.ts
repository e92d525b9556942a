/**
 * JSON Schemas of API v1, used to publish the OpenAPI document (`/v1/openapi.json`).
 * Validation itself is done by validate.ts, which gives precise fields and hints.
 */
import { ADMIN_STATUSES, CHECK_TYPES, DELETE_REASONS, HEALTH_STATES, PROTOCOLS } from './types.js';

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
    interval: { type: 'string', description: 'duration, default 10s' },
    timeout: { type: 'string', description: 'duration, default 2s' },
    ttl: { type: 'string', description: 'ttl checks: duration, default 30s' },
  },
} as const;

export const checkStateSchema = {
  type: 'object',
  properties: { id: str, type: { type: 'string', enum: [...CHECK_TYPES] }, status: { type: 'string', enum: [...HEALTH_STATES] }, output: str },
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
  },
} as const;

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

export const writeResultSchema = { type: 'object', properties: { revision } } as const;
export const leaseGrantSchema = { type: 'object', properties: { leaseId: str, ttlMs: int } } as const;
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
    reason: { type: 'string', enum: [...DELETE_REASONS] },
  },
} as const;
