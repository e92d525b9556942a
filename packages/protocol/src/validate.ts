/**
 * Validation of request bodies and names, shared by the server and clients. Every
 * failure is a SwitchboardError naming the field and saying how to fix it.
 */
import semver from 'semver';
import { invalid, limitExceeded, SwitchboardError } from './errors.js';
import type { Limits } from './limits.js';
import { parseDuration } from './duration.js';
import { DNS_LABEL, INSTANCE_ID, LEASE_ID, isAddress } from './names.js';
import {
  ADMIN_STATUSES,
  CHECK_TYPES,
  PROTOCOLS,
  type AdminStatus,
  type CheckSpec,
  type CheckType,
  type InstanceInput,
  type Protocol,
} from './types.js';

type Obj = Record<string, unknown>;

function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `"${v.length > 40 ? v.slice(0, 40) + '…' : v}"`;
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
}

/**
 * The body (or, with `field`, a nested item such as `instances/3`) as a JSON object.
 * An empty body arrives here as undefined: the content-type parser passes it through so
 * that the answer can say which body the route wanted.
 */
export function requireBody(body: unknown, example: string, field = 'body'): Obj {
  const what = field === 'body' ? 'the body' : field;
  if (body === undefined || (body === null && field === 'body')) {
    throw invalid(field, field === 'body' ? 'the request needs a JSON object body' : `${what} is missing`, `send a body such as ${example}`);
  }
  if (!isObject(body)) {
    throw invalid(field, `${what} must be a JSON object, not ${describe(body)}`, `send ${example}`);
  }
  return body;
}

/** A missing required field gets its own message rather than "nothing is not valid". */
function required(value: unknown, field: string, hint: string): void {
  if (value === undefined) throw invalid(field, `${field} is required`, hint);
}

export function validateLabel(value: unknown, field: string, what: string): string {
  if (typeof value !== 'string' || !DNS_LABEL.test(value)) {
    throw invalid(
      field,
      `${what} ${describe(value)} is not a lowercase DNS label`,
      'use 1-63 characters of a-z, 0-9 and "-", starting and ending with a letter or digit',
    );
  }
  return value;
}

export const validateServiceName = (v: unknown, field = 'service'): string =>
  validateLabel(v, field, 'service name');
export const validateNamespace = (v: unknown, field = 'namespace'): string =>
  validateLabel(v, field, 'namespace');

export function validateInstanceId(value: unknown, field = 'instanceId'): string {
  if (typeof value !== 'string' || !INSTANCE_ID.test(value)) {
    throw invalid(
      field,
      `instance id ${describe(value)} is not valid`,
      'use 1-128 characters of A-Z, a-z, 0-9, ".", "_", ":" and "-"',
    );
  }
  return value;
}

export function validateLeaseId(value: unknown, field = 'leaseId'): string {
  if (typeof value !== 'string' || !LEASE_ID.test(value)) {
    throw invalid(field, `lease id ${describe(value)} is not valid`, 'use the leaseId returned by POST /v1/leases');
  }
  return value;
}

function integerIn(value: unknown, field: string, min: number, max: number, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(field, `${what} must be an integer from ${min} to ${max}, got ${describe(value)}`, `send ${field} as a JSON number in ${min}..${max}`);
  }
  return value;
}

function oneOf<T extends string>(value: unknown, field: string, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalid(field, `${field} ${describe(value)} is not one of ${allowed.join(', ')}`, `use one of: ${allowed.join(', ')}`);
  }
  return value as T;
}

export function validateVersion(value: unknown, field: string, limits: Limits): string {
  if (typeof value === 'string' && value.length > limits.maxVersionLength) {
    throw limitExceeded('maxVersionLength', field, `version of ${value.length} characters, at most ${limits.maxVersionLength}`, 'shorten the version; keep build details in metadata');
  }
  // semver.valid() drops build metadata ("1.2.3+b5" -> "1.2.3"), so compare the full
  // canonical form: this refuses "v1.2.3", "=1.2.3" and " 1.2.3" but keeps "1.2.3+b5".
  const parsed = typeof value === 'string' ? semver.parse(value) : null;
  const canonical = parsed ? parsed.version + (parsed.build.length > 0 ? `+${parsed.build.join('.')}` : '') : null;
  if (typeof value !== 'string' || canonical !== value) {
    throw invalid(field, `version ${describe(value)} is not a semver version`, 'write it like 1.4.2 or 2.0.0-rc.1 (no leading "v")');
  }
  return value;
}

/** Ranges longer than this are refused before parsing: semver's parser is slow on long input. */
export const MAX_VERSION_RANGE_LENGTH = 256;

export function validateVersionRange(value: string, field = 'version'): string {
  if (value.length > MAX_VERSION_RANGE_LENGTH) {
    throw limitExceeded('maxVersionRangeLength', field, `version range of ${value.length} characters, at most ${MAX_VERSION_RANGE_LENGTH}`, 'write a shorter range such as ^1.2.0 or >=2 <3');
  }
  if (semver.validRange(value) === null) {
    throw invalid(field, `version range "${value}" is not valid`, 'use npm semver range syntax, such as ^1.2.0, >=2 <3 or 1.x');
  }
  return value;
}

function validateTags(value: unknown, field: string, limits: Limits): string[] {
  if (!Array.isArray(value)) throw invalid(field, `tags must be an array of strings, got ${describe(value)}`, 'send tags like ["primary", "canary"]');
  if (value.length > limits.maxTagsPerInstance) {
    throw limitExceeded('maxTagsPerInstance', field, `${value.length} tags, at most ${limits.maxTagsPerInstance} allowed`, 'send fewer tags or move data into metadata');
  }
  const seen = new Set<string>();
  value.forEach((t, i) => {
    if (typeof t !== 'string' || t.length === 0) throw invalid(`${field}/${i}`, `tag ${describe(t)} must be a non-empty string`, 'send each tag as a non-empty string');
    if (t.length > limits.maxTagLength) throw limitExceeded('maxTagLength', `${field}/${i}`, `tag of ${t.length} characters, at most ${limits.maxTagLength}`, 'shorten the tag');
    seen.add(t);
  });
  return [...seen];
}

const utf8 = new TextEncoder();

function validateMetadata(value: unknown, field: string, limits: Limits): Record<string, string> {
  if (!isObject(value)) throw invalid(field, `metadata must be an object of strings, got ${describe(value)}`, 'send metadata like {"build": "42"}');
  const keys = Object.keys(value);
  if (keys.length > limits.maxMetadataKeys) {
    throw limitExceeded('maxMetadataKeys', field, `${keys.length} metadata keys, at most ${limits.maxMetadataKeys}`, 'send fewer keys');
  }
  let bytes = 0;
  const entries: [string, string][] = [];
  for (const k of keys.sort()) {
    const v = value[k];
    if (k.length === 0) throw invalid(`${field}/`, 'a metadata key is empty', 'give every metadata key at least one character');
    if (k.length > limits.maxMetadataKeyLength) {
      throw limitExceeded('maxMetadataKeyLength', `${field}/${k}`, `metadata key of ${k.length} characters, at most ${limits.maxMetadataKeyLength}`, 'use a shorter key');
    }
    if (typeof v !== 'string') throw invalid(`${field}/${k}`, `metadata value of "${k}" must be a string, got ${describe(v)}`, 'encode numbers and booleans as strings');
    bytes += utf8.encode(k).length + utf8.encode(v).length;
    entries.push([k, v]);
  }
  if (bytes > limits.maxMetadataBytes) {
    throw limitExceeded('maxMetadataBytes', field, `metadata of ${bytes} bytes, at most ${limits.maxMetadataBytes}`, 'keep large data out of the registry');
  }
  // fromEntries defines own properties: a key such as "__proto__" is kept as data instead
  // of being swallowed by an assignment to the prototype.
  return Object.fromEntries(entries);
}

function durationField(value: unknown, field: string, fallback: number, min: number, max: number): number {
  if (value === undefined || value === null) return fallback;
  const ms = typeof value === 'string' ? parseDuration(value) : undefined;
  if (ms === undefined || ms < min || ms > max) {
    throw invalid(field, `${field} ${describe(value)} must be a duration from ${min}ms to ${max}ms`, 'write durations like "500ms", "10s" or "1m"');
  }
  return ms;
}

function validateCheck(value: unknown, field: string, index: number): CheckSpec {
  if (!isObject(value)) throw invalid(field, `a check must be an object, got ${describe(value)}`, 'send checks like {"type": "http", "target": "http://10.0.0.5:8080/health", "interval": "10s"}');
  const type: CheckType = oneOf(value.type, `${field}/type`, CHECK_TYPES);
  const id = value.id === undefined ? `${type}-${index}` : validateInstanceId(value.id, `${field}/id`);
  let target: string | null = null;
  if (value.target !== undefined && value.target !== null) {
    if (typeof value.target !== 'string' || value.target.length === 0 || value.target.length > 2048) {
      throw invalid(`${field}/target`, `check target ${describe(value.target)} is not valid`, type === 'http' ? 'give a URL such as http://10.0.0.5:8080/health' : 'give host:port');
    }
    target = value.target;
  }
  const intervalMs = durationField(value.interval, `${field}/interval`, 10_000, 100, 3_600_000);
  const timeoutMs = durationField(value.timeout, `${field}/timeout`, Math.min(2_000, intervalMs), 10, 3_600_000);
  const ttlMs = type === 'ttl' ? durationField(value.ttl, `${field}/ttl`, 30_000, 100, 86_400_000) : null;
  return { id, type, target, intervalMs, timeoutMs, ttlMs };
}

/** Validates a registration body and fills the defaults of api-v1.md. */
export function validateInstanceInput(raw: unknown, limits: Limits, prefix = ''): InstanceInput {
  const body = requireBody(raw, '{"address": "10.0.0.5", "port": 8080}');
  const f = (name: string) => (prefix ? `${prefix}/${name}` : name);
  const addressHint = `give a hostname or IP address of at most ${limits.maxAddressLength} characters, such as 10.0.0.5`;
  required(body.address, f('address'), addressHint);
  if (typeof body.address === 'string' && body.address.length > limits.maxAddressLength) {
    throw limitExceeded('maxAddressLength', f('address'), `address of ${body.address.length} characters, at most ${limits.maxAddressLength}`, addressHint);
  }
  if (typeof body.address !== 'string' || !isAddress(body.address, limits.maxAddressLength)) {
    throw invalid(f('address'), `address ${describe(body.address)} is not a hostname or IP literal`, addressHint);
  }
  required(body.port, f('port'), `send ${f('port')} as a JSON number in 1..65535`);
  const port = integerIn(body.port, f('port'), 1, 65535, 'port');
  const leaseId = body.leaseId === undefined || body.leaseId === null ? null : validateLeaseId(body.leaseId, f('leaseId'));
  const zone = body.zone === undefined || body.zone === null ? null : validateLabel(body.zone, f('zone'), 'zone');
  const version = body.version === undefined || body.version === null ? null : validateVersion(body.version, f('version'), limits);
  const tags = body.tags === undefined || body.tags === null ? [] : validateTags(body.tags, f('tags'), limits);
  const metadata = body.metadata === undefined || body.metadata === null ? {} : validateMetadata(body.metadata, f('metadata'), limits);
  const weight = body.weight === undefined || body.weight === null ? 100 : integerIn(body.weight, f('weight'), 0, 10000, 'weight');
  const protocol: Protocol = body.protocol === undefined || body.protocol === null ? 'http' : oneOf(body.protocol, f('protocol'), PROTOCOLS);
  let checks: CheckSpec[] = [];
  if (body.checks !== undefined && body.checks !== null) {
    if (!Array.isArray(body.checks)) throw invalid(f('checks'), `checks must be an array, got ${describe(body.checks)}`, 'send checks as a JSON array');
    if (body.checks.length > limits.maxChecksPerInstance) {
      throw limitExceeded('maxChecksPerInstance', f('checks'), `${body.checks.length} checks, at most ${limits.maxChecksPerInstance}`, 'declare fewer checks');
    }
    checks = body.checks.map((c, i) => validateCheck(c, `${f('checks')}/${i}`, i));
    const ids = new Set(checks.map((c) => c.id));
    if (ids.size !== checks.length) throw invalid(f('checks'), 'two checks share an id', 'give each check its own id');
  }
  return { address: body.address, port, leaseId, zone, version, tags, metadata, weight, protocol, checks };
}

export interface BatchItem {
  namespace: string;
  service: string;
  id: string;
  input: InstanceInput;
}

/** Validates a batch body; every failure names the item (`instances/3/port`). */
export function validateBatch(raw: unknown, limits: Limits, defaultNamespace: string): BatchItem[] {
  const body = requireBody(raw, '{"instances": [{"service": "orders", "id": "orders-1", "address": "10.0.0.5", "port": 8080}]}');
  if (!Array.isArray(body.instances) || body.instances.length === 0) {
    throw invalid('instances', 'instances must be a non-empty array', 'send {"instances": [{"service", "id", "address", "port", ...}]}');
  }
  if (body.instances.length > limits.maxBatchItems) {
    throw limitExceeded('maxBatchItems', 'instances', `${body.instances.length} items, at most ${limits.maxBatchItems}`, 'split the batch');
  }
  const seen = new Set<string>();
  return body.instances.map((item: unknown, i: number) => {
    const p = `instances/${i}`;
    try {
      const obj = requireBody(item, '{"service": "orders", "id": "orders-1", "address": "10.0.0.5", "port": 8080}', p);
      required(obj.service, `${p}/service`, 'give each item the service it belongs to');
      const service = validateServiceName(obj.service, `${p}/service`);
      required(obj.id, `${p}/id`, 'give each item its instance id');
      const id = validateInstanceId(obj.id, `${p}/id`);
      const namespace = obj.namespace === undefined || obj.namespace === null ? defaultNamespace : validateNamespace(obj.namespace, `${p}/namespace`);
      const key = `${namespace}/${service}/${id}`;
      if (seen.has(key)) throw invalid(`${p}/id`, `instance ${key} appears twice in the batch`, 'send each instance once');
      seen.add(key);
      return { namespace, service, id, input: validateInstanceInput(obj, limits, p) };
    } catch (err) {
      throw inBatchItem(err, p);
    }
  });
}

/** Every failure of a batch item says which item in its detail, not only in `field`. */
function inBatchItem(err: unknown, path: string): unknown {
  if (!(err instanceof SwitchboardError) || err.message.startsWith(`${path}: `)) return err;
  return new SwitchboardError(err.code, `${path}: ${err.message}`, {
    ...(err.hint !== undefined && { hint: err.hint }),
    ...(err.field !== undefined && { field: err.field }),
    ...(err.limit !== undefined && { limit: err.limit }),
    ...(err.retryAfterSec !== undefined && { retryAfterSec: err.retryAfterSec }),
  });
}

export function validateLeaseRequest(raw: unknown, limits: Limits): number {
  const body = requireBody(raw, '{"ttlMs": 10000}');
  const ttl = body.ttlMs;
  required(ttl, 'ttlMs', `send {"ttlMs": 10000}; allowed ${limits.leaseTtlMinMs}..${limits.leaseTtlMaxMs}`);
  if (typeof ttl !== 'number' || !Number.isInteger(ttl)) {
    throw invalid('ttlMs', `ttlMs must be an integer number of milliseconds, got ${describe(ttl)}`, `send {"ttlMs": 10000}; allowed ${limits.leaseTtlMinMs}..${limits.leaseTtlMaxMs}`);
  }
  if (ttl < limits.leaseTtlMinMs) {
    throw limitExceeded('leaseTtlMinMs', 'ttlMs', `ttlMs ${ttl} is below the minimum ${limits.leaseTtlMinMs}`, `ask for at least ${limits.leaseTtlMinMs} ms`);
  }
  if (ttl > limits.leaseTtlMaxMs) {
    throw limitExceeded('leaseTtlMaxMs', 'ttlMs', `ttlMs ${ttl} is above the maximum ${limits.leaseTtlMaxMs}`, `ask for at most ${limits.leaseTtlMaxMs} ms`);
  }
  return ttl;
}

export function validateStatusBody(raw: unknown): AdminStatus {
  const body = requireBody(raw, '{"status": "draining"}');
  required(body.status, 'status', `send {"status": "draining"}; one of ${ADMIN_STATUSES.join(', ')}`);
  return oneOf(body.status, 'status', ADMIN_STATUSES);
}

export { SwitchboardError };
