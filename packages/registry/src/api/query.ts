/** Parsing of query parameters into checked values (unknown parameters are ignored). */
import { INSTANCE_FIELDS, SwitchboardError, capWarnings, closestField } from '@switchboard/protocol';
import {
  DEFAULT_NAMESPACE,
  invalid,
  limitExceeded,
  parseDuration,
  validateInstanceId,
  validateLabel,
  validateNamespace,
  validateServiceName,
  validateVersionRange,
  type Limits,
} from '@switchboard/protocol';
import type { ServiceQuery } from '../core/views.js';

export type Query = Record<string, string | string[] | undefined>;

/** The query of a read of one namespace: `consistent=true` is accepted on every read (api.md). */
export const readQuerySchema = {
  type: 'object',
  properties: {
    namespace: { type: 'string', default: 'default' },
    consistent: { type: 'boolean', description: 'answer only from a state that reflects every write completed before the request (cp waits for it; standalone and ap always do)' },
  },
} as const;

/** The query of a write or of a request that takes nothing but the namespace. */
export const nsQuerySchema = { type: 'object', properties: { namespace: { type: 'string', default: 'default' } } } as const;

/** The query of a request that takes no parameter (each one sent is unknown: warned of, or refused when strict). */
export const noQuerySchema = { type: 'object', properties: {} } as const;

/** The single value of a parameter; a repeated one is an error. */
export function single(q: Query, name: string): string | undefined {
  const v = q[name];
  if (Array.isArray(v)) throw invalid(name, `query parameter ${name} is given ${v.length} times`, `give ${name} once`);
  return v;
}

export function list(q: Query, name: string): string[] {
  const v = q[name];
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

export function namespaceOf(q: Query): string {
  const v = single(q, 'namespace');
  return v === undefined || v === '' ? DEFAULT_NAMESPACE : validateNamespace(v);
}

export function bool(q: Query, name: string): boolean {
  const v = single(q, name);
  if (v === undefined || v === '' || v === 'false') return false;
  if (v === 'true') return true;
  throw invalid(name, `${name}=${v} is not a boolean`, `write ${name}=true or ${name}=false`);
}

export function nonNegativeInt(q: Query, name: string): number | undefined {
  const v = single(q, name);
  if (v === undefined || v === '') return undefined;
  if (!/^\d{1,15}$/.test(v)) throw invalid(name, `${name}=${v} is not a non-negative integer`, `write ${name} as a revision number such as ${name}=42`);
  return Number(v);
}

export function serviceQuery(q: Query, limits: Limits): ServiceQuery {
  const zoneText = single(q, 'zone');
  const zone = zoneText === undefined || zoneText === '' ? null : validateLabel(zoneText, 'zone', 'zone');
  const tags = list(q, 'tag');
  if (tags.length > limits.maxQueryTags) {
    throw limitExceeded('maxQueryTags', 'tag', `${tags.length} tag filters, at most ${limits.maxQueryTags}`, 'filter on fewer tags');
  }
  const versionText = single(q, 'version');
  const version = versionText === undefined || versionText === '' ? null : validateVersionRange(versionText);
  return { healthy: bool(q, 'healthy'), zone, tags: [...tags].sort(), version, fields: fieldsParam(q) };
}

/** Distinct `fields` texts whose parsed projection is kept (a read path parses it once). */
const MAX_CACHED_PROJECTIONS = 64;
const projections = new Map<string, readonly string[] | null>();

/**
 * The `fields` projection of a read (`fields=address,port`, repeatable): the instance
 * fields to answer, `id` always among them, in the answers' own order; null (every field)
 * when absent or empty.
 */
export function fieldsParam(q: Query): readonly string[] | null {
  const v = q.fields;
  if (v === undefined) return null;
  const text = Array.isArray(v) ? v.join(',') : v;
  const hit = projections.get(text);
  if (hit !== undefined) return hit;
  const names = text
    .split(',')
    .map((n) => n.trim())
    .filter((n) => n !== '');
  const known: readonly string[] = INSTANCE_FIELDS;
  for (const n of names) {
    if (known.includes(n)) continue;
    const close = closestField(n, known);
    throw invalid('fields', `${JSON.stringify(n.slice(0, 64))} in fields is not a field of an instance`, `${close ? `did you mean ${close}? ` : ''}choose among ${known.join(', ')}, such as fields=address,port`);
  }
  const wanted = new Set(names);
  const fields = names.length === 0 ? null : Object.freeze(known.filter((f) => f === 'id' || wanted.has(f)));
  if (projections.size < MAX_CACHED_PROJECTIONS && text.length <= 256) projections.set(text, fields);
  return fields;
}

/** A duration parameter (`wait=30s`), at most `max` (the limit `limit`). */
export function durationParam(q: Query, name: string, fallback: number, max: number, limit: string): number {
  const text = single(q, name);
  if (text === undefined || text === '') return fallback;
  const ms = parseDuration(text);
  if (ms === undefined) throw invalid(name, `${name}=${text} is not a duration`, `write it like ${name}=500ms, ${name}=30s or ${name}=5m`);
  if (ms > max) {
    throw limitExceeded(limit, name, `${name}=${text} is longer than ${max} ms`, `wait at most ${max / 1000}s and repeat the request`);
  }
  return ms;
}

/** `index` and `wait` of a blocking query; undefined when the query does not block. */
export function blocking(q: Query, limits: Limits): { index: number; waitMs: number } | undefined {
  const index = nonNegativeInt(q, 'index');
  const waitMs = durationParam(q, 'wait', limits.blockingWaitDefaultMs, limits.blockingWaitMaxMs, 'blockingWaitMaxMs');
  return index === undefined ? undefined : { index, waitMs };
}

/** The instance a route's path and query name, checked in path order: service, id, namespace. */
export function instanceTarget(req: { params: unknown; query: unknown }): { namespace: string; service: string; id: string } {
  const p = req.params as Record<string, string>;
  const service = serviceParam(p.service);
  const id = validateInstanceId(p.instanceId);
  return { namespace: namespaceOf(req.query as Query), service, id };
}

export function serviceParam(v: unknown): string {
  return validateServiceName(v, 'service');
}

/**
 * Query parameters a route does not declare (api-v1.md: ignored), with the one meant when
 * one is close: kept per request by app.ts (which also sends them in a
 * `Switchboard-Warning` header) for the write routes to list in their answers.
 */
export const queryWarnings = new WeakMap<object, string[]>();

/** The request header that asks for unknown fields and parameters to be refused instead of ignored. */
export const STRICT_HEADER = 'switchboard-strict';

/**
 * `warnings` (unknown fields or parameters), refused with 400 UNKNOWN_FIELD when the
 * request asks for it (`Switchboard-Strict: true`), before anything is written; else
 * returned, to be ignored and listed as the contract has it.
 */
export function refuseIfStrict(req: { headers: Record<string, string | string[] | undefined> }, warnings: string[]): string[] {
  if (warnings.length === 0) return warnings;
  const h = req.headers[STRICT_HEADER];
  return refuseUnknown(h !== undefined && /^(true|1)$/i.test(String(h).trim()), warnings, 'Switchboard-Strict');
}

/** `warnings`, or 400 UNKNOWN_FIELD listing them when the request is `strict` (asked for by `how`). */
export function refuseUnknown(strict: boolean, warnings: string[], how: string): string[] {
  if (!strict || warnings.length === 0) return warnings;
  throw new SwitchboardError('UNKNOWN_FIELD', capWarnings(warnings).join('; '), {
    hint: `drop or correct the fields and parameters named, or send the request without ${how} to have unknown ones ignored`,
  });
}

/** The answer of a write, with the unknown fields and parameters it ignored (an extension). */
export function withWarnings<T extends object>(req: object, answer: T, bodyWarnings: string[] = []): T & { warnings?: string[] } {
  const all = [...(queryWarnings.get(req) ?? []), ...bodyWarnings];
  return all.length === 0 ? answer : { ...answer, warnings: capWarnings(all) };
}
