/**
 * Read models: service answers filtered as api-v1.md describes (and projected to chosen
 * fields, an extension) and serialised once per service revision and query (instances
 * reuse their own cached JSON when every field is asked for).
 */
import { isHealthy, matchesFilter, type Instance, type InstanceFilter } from '@switchboard/protocol';
import type { InstanceRecord, ServiceState } from './registry.js';

export interface ServiceQuery extends InstanceFilter {
  /**
   * The instance fields to answer (the `fields` projection): `id` first, then the others in
   * the order of INSTANCE_FIELDS; null or absent for every field.
   */
  fields?: readonly string[] | null;
}

export const NO_FILTER: ServiceQuery = Object.freeze({ healthy: false, zone: null, tags: [], version: null, fields: null });

/** Distinct filters cached per service; further ones are serialised per request. */
const MAX_CACHED_FILTERS = 16;

interface Cache {
  revision: number;
  answers: Map<string, string>;
  /** The same answers as UTF-8 bytes, for the HTTP layer (encoded once, not per request). */
  bytes: Map<string, Buffer>;
}
const caches = new WeakMap<ServiceState, Cache>();

export { isHealthy };
export const matches = (i: Instance, q: ServiceQuery): boolean => matchesFilter(i, q);

function queryKey(q: ServiceQuery): string {
  // The usual reads (no filter; or only a projection, whose names are checked instance
  // field names) without building JSON: such a key never starts with "[".
  if (!q.healthy && q.zone === null && q.tags.length === 0 && q.version === null) return q.fields ? q.fields.join(',') : '';
  // Unambiguous: tags may contain "," and "|" (`tag=a,b` and `tag=a&tag=b` are different
  // filters, and shared one cached answer when the key joined them with separators).
  return JSON.stringify([q.healthy, q.zone ?? null, q.tags, q.version ?? null, q.fields ?? null]);
}

/** An instance's JSON with only the given fields (absent optional ones left out). */
function projectedJson(i: Instance, fields: readonly string[]): string {
  const out: Record<string, unknown> = {};
  const all = i as unknown as Record<string, unknown>;
  for (const f of fields) if (all[f] !== undefined) out[f] = all[f];
  return JSON.stringify(out);
}

/** The instances of a service that match a query, sorted by id. */
export function selectInstances(svc: ServiceState | undefined, q: ServiceQuery): InstanceRecord[] {
  if (!svc) return [];
  const out: InstanceRecord[] = [];
  for (const r of svc.instances.values()) if (matches(r.instance, q)) out.push(r);
  return out.sort((a, b) => (a.instance.id < b.instance.id ? -1 : a.instance.id > b.instance.id ? 1 : 0));
}

/**
 * A `healthy=true` query under a protect threshold: when fewer than `threshold` of the
 * instances it considers (status `up`, the other filters matching) are healthy, it answers
 * all of them and says so, rather than piling every request on the few left. Instances an
 * operator took out (draining, out_of_service) are never included.
 */
function protectedSelection(svc: ServiceState, q: ServiceQuery, threshold: number): InstanceRecord[] | null {
  const candidates = selectInstances(svc, { ...q, healthy: false }).filter((r) => r.instance.status === 'up');
  if (candidates.length === 0) return null;
  const healthy = candidates.filter((r) => isHealthy(r.instance)).length;
  return healthy < threshold * candidates.length ? candidates : null;
}

/**
 * The JSON body of `GET /v1/services/{service}`: `{"service","revision","instances"}`, with
 * `"protected": true` when a protect threshold widened a `healthy=true` answer. Cached per
 * service revision and filter (settings changes move the revision), so a hot service is
 * serialised once per change.
 */
export function serviceAnswerJson(svc: ServiceState | undefined, name: string, revision: number, q: ServiceQuery, protectThreshold: number | null = null, epoch = ''): string {
  const tail = epoch === '' ? '' : `,"epoch":${JSON.stringify(epoch)}`;
  if (!svc) return `{"service":${JSON.stringify(name)},"revision":${revision},"instances":[]${tail}}`;
  let cache = caches.get(svc);
  if (!cache || cache.revision !== svc.revision) {
    cache = { revision: svc.revision, answers: new Map(), bytes: new Map() };
    caches.set(svc, cache);
  }
  const key = queryKey(q);
  const hit = cache.answers.get(key);
  if (hit !== undefined) return hit;
  const widened = q.healthy && protectThreshold !== null ? protectedSelection(svc, q, protectThreshold) : null;
  const records = widened ?? selectInstances(svc, q);
  const fields = q.fields ?? null;
  const items = fields === null ? records.map((r) => r.json) : records.map((r) => projectedJson(r.instance, fields));
  const body = `{"service":${JSON.stringify(name)},"revision":${svc.revision},"instances":[${items.join(',')}]${widened ? ',"protected":true' : ''}${tail}}`;
  if (cache.answers.size < MAX_CACHED_FILTERS) cache.answers.set(key, body);
  return body;
}

/**
 * serviceAnswerJson as UTF-8 bytes, cached the same way: a hot answer is encoded once per
 * service revision and filter instead of once per request.
 */
export function serviceAnswerBytes(svc: ServiceState | undefined, name: string, revision: number, q: ServiceQuery, protectThreshold: number | null = null, epoch = ''): Buffer {
  const key = queryKey(q);
  const hit = svc ? caches.get(svc) : undefined;
  if (hit !== undefined && hit.revision === svc?.revision) {
    const bytes = hit.bytes.get(key);
    if (bytes !== undefined) return bytes;
  }
  const json = serviceAnswerJson(svc, name, revision, q, protectThreshold, epoch);
  const bytes = Buffer.from(json, 'utf8');
  const cache = svc ? caches.get(svc) : undefined;
  // Kept only next to its cached text (the same bound on distinct filters).
  if (cache !== undefined && cache.answers.get(key) === json) cache.bytes.set(key, bytes);
  return bytes;
}
