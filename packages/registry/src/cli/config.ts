/**
 * Agent configuration from flags, environment (SWITCHBOARD_<FLAG>), a JSON file
 * (--config, camelCase keys) and defaults, in that order of precedence. Every invalid
 * value is refused with a message naming the field and where it came from.
 */
import { readFileSync } from 'node:fs';
import { DEFAULT_LIMITS, LIMIT_NAMES, MODES, type Limits, type Mode } from '@switchboard/protocol';

export interface AgentConfig {
  mode: Mode;
  httpAddr: { host: string; port: number };
  dataDir: string;
  dev: boolean;
  nodeId: string | null;
  peerAddr: { host: string; port: number };
  peers: { id: string; host: string; port: number }[];
  etcd: string[];
  /** cp: the key prefix under which the registry lives in etcd. */
  etcdPrefix: string;
  /** ap: addresses (HOST:PORT of peer links) of running nodes to join through. */
  join: { host: string; port: number }[];
  /** ap: the cluster's name; nodes of different clusters refuse each other's peer links. */
  cluster: string;
  /** Alert receivers: each URL gets a JSON POST per alert episode. */
  alertWebhooks: string[];
  /** OpenTelemetry: an OTLP/HTTP traces endpoint; tracing is off when null. */
  otlpEndpoint: string | null;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
  logFormat: 'json' | 'pretty' | 'auto';
  limits: Limits;
}

export class ConfigError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** The keys a user may set, as camelCase (file), kebab-case (flag) and SNAKE (env). */
export const CONFIG_KEYS = ['mode', 'httpAddr', 'dataDir', 'dev', 'nodeId', 'peerAddr', 'peers', 'etcd', 'etcdPrefix', 'join', 'cluster', 'alertWebhooks', 'otlpEndpoint', 'logLevel', 'logFormat'] as const;
type Key = (typeof CONFIG_KEYS)[number];

export const flagOf = (k: string): string => '--' + k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
export const envOf = (k: string): string => 'SWITCHBOARD_' + k.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();

type Raw = Partial<Record<Key | 'limits', unknown>>;
interface Source {
  name: string;
  values: Raw;
}

function hostPort(v: unknown, where: string, defaultPort: number): { host: string; port: number } {
  if (typeof v !== 'string' || v === '') throw new ConfigError(where, `${where} must be HOST:PORT, got ${JSON.stringify(v)}`);
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+)?(?::(\d{1,5}))?$/.exec(v);
  const port = m?.[2] === undefined ? defaultPort : Number(m[2]);
  if (!m || port > 65535) throw new ConfigError(where, `${where} "${v}" is not HOST:PORT (port 0-65535; 0 picks a free port)`);
  const host = (m[1] ?? '127.0.0.1').replace(/^\[|\]$/g, '');
  return { host, port };
}

function listOf(v: unknown, where: string): string[] {
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  if (typeof v === 'string') return v.split(',').map((s) => s.trim()).filter((s) => s !== '');
  throw new ConfigError(where, `${where} must be a comma-separated list, got ${JSON.stringify(v)}`);
}

function boolOf(v: unknown, where: string): boolean {
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0' || v === '') return false;
  throw new ConfigError(where, `${where} must be true or false, got ${JSON.stringify(v)}`);
}

function oneOf<T extends string>(v: unknown, where: string, allowed: readonly T[]): T {
  if (typeof v === 'string' && (allowed as readonly string[]).includes(v)) return v as T;
  throw new ConfigError(where, `${where} must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
}

function limitsOf(v: unknown, where: string): Limits {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(where, `${where} must be an object of named limits`);
  const out: Limits = { ...DEFAULT_LIMITS };
  for (const [k, val] of Object.entries(v)) {
    if (!(LIMIT_NAMES as string[]).includes(k)) throw new ConfigError(`${where}.${k}`, `${where}.${k} is not a known limit (known: ${LIMIT_NAMES.join(', ')})`);
    if (typeof val !== 'number' || !Number.isInteger(val) || val < 0) throw new ConfigError(`${where}.${k}`, `${where}.${k} must be a non-negative integer`);
    out[k as keyof Limits] = val;
  }
  if (out.leaseTtlMinMs > out.leaseTtlMaxMs) throw new ConfigError(`${where}.leaseTtlMinMs`, `${where}.leaseTtlMinMs is above leaseTtlMaxMs`);
  if (out.retainedEvents < 1) throw new ConfigError(`${where}.retainedEvents`, `${where}.retainedEvents must be at least 1`);
  const atLeast = (k: keyof Limits, min: number, why: string): void => {
    if (out[k] < min) throw new ConfigError(`${where}.${k}`, `${where}.${k} must be at least ${min}: ${why}`);
  };
  atLeast('maxConcurrentChecks', 1, 'otherwise no active check could run');
  atLeast('maxHistoryPerInstance', 1, 'a history keeps at least the last change');
  atLeast('reportMinReporters', 2, 'one consumer alone must never change an instance');
  atLeast('selfPreservationWindowMs', 1, 'lapses are counted within a window');
  atLeast('alertEvaluateIntervalMs', 10, 'alert conditions are evaluated on a timer');
  atLeast('alertDeliveryAttempts', 1, 'a message is sent at least once');
  atLeast('alertMaxPending', 1, 'a webhook queues at least the message being sent');
  atLeast('alertWebhookTimeoutMs', 1, 'an attempt waits for an answer');
  atLeast('alertRetryMaxMs', out.alertRetryBaseMs, 'the cap is at least the first retry delay (alertRetryBaseMs)');
  if (out.selfPreservationThresholdPercent > 100) {
    throw new ConfigError(`${where}.selfPreservationThresholdPercent`, `${where}.selfPreservationThresholdPercent must be 0-100 (100 turns self-preservation off)`);
  }
  return out;
}

export function readConfigFile(path: string): Raw {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('config', `cannot read config file ${path}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('config', `config file ${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError('config', `config file ${path} must hold a JSON object`);
  for (const k of Object.keys(parsed)) {
    if (!(CONFIG_KEYS as readonly string[]).includes(k) && k !== 'limits') {
      throw new ConfigError(k, `config file ${path}: unknown key "${k}" (known: ${[...CONFIG_KEYS, 'limits'].join(', ')})`);
    }
  }
  return parsed as Raw;
}

export function envValues(env: NodeJS.ProcessEnv): Raw {
  const out: Raw = {};
  for (const k of CONFIG_KEYS) {
    const v = env[envOf(k)];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/** Resolves the configuration; `sources` are in order of precedence, highest first. */
export function resolveConfig(sources: Source[]): AgentConfig {
  const pick = (k: Key | 'limits'): { value: unknown; where: string } | undefined => {
    for (const s of sources) {
      if (s.values[k] !== undefined) {
        const where = s.name === 'flag' ? flagOf(k) : s.name === 'env' ? envOf(k) : `${s.name} key ${k}`;
        return { value: s.values[k], where };
      }
    }
    return undefined;
  };
  const get = <T>(k: Key | 'limits', parse: (v: unknown, where: string) => T, fallback: T): T => {
    const p = pick(k);
    return p === undefined ? fallback : parse(p.value, p.where);
  };
  const str = (v: unknown, where: string): string => {
    if (typeof v !== 'string' || v === '') throw new ConfigError(where, `${where} must be a non-empty string`);
    return v;
  };
  const name = (v: unknown, where: string): string => {
    const s = str(v, where);
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(s)) throw new ConfigError(where, `${where} "${s}" must be 1-64 characters of A-Z, a-z, 0-9, ".", "_" and "-"`);
    return s;
  };
  const cfg: AgentConfig = {
    mode: get('mode', (v, w) => oneOf(v, w, MODES), 'standalone'),
    httpAddr: get('httpAddr', (v, w) => hostPort(v, w, 7700), { host: '127.0.0.1', port: 7700 }),
    dataDir: get('dataDir', str, './data'),
    dev: get('dev', boolOf, false),
    nodeId: get<string | null>('nodeId', name, null),
    peerAddr: get('peerAddr', (v, w) => hostPort(v, w, 7701), { host: '127.0.0.1', port: 7701 }),
    peers: get('peers', (v, w) => listOf(v, w).map((p) => {
      const at = p.indexOf('@');
      if (at <= 0) throw new ConfigError(w, `${w}: peer "${p}" must be ID@HOST:PORT`);
      return { id: p.slice(0, at), ...hostPort(p.slice(at + 1), w, 7701) };
    }), []),
    etcd: get('etcd', (v, w) => listOf(v, w).map((u) => {
      if (!/^https?:\/\/[^\s/]+$/.test(u)) throw new ConfigError(w, `${w}: "${u}" must be a URL like http://127.0.0.1:2379`);
      return u;
    }), []),
    etcdPrefix: get('etcdPrefix', (v, w) => {
      const s = str(v, w);
      if (!/^\/[\x21-\x7e]*\/$/.test(s)) throw new ConfigError(w, `${w} "${s}" must start and end with "/" (for example /switchboard/)`);
      return s;
    }, '/switchboard/'),
    join: get('join', (v, w) => listOf(v, w).map((a) => hostPort(a, w, 7701)), []),
    cluster: get('cluster', name, 'switchboard'),
    alertWebhooks: get('alertWebhooks', (v, w) => listOf(v, w).map((u) => {
      if (!/^https?:\/\/\S+$/.test(u)) throw new ConfigError(w, `${w}: "${u}" must be an http(s) URL`);
      return u;
    }), []),
    otlpEndpoint: get<string | null>('otlpEndpoint', (v, w) => {
      const s = str(v, w);
      if (!/^https?:\/\/\S+$/.test(s)) throw new ConfigError(w, `${w}: "${s}" must be an http(s) URL like http://127.0.0.1:4318/v1/traces`);
      return s;
    }, null),
    logLevel: get('logLevel', (v, w) => oneOf(v, w, ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const), 'info'),
    logFormat: get('logFormat', (v, w) => oneOf(v, w, ['json', 'pretty', 'auto'] as const), 'auto'),
    limits: get('limits', limitsOf, { ...DEFAULT_LIMITS }),
  };
  if (cfg.mode === 'cp' && cfg.etcd.length === 0) throw new ConfigError('etcd', '--mode cp needs --etcd URL,... (the etcd cluster)');
  if (cfg.mode === 'ap' && cfg.nodeId === null) throw new ConfigError('nodeId', '--mode ap needs --node-id');
  return cfg;
}
