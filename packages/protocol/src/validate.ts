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
  CHECK_REPORT_STATUSES,
  CHECK_TYPES,
  PROTOCOLS,
  REPORTS_CHECK_ID,
  REPORT_KINDS,
  type AdminStatus,
  type CheckResult,
  type CheckSpec,
  type CheckType,
  type ConsumerReport,
  type Health,
  type InstanceInput,
  type Protocol,
  type ServiceSettings,
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
  const what = field === 'checkId' || /checks\/\d+\/id$/.test(field) ? 'check id' : 'instance id';
  const id = validateIdText(value, field, what);
  // "." and ".." are path segments to every HTTP client (fetch and browsers resolve them,
  // even percent-encoded): an instance or check so named could be registered but never
  // read, reported to or deregistered by its path.
  if (id === '.' || id === '..') throw invalid(field, `${what} "${id}" is a path segment, not a name`, 'use an id with at least one character other than "."');
  return id;
}

/** 1-128 characters of A-Za-z0-9._:- (an id that never appears in a path may be "." too). */
function validateIdText(value: unknown, field: string, what: string): string {
  if (typeof value !== 'string' || !INSTANCE_ID.test(value)) {
    throw invalid(field, `${what} ${describe(value)} is not valid`, 'use 1-128 characters of A-Z, a-z, 0-9, ".", "_", ":" and "-"');
  }
  return value;
}

/**
 * A node id (`--node-id`, the ids in `--peers`, a member in the API): the characters of a
 * host name plus "_", so that the default, the host name, is one.
 */
const NODE_ID = /^[A-Za-z0-9._-]{1,253}$/;
export const NODE_ID_RULE = '1-253 characters of A-Z, a-z, 0-9, ".", "_" and "-"';

export function isNodeId(value: unknown): value is string {
  return typeof value === 'string' && NODE_ID.test(value);
}

export function validateNodeId(value: unknown, field = 'id'): string {
  if (!isNodeId(value)) {
    throw invalid(field, `node id ${describe(value)} is not valid`, `use the id the member shows in GET /v1/status cluster.members: ${NODE_ID_RULE}`);
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
    if (t.length > limits.maxTagLength && charCount(t) > limits.maxTagLength) throw limitExceeded('maxTagLength', `${field}/${i}`, `tag of ${charCount(t)} characters, at most ${limits.maxTagLength}`, 'shorten the tag');
    seen.add(t);
  });
  return [...seen];
}

const utf8 = new TextEncoder();

/** Characters (code points), as the contract counts them: an emoji is one, not two UTF-16 units. */
function charCount(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

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
    if (k.length > limits.maxMetadataKeyLength && charCount(k) > limits.maxMetadataKeyLength) {
      throw limitExceeded('maxMetadataKeyLength', `${field}/${k}`, `metadata key of ${charCount(k)} characters, at most ${limits.maxMetadataKeyLength}`, 'use a shorter key');
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

/** `host:port` with a hostname or IP literal (IPv6 in brackets); null when it is not. */
export function parseHostPort(text: string): { host: string; port: number } | null {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:\s[\]/]+):(\d{1,5})$/.exec(text);
  if (!m) return null;
  const host = (m[1] as string).replace(/^\[|\]$/g, '');
  const port = Number(m[2]);
  if (port < 1 || port > 65535 || !isAddress(host)) return null;
  return { host, port };
}

function checkTarget(value: unknown, field: string, type: CheckType): string | null {
  if (value === undefined || value === null) return null;
  if (type === 'ttl') throw invalid(field, 'a ttl check has no target: the service reports into it', 'leave target out of ttl checks; report with PUT /v1/services/{service}/instances/{id}/checks/{checkId}');
  const hint = type === 'http' ? 'give a URL such as http://10.0.0.5:8080/health' : 'give host:port, such as 10.0.0.5:9090 or [::1]:9090';
  if (typeof value !== 'string' || value.length === 0 || value.length > 2048) throw invalid(field, `check target ${describe(value)} is not valid`, hint);
  if (type === 'http') {
    let url: URL | null = null;
    try {
      url = new URL(value);
    } catch {
      url = null;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw invalid(field, `check target ${describe(value)} is not an http or https URL`, hint);
    // The URL parser keeps user:password@ apart and the probe never sends it: accepted, the
    // check would run without the credentials its author meant it to carry (and they would
    // be readable by anyone who reads the registry). The value is not echoed for that reason.
    if (url.username !== '' || url.password !== '') {
      throw invalid(field, 'check target carries credentials (user:password@), which http checks do not send', 'remove them: http checks send no credentials, in the URL or any other way (no custom headers either); give the check a health endpoint that needs none');
    }
    if (url.port === '0') throw invalid(field, `check target ${describe(value)} has port 0, which nothing listens on`, 'give the port the health endpoint listens on, or leave it out for the scheme\'s default (80 for http, 443 for https)');
  } else if (!parseHostPort(value)) {
    throw invalid(field, `check target ${describe(value)} is not host:port`, hint);
  }
  return value;
}

/** A field that only some check types take; elsewhere it is refused rather than silently unused. */
function onlyFor(value: unknown, field: string, type: CheckType, allowed: CheckType): void {
  if (value !== undefined && value !== null && type !== allowed) {
    throw invalid(field, `${field.split('/').pop()} applies to ${allowed} checks only, not ${type}`, `remove it, or use a check of type ${allowed}`);
  }
}

function optionalString(value: unknown, field: string, min: number, max: number, hint: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string' || value.length < min || value.length > max) {
    throw invalid(field, `${field.split('/').pop()} must be a string of ${min} to ${max} characters, got ${describe(value)}`, hint);
  }
  return value;
}

/**
 * Defaults of the fields added after the first version of checks, for specs logged before
 * them: replay fills them in so that old entries behave as registered today.
 */
export function checkDefaults(type: CheckType, intervalMs: number): Pick<CheckSpec, 'jitterMs' | 'expectBody' | 'grpcService' | 'passingThreshold' | 'criticalThreshold' | 'deregisterCriticalAfterMs'> {
  return {
    jitterMs: Math.floor(intervalMs / 10),
    expectBody: null,
    grpcService: null,
    passingThreshold: 1,
    // A ttl report is the service's own verdict, applied at once; an active check waits for
    // a second failure so that one lost packet or GC pause does not take an instance out.
    criticalThreshold: type === 'ttl' ? 1 : 2,
    deregisterCriticalAfterMs: null,
  };
}

/**
 * A spec as stored by any version, completed with today's defaults, its fields in the
 * order validation gives them (specs are compared as JSON).
 */
export function completeCheckSpec(spec: CheckSpec): CheckSpec {
  const d = checkDefaults(spec.type, spec.intervalMs);
  return {
    id: spec.id,
    type: spec.type,
    target: spec.target ?? null,
    intervalMs: spec.intervalMs,
    timeoutMs: spec.timeoutMs,
    ttlMs: spec.ttlMs ?? null,
    jitterMs: spec.jitterMs ?? d.jitterMs,
    expectBody: spec.expectBody ?? d.expectBody,
    grpcService: spec.grpcService ?? d.grpcService,
    passingThreshold: spec.passingThreshold ?? d.passingThreshold,
    criticalThreshold: spec.criticalThreshold ?? d.criticalThreshold,
    deregisterCriticalAfterMs: spec.deregisterCriticalAfterMs ?? d.deregisterCriticalAfterMs,
  };
}

/**
 * One check declaration of a registration's `checks`, at `field` (`checks/0`); `index`
 * gives the default id (`http-0`). Exported for clients that build declarations (the CLI's
 * --check), so that they refuse what the API refuses, in its words.
 */
export function validateCheck(value: unknown, field: string, index: number): CheckSpec {
  if (!isObject(value)) throw invalid(field, `a check must be an object, got ${describe(value)}`, 'send checks like {"type": "http", "target": "http://10.0.0.5:8080/health", "interval": "10s"}');
  const type: CheckType = oneOf(value.type, `${field}/type`, CHECK_TYPES);
  const id = value.id === undefined ? `${type}-${index}` : validateInstanceId(value.id, `${field}/id`);
  if (id === REPORTS_CHECK_ID) throw invalid(`${field}/id`, `check id ${REPORTS_CHECK_ID} is reserved for the warning of consumer reports`, 'give the check another id');
  const target = checkTarget(value.target, `${field}/target`, type);
  const intervalMs = durationField(value.interval, `${field}/interval`, 10_000, 100, 3_600_000);
  const timeoutMs = durationField(value.timeout, `${field}/timeout`, Math.min(2_000, intervalMs), 10, 3_600_000);
  const ttlMs = type === 'ttl' ? durationField(value.ttl, `${field}/ttl`, 30_000, 100, 86_400_000) : null;
  const d = checkDefaults(type, intervalMs);
  const jitterMs = durationField(value.jitter, `${field}/jitter`, d.jitterMs, 0, Math.floor(intervalMs / 2));
  onlyFor(value.expectBody, `${field}/expectBody`, type, 'http');
  const expectBody = optionalString(value.expectBody, `${field}/expectBody`, 1, 1024, 'give a short text the health page contains, such as "ok"');
  onlyFor(value.grpcService, `${field}/grpcService`, type, 'grpc');
  const grpcService = optionalString(value.grpcService, `${field}/grpcService`, 0, 256, 'give the gRPC service name, such as "orders.v1.Orders", or "" for the whole server');
  const passingThreshold = value.passingThreshold === undefined || value.passingThreshold === null ? d.passingThreshold : integerIn(value.passingThreshold, `${field}/passingThreshold`, 1, 100, 'passingThreshold');
  const criticalThreshold = value.criticalThreshold === undefined || value.criticalThreshold === null ? d.criticalThreshold : integerIn(value.criticalThreshold, `${field}/criticalThreshold`, 1, 100, 'criticalThreshold');
  const deregisterCriticalAfterMs = value.deregisterCriticalAfter === undefined || value.deregisterCriticalAfter === null ? null : durationField(value.deregisterCriticalAfter, `${field}/deregisterCriticalAfter`, 0, 1_000, 30 * 86_400_000);
  return { id, type, target, intervalMs, timeoutMs, ttlMs, jitterMs, expectBody, grpcService, passingThreshold, criticalThreshold, deregisterCriticalAfterMs };
}

/** Validates a registration body and fills the defaults of api-v1.md. */
export function validateInstanceInput(raw: unknown, limits: Limits, prefix = ''): InstanceInput {
  const body = requireBody(raw, '{"address": "10.0.0.5", "port": 8080}', prefix || 'body');
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

/** The body of a ttl check report: `{"status": "passing", "output": "..."}` (pass, warn, fail too). */
export function validateCheckReport(raw: unknown, limits: Limits): CheckResult {
  const body = requireBody(raw, '{"status": "passing", "output": "all good"}');
  required(body.status, 'status', 'send {"status": "passing"}; one of passing, warning, critical (or pass, warn, fail)');
  const word = oneOf(body.status, 'status', CHECK_REPORT_STATUSES);
  const status: Health = word === 'pass' ? 'passing' : word === 'warn' ? 'warning' : word === 'fail' ? 'critical' : word;
  let output = '';
  if (body.output !== undefined && body.output !== null) {
    if (typeof body.output !== 'string') throw invalid('output', `output must be a string, got ${describe(body.output)}`, 'send output as one line of text');
    if (body.output.length > limits.maxCheckOutputLength) {
      throw limitExceeded('maxCheckOutputLength', 'output', `output of ${body.output.length} characters, at most ${limits.maxCheckOutputLength}`, 'send a shorter output line');
    }
    output = body.output;
  }
  return { status, output };
}

/** The body of `PUT /v1/services/{service}/settings`. */
export function validateServiceSettings(raw: unknown): ServiceSettings {
  const body = requireBody(raw, '{"protectThreshold": 0.5}');
  required(body.protectThreshold, 'protectThreshold', 'send {"protectThreshold": 0.5} to turn protection on, or {"protectThreshold": null} to turn it off');
  const t = body.protectThreshold;
  if (t !== null && (typeof t !== 'number' || !Number.isFinite(t) || t <= 0 || t > 1)) {
    throw invalid('protectThreshold', `protectThreshold must be a number above 0 and at most 1, or null, got ${describe(t)}`, 'send a share such as 0.5 (protect when fewer than half are healthy), or null to turn it off');
  }
  return { protectThreshold: t };
}

/** The body of a consumer report: `{"reporter": "checkout-7", "kind": "timeout", "detail"?: "..."}`. */
export function validateConsumerReport(raw: unknown, limits: Limits): ConsumerReport {
  const body = requireBody(raw, '{"reporter": "checkout-7", "kind": "connect_refused"}');
  required(body.reporter, 'reporter', 'send the id of the reporting consumer, such as its own instance id');
  // A body field, never a path segment: "." is a reporter id like any other.
  const reporter = validateIdText(body.reporter, 'reporter', 'reporter id');
  required(body.kind, 'kind', `send kind, one of ${REPORT_KINDS.join(', ')}`);
  const kind = oneOf(body.kind, 'kind', REPORT_KINDS);
  const detail = optionalString(body.detail, 'detail', 0, limits.maxCheckOutputLength, 'send detail as one short line of text');
  return { reporter, kind, detail };
}

export { SwitchboardError };
