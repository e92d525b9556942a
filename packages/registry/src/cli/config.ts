/**
 * Agent configuration from flags, environment (SWITCHBOARD_<FLAG>), a JSON file
 * (--config, camelCase keys) and defaults, in that order of precedence. Every invalid
 * value is refused with a message naming the field and where it came from.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { inspect } from 'node:util';
import { hostname } from 'node:os';
import { DEFAULT_NAMESPACE, validateNamespace } from '@switchboard/protocol';
import { PICK_STRATEGIES, type PickStrategy } from '../core/picker.js';
import { DEFAULT_LIMITS, LIMIT_NAMES, MODES, NODE_ID_RULE, isAddress, isNodeId, peerIdsOfSubjectAltName, type Limits, type Mode } from '@switchboard/protocol';
import { CheckNetworks, DEFAULT_DENY_NETWORKS, parseNetwork } from '../health/networks.js';
import { TokenFileError, parseTokenFile, type ApiToken } from '../api/auth.js';
import { displayUrl } from '../alerts/webhooks.js';

export interface AgentConfig {
  mode: Mode;
  httpAddr: HostPort;
  dataDir: string;
  dev: boolean;
  nodeId: string | null;
  peerAddr: HostPort;
  peers: ({ id: string } & HostPort)[];
  etcd: string[];
  /** cp: the key prefix under which the registry lives in etcd. */
  etcdPrefix: string;
  /** cp: TLS towards etcd (https:// endpoints); null over plain http. */
  etcdTls: EtcdTls | null;
  /** cp: etcd's user authentication; null when no user is configured. */
  etcdAuth: EtcdAuth | null;
  /** ap: addresses (HOST:PORT of peer links) of running nodes to join through. */
  join: HostPort[];
  /** ap: the cluster's name; nodes of different clusters refuse each other's peer links. */
  cluster: string;
  /** ap: the shared secret every peer link proves (peerSecretFile); null: links are not authenticated. */
  peerSecret: Secret<Buffer> | null;
  /** ap: mutual TLS on the peer links (peerTlsCertFile, peerTlsKeyFile, peerTlsCaFile); null: plain TCP. */
  peerTls: { cert: Buffer; key: Secret<Buffer>; ca: Buffer; crl: Buffer[] | null; crlFile: string | null } | null;
  /** Alert receivers: each URL gets a JSON POST per alert episode. */
  alertWebhooks: string[];
  /** The service proxy's listen address (proxyAddr); null: no proxy. */
  proxyAddr: HostPort | null;
  /** The namespace the proxy routes to. */
  proxyNamespace: string;
  /** The proxy's balancer. */
  proxyStrategy: PickStrategy;
  /** OpenTelemetry: an OTLP/HTTP traces endpoint; tracing is off when null. */
  otlpEndpoint: string | null;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
  logFormat: 'json' | 'pretty' | 'auto';
  /** The networks active checks may reach (checkDenyNetworks, checkAllowNetworks). */
  checkNetworks: CheckNetworks;
  /** Bearer tokens the API requires (read from apiTokensFile); null: the API is open. */
  apiTokens: ApiTokensConfig | null;
  /** With apiTokens: GET /metrics is answered without a token. */
  metricsOpen: boolean;
  /** Files that hold secrets (token file, keys, passwords), to warn at start when others may read them. */
  secretFiles: { where: string; path: string }[];
  /** HTTPS for the HTTP API (tlsCertFile, tlsKeyFile); null: plain HTTP. */
  tls: ApiTls | null;
  /**
   * cp: the CA certificates (PEM, tlsCaFile) that signed the other nodes' API
   * certificates, the only ones trusted when this node calls them; null: Node's CAs and
   * the certificates of this node's own tlsCertFile.
   */
  tlsCa: Buffer | null;
  limits: Limits;
  /** Where httpAddr and peerAddr came from (a flag, a variable, a file key), for messages about them. */
  listenFrom: { httpAddr: string; peerAddr: string; proxyAddr: string };
}

/** The HTTP API's certificate (with its chain, PEM) and private key, read at start. */
export interface ApiTls {
  cert: Buffer;
  key: Secret<Buffer>;
}

/** The token file and the tokens read from it at start (read again on SIGHUP). */
export interface ApiTokensConfig {
  path: string;
  /** Where the path came from (flag, variable or file key), for messages. */
  where: string;
  tokens: ApiToken[];
  /**
   * What a cp node sends when it forwards a consumer report to another node: the file's
   * first forward token, else its first write token (ForwardToken); null: neither.
   */
  forwardToken: { token: Secret<string>; scope: 'forward' | 'write'; line: number } | null;
}

/**
 * TLS material for the etcd client, read from the files at start (PEM). The CA is null
 * when the system's CAs are to be trusted; cert and key come together or not at all.
 */
export interface EtcdTls {
  ca: Buffer | null;
  cert: Buffer | null;
  key: Secret<Buffer> | null;
}

export interface EtcdAuth {
  username: string;
  password: Secret<string>;
}

/**
 * A value that must not reach a log line or a JSON answer: serialized (JSON, pino) or
 * inspected it reads "[redacted]"; only reveal() gives it, to the one call that needs it.
 */
export class Secret<T> {
  readonly #value: T;
  constructor(value: T) {
    this.#value = value;
  }
  reveal(): T {
    return this.#value;
  }
  toJSON(): string {
    return '[redacted]';
  }
  toString(): string {
    return '[redacted]';
  }
  [inspect.custom](): string {
    return 'Secret [redacted]';
  }
}

/**
 * A refused configuration: `field` says where the value came from (flag, variable or
 * file key), `code` names the problem stably (for scripts and the docs), `hint` says what
 * to do when the message alone does not. Errors without a code of their own are
 * INVALID_CONFIG.
 */
export class ConfigError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  constructor(
    readonly field: string,
    message: string,
    extra: { code?: string; hint?: string } = {},
  ) {
    super(message);
    this.name = 'ConfigError';
    this.code = extra.code ?? 'INVALID_CONFIG';
    this.hint = extra.hint;
  }
}

/** Keys that name a file holding a secret. */
const SECRET_FILE_KEYS = ['apiTokensFile', 'peerSecretFile', 'etcdPasswordFile', 'etcdKeyFile', 'tlsKeyFile', 'peerTlsKeyFile'] as const;

/** The keys a user may set, as camelCase (file), kebab-case (flag) and SNAKE (env). */
export const CONFIG_KEYS = ['mode', 'httpAddr', 'dataDir', 'dev', 'nodeId', 'peerAddr', 'peers', 'etcd', 'etcdPrefix', 'etcdCaFile', 'etcdCertFile', 'etcdKeyFile', 'etcdUsername', 'etcdPasswordFile', 'join', 'cluster', 'peerSecretFile', 'peerTlsCertFile', 'peerTlsKeyFile', 'peerTlsCaFile', 'peerTlsCrlFile', 'alertWebhooks', 'proxyAddr', 'proxyNamespace', 'proxyStrategy', 'otlpEndpoint', 'logLevel', 'logFormat', 'checkDenyNetworks', 'checkAllowNetworks', 'apiTokensFile', 'metricsOpen', 'tlsCertFile', 'tlsKeyFile', 'tlsCaFile'] as const;
/**
 * Keys taken from the environment only (SWITCHBOARD_ETCD_PASSWORD): a flag is visible to
 * every user in `ps`, and a config file is often readable by more people than the secret.
 */
export const ENV_ONLY_KEYS = ['etcdPassword'] as const;
type Key = (typeof CONFIG_KEYS)[number] | (typeof ENV_ONLY_KEYS)[number];

export const flagOf = (k: string): string => '--' + k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
export const envOf = (k: string): string => 'SWITCHBOARD_' + k.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();

type Raw = Partial<Record<Key | 'limits', unknown>>;
interface Source {
  name: string;
  values: Raw;
}

export interface HostPort {
  host: string;
  port: number;
}

/** How an address is used: listened on (port 0 picks a free port) or dialed; `hint` says how to write it. */
interface AddressUse {
  listen: boolean;
  hint: string;
}

/** Why `v` is not HOST:PORT, or null when it is (a port out of range is checked apart). */
function notHostPort(v: string): string | null {
  if (/^\d+$/.test(v)) return 'a port without a host';
  if (!v.startsWith('[') && v.split(':').length > 2) return 'an IPv6 address goes in brackets, like [::1]:7700';
  if (v.startsWith(':')) return 'the host is missing';
  if (!v.includes(':') || v.endsWith(':') || v.endsWith(']')) return 'the port is missing';
  if (!/:\d+$/.test(v)) return `the port "${v.slice(v.lastIndexOf(':') + 1)}" is not a number`;
  if (!/^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):\d+$/.test(v)) return 'the host is not a host name, an IPv4 address or an IPv6 address in brackets';
  return null;
}

/**
 * HOST:PORT with both parts: a bare port or a host alone is refused rather than completed
 * (7700 alone was taken as the host 0.0.30.20). Whether the host resolves and the port is
 * free is checked when the agent starts (listen.ts).
 */
function hostPort(v: unknown, where: string, use: AddressUse): HostPort {
  const { hint } = use;
  if (typeof v !== 'string' || v === '') throw new ConfigError(where, `${where} must be HOST:PORT, got ${JSON.stringify(v)}`, { hint });
  const why = notHostPort(v);
  if (why !== null) throw new ConfigError(where, `${where} "${v}" is not HOST:PORT: ${why}`, { hint });
  const at = v.lastIndexOf(':');
  const host = v.slice(0, at).replace(/^\[|\]$/g, '');
  const port = Number(v.slice(at + 1));
  const min = use.listen ? 0 : 1;
  if (port < min || port > 65535) throw new ConfigError(where, `${where} "${v}" is not HOST:PORT: the port must be ${min}-65535`, { hint });
  if (!isAddress(host)) throw new ConfigError(where, `${where} "${v}" is not HOST:PORT: "${host}" is not a host name or IP address`, { hint });
  return { host, port };
}

function listOf(v: unknown, where: string): string[] {
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  if (typeof v === 'string') return v.split(',').map((s) => s.trim()).filter((s) => s !== '');
  throw new ConfigError(where, `${where} must be a comma-separated list, got ${JSON.stringify(v)}`);
}

/** checkDenyNetworks, checkAllowNetworks: CIDRs or single addresses; an empty list is allowed. */
function networkList(v: unknown, where: string): string[] {
  return listOf(v, where).map((n) => {
    if (parseNetwork(n) !== null) return n;
    throw new ConfigError(where, `${where}: "${n}" is not a network`, {
      hint: 'write IPv4 or IPv6 networks in CIDR notation (10.0.0.0/8, fd00::/8) or as single addresses (10.0.0.5), comma-separated; an empty list denies (or allows) nothing',
    });
  });
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

/** The longest cpBatchHoldMs: a hold is meant to last a client's round trip, not to pass its deadline. */
const MAX_CP_BATCH_HOLD_MS = 100;

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
  atLeast('blockingWaitMaxMs', out.blockingWaitDefaultMs, 'a wait left out (blockingWaitDefaultMs) must not pass the longest allowed');
  atLeast('leaseTtlMinMs', 1, 'a lease lives for some time');
  atLeast('maxSessionMessageBytes', 256, 'a session message must fit (and 0 would mean no limit to the WebSocket library)');
  atLeast('maxBodyBytes', 1024, 'a registration body must fit');
  if (out.cpBatchHoldMs > MAX_CP_BATCH_HOLD_MS) {
    throw new ConfigError(`${where}.cpBatchHoldMs`, `${where}.cpBatchHoldMs must be at most ${MAX_CP_BATCH_HOLD_MS}: every write arriving during a hold waits for it`);
  }
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
    // Environment-only keys pass here to be refused by resolveConfig with their own hint.
    if (!(CONFIG_KEYS as readonly string[]).includes(k) && !(ENV_ONLY_KEYS as readonly string[]).includes(k) && k !== 'limits') {
      throw new ConfigError(k, `config file ${path}: unknown key "${k}" (known: ${[...CONFIG_KEYS, 'limits'].join(', ')})`);
    }
  }
  return parsed as Raw;
}

export function envValues(env: NodeJS.ProcessEnv): Raw {
  const out: Raw = {};
  for (const k of [...CONFIG_KEYS, ...ENV_ONLY_KEYS]) {
    const v = env[envOf(k)];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/** A value, where it came from (`--peers`, `SWITCHBOARD_PEERS`, `config file x key peers`) and how to take it out. */
type Picked = { value: unknown; where: string; drop: string };
type Picker = (k: Key) => Picked | undefined;

function str(v: unknown, where: string): string {
  if (typeof v !== 'string' || v === '') throw new ConfigError(where, `${where} must be a non-empty string`);
  return v;
}

/** Reads the file a key names; an unreadable one is refused naming the key and the path. */
function readNamedFile(p: Picked, what: string): { path: string; data: Buffer } {
  const path = str(p.value, p.where);
  try {
    return { path, data: readFileSync(path) };
  } catch (err) {
    throw new ConfigError(p.where, `${p.where}: cannot read ${what} ${path}: ${(err as Error).message}`, {
      code: 'FILE_UNREADABLE',
      hint: 'give the path of an existing file that the user running the agent may read (a relative path starts at the working directory)',
    });
  }
}

/**
 * A PEM certificate file (a CA file may hold several). Checked here because the etcd
 * client only reports a bad file as a failed connection, without naming it.
 */
function pemCertificate(p: Picked, what: string): { data: Buffer; x509: X509Certificate } {
  const { path, data } = readNamedFile(p, what);
  const x509 = data.includes('-----BEGIN CERTIFICATE-----') ? parsed(() => new X509Certificate(data)) : null;
  if (x509 === null) {
    throw new ConfigError(p.where, `${p.where}: ${path} holds no PEM certificate (${what})`, {
      code: 'TLS_FILE_INVALID',
      hint: 'give a PEM file that starts with -----BEGIN CERTIFICATE-----, such as the files etcd takes with --trusted-ca-file and --cert-file',
    });
  }
  return { data, x509 };
}

/** What `parse` makes of a file's contents, or null when it cannot. */
function parsed<T>(parse: () => T): T | null {
  try {
    return parse();
  } catch {
    return null;
  }
}

function pemPrivateKey(p: Picked, what: string): { data: Buffer; key: KeyObject } {
  const { path, data } = readNamedFile(p, what);
  const key = parsed(() => createPrivateKey(data));
  if (key === null) {
    throw new ConfigError(p.where, `${p.where}: ${path} holds no unencrypted PEM private key (${what})`, {
      code: 'TLS_FILE_INVALID',
      hint: 'give the PEM key (-----BEGIN PRIVATE KEY----- or -----BEGIN EC/RSA PRIVATE KEY-----) without a passphrase, readable only by the agent',
    });
  }
  return { data, key };
}

/**
 * TLS towards etcd. https:// endpoints use it, trusting etcdCaFile's CAs or else the
 * system's; a client certificate is presented when etcd asks for one (--client-cert-auth).
 * TLS files given for http:// endpoints are refused rather than silently left unused.
 */
function etcdTlsOf(endpoints: string[], pick: Picker): EtcdTls | null {
  const etcdWhere = pick('etcd')?.where ?? flagOf('etcd');
  const secure = endpoints.filter((u) => u.startsWith('https://')).length;
  if (secure > 0 && secure < endpoints.length) {
    throw new ConfigError(etcdWhere, `${etcdWhere} mixes https:// and http:// endpoints`, {
      code: 'ETCD_MIXED_SCHEMES',
      hint: 'etcd serves its clients either with TLS or without: give every endpoint the same scheme (https:// when etcd runs with --cert-file)',
    });
  }
  const caP = pick('etcdCaFile');
  const certP = pick('etcdCertFile');
  const keyP = pick('etcdKeyFile');
  if ((certP === undefined) !== (keyP === undefined)) {
    const given = (certP ?? keyP) as Picked;
    const missing = certP === undefined ? 'etcdCertFile' : 'etcdKeyFile';
    throw new ConfigError(given.where, `${given.where} needs ${flagOf(missing)} too`, {
      code: 'ETCD_CERT_KEY_PAIR',
      hint: 'a client certificate and its private key go together: give both etcdCertFile and etcdKeyFile, or neither',
    });
  }
  const tlsGiven = caP ?? certP;
  if (secure === 0 && endpoints.length > 0 && tlsGiven !== undefined) {
    throw new ConfigError(tlsGiven.where, `${tlsGiven.where} is given but the etcd endpoints (${etcdWhere}) are http://`, {
      code: 'ETCD_TLS_WITHOUT_HTTPS',
      hint: 'TLS is used with https:// endpoints only: write them as https://HOST:2379 if etcd serves TLS (--cert-file), or drop the TLS files',
    });
  }
  const ca = caP === undefined ? null : pemCertificate(caP, 'the etcd CA certificate');
  const cert = certP === undefined ? null : pemCertificate(certP, 'the etcd client certificate');
  const key = keyP === undefined ? null : pemPrivateKey(keyP, "the etcd client certificate's key");
  if (cert !== null && key !== null && !cert.x509.checkPrivateKey(key.key)) {
    const c = certP as Picked;
    throw new ConfigError(c.where, `${c.where} and ${(keyP as Picked).where} do not belong together: the key is not the certificate's`, {
      code: 'ETCD_CERT_KEY_MISMATCH',
      hint: 'give the private key the client certificate was issued for',
    });
  }
  if (secure === 0) return null;
  return { ca: ca?.data ?? null, cert: cert?.data ?? null, key: key === null ? null : new Secret(key.data) };
}

/**
 * The shortest cluster secret taken (peerSecretFile). Whoever the node dials (a --join
 * address, a stale address) sees a proof made with the secret and could try guesses
 * against it offline: the secret must be long and random, not a phrase.
 */
export const MIN_PEER_SECRET_BYTES = 32;

/** ap: the cluster's shared secret, the file's bytes (one trailing newline dropped); null without one. */
function peerSecretOf(pick: Picker): Secret<Buffer> | null {
  const p = pick('peerSecretFile');
  if (p === undefined) return null;
  let data = readNamedFile(p, 'the cluster secret file').data;
  if (data.at(-1) === 0x0a) data = data.subarray(0, data.at(-2) === 0x0d ? -2 : -1);
  if (data.length < MIN_PEER_SECRET_BYTES) {
    throw new ConfigError(p.where, `${p.where}: the cluster secret holds ${data.length} bytes, at least ${MIN_PEER_SECRET_BYTES} are needed`, {
      code: 'PEER_SECRET_TOO_SHORT',
      hint: 'put a long random secret in the file, the same on every node, for example: openssl rand -base64 33 > peer-secret',
    });
  }
  return new Secret(Buffer.from(data));
}

/**
 * Reads and checks the API token file (apiTokensFile); a refusal names the line, never
 * the token on it.
 */
export function readApiTokens(path: string, where: string): ApiTokensConfig {
  const { data } = readNamedFile({ value: path, where, drop: `drop ${where}` }, 'the API token file');
  try {
    const { tokens, forward } = parseTokenFile(data.toString('utf8'));
    return { path, where, tokens, forwardToken: forward === null ? null : { token: new Secret(forward.token), scope: forward.scope, line: forward.line } };
  } catch (err) {
    if (!(err instanceof TokenFileError)) throw err;
    throw new ConfigError(where, `${where}: ${path} ${err.message}`, { code: err.code, hint: err.hint });
  }
}

/**
 * HTTPS for the API: a certificate (PEM, the chain after it) and its unencrypted key,
 * given together and belonging together.
 */
function apiTlsOf(pick: Picker): ApiTls | null {
  const certP = pick('tlsCertFile');
  const keyP = pick('tlsKeyFile');
  if (certP === undefined && keyP === undefined) return null;
  if (certP === undefined || keyP === undefined) {
    const given = (certP ?? keyP) as Picked;
    throw new ConfigError(given.where, `${given.where} needs ${flagOf(certP === undefined ? 'tlsCertFile' : 'tlsKeyFile')} too`, {
      code: 'TLS_CERT_KEY_PAIR',
      hint: 'HTTPS needs the certificate and its private key: give both tlsCertFile and tlsKeyFile, or neither for plain HTTP',
    });
  }
  const cert = pemCertificate(certP, "the API's certificate");
  const key = pemPrivateKey(keyP, "the API certificate's key");
  keyOfCertificate(certP, cert, keyP, key, "the server's");
  return { cert: cert.data, key: new Secret(key.data) };
}

/** Refuses a key that is not the certificate's (`whose`: whose certificate comes first in its file). */
function keyOfCertificate(certP: Picked, cert: { x509: X509Certificate }, keyP: Picked, key: { key: KeyObject }, whose: string): void {
  if (cert.x509.checkPrivateKey(key.key)) return;
  throw new ConfigError(certP.where, `${certP.where} and ${keyP.where} do not belong together: the key is not the certificate's`, {
    code: 'TLS_CERT_KEY_MISMATCH',
    hint: `give the private key the certificate was issued for (the first certificate of the file is ${whose} own)`,
  });
}

/**
 * ap: mutual TLS on the peer links. The three files go together; the key must be the
 * certificate's, and the certificate must be signed by a CA of the CA file (or carry the
 * intermediate that is), so that a node does not start only to be refused by every peer.
 */
function peerTlsOf(pick: Picker): AgentConfig['peerTls'] {
  const keys = ['peerTlsCertFile', 'peerTlsKeyFile', 'peerTlsCaFile'] as const;
  const given = keys.map((k) => pick(k));
  const crlP = pick('peerTlsCrlFile');
  if (given.every((p) => p === undefined)) {
    if (crlP !== undefined) {
      throw new ConfigError(crlP.where, `${crlP.where} is for peer TLS, which is off`, {
        code: 'PEER_TLS_INCOMPLETE',
        hint: `give ${keys.map((k) => flagOf(k)).join(', ')} as well, or leave the revocation list out`,
      });
    }
    return null;
  }
  const missing = keys.filter((_, i) => given[i] === undefined);
  if (missing.length > 0) {
    const first = given.find((p) => p !== undefined) as Picked;
    throw new ConfigError(first.where, `${first.where} needs ${missing.map((k) => flagOf(k)).join(' and ')} too`, {
      code: 'PEER_TLS_INCOMPLETE',
      hint: 'peer TLS needs this node\'s certificate, its private key and the CA that signs every member\'s certificate: give all three, or none for plain TCP',
    });
  }
  const [certP, keyP, caP] = given as [Picked, Picked, Picked];
  const cert = pemCertificate(certP, "this node's peer certificate");
  const key = pemPrivateKey(keyP, "the peer certificate's key");
  const ca = pemCertificate(caP, "the peer links' CA");
  keyOfCertificate(certP, cert, keyP, key, "the node's");
  // Every node both accepts and dials links: its certificate serves both ends of TLS.
  const usages = cert.x509.keyUsage; // the extended key usages (OIDs); undefined: any use
  if (usages !== undefined && !(usages.includes('1.3.6.1.5.5.7.3.1') && usages.includes('1.3.6.1.5.5.7.3.2'))) {
    throw new ConfigError(certP.where, `${certP.where}: the certificate may not be used for both ends of a link (extended key usage ${usages.join(', ')})`, {
      code: 'PEER_TLS_KEY_USAGE',
      hint: 'issue peer certificates with extendedKeyUsage=serverAuth,clientAuth (or without that extension): each node accepts links and dials them',
    });
  }
  const now = Date.now();
  if (Date.parse(cert.x509.validTo) < now || Date.parse(cert.x509.validFrom) > now) {
    throw new ConfigError(certP.where, `${certP.where}: the certificate is valid from ${cert.x509.validFrom} to ${cert.x509.validTo}, not now`, {
      code: 'PEER_TLS_EXPIRED',
      hint: 'issue a new certificate for this node (peers refuse an expired one), and check the machine\'s clock',
    });
  }
  // The node's own certificate (the first of its file) must lead, through the intermediates
  // after it, to a CA of the CA file, and that CA must be a root: Node's TLS trusts a
  // chain only up to a self-signed certificate, so an intermediate alone there would make
  // every link fail.
  const cas = pemChain(ca.data);
  const chain = pemChain(cert.data);
  const issuerIn = (c: X509Certificate, pool: X509Certificate[]) => pool.find((a) => c !== a && c.checkIssued(a) && c.verify(a.publicKey));
  let at: X509Certificate | undefined = chain[0];
  let trusted: X509Certificate | undefined;
  for (let hops = 0; at && hops <= chain.length && !trusted; hops++) {
    trusted = issuerIn(at, cas);
    if (!trusted) at = issuerIn(at, chain);
  }
  if (!trusted) {
    throw new ConfigError(certP.where, `${certP.where}: the certificate is not signed by a CA of ${caP.where}`, {
      code: 'PEER_TLS_NOT_SIGNED',
      hint: 'sign every member\'s certificate with the cluster\'s CA and give that CA\'s certificate to every node (an intermediate CA goes after the node\'s certificate in its file)',
    });
  }
  if (!(trusted.checkIssued(trusted) && trusted.verify(trusted.publicKey))) {
    throw new ConfigError(caP.where, `${caP.where}: the CA that signs this node's certificate is an intermediate (${trusted.subject.replace(/\n/g, ', ')}); TLS here trusts a chain only up to a root CA`, {
      code: 'PEER_TLS_CA_NOT_ROOT',
      hint: 'give the root CA in --peer-tls-ca-file and the intermediate after the node\'s certificate in --peer-tls-cert-file; every certificate under that root may then link, so give the cluster a root of its own',
    });
  }
  const crl = crlP === undefined ? null : pemCrls(crlP, ca.data);
  return { cert: cert.data, key: new Secret(key.data), ca: ca.data, crl: crl?.lists ?? null, crlFile: crl?.path ?? null };
}

/**
 * The revocation lists of peerTlsCrlFile: every PEM X509 CRL of the file, one per CA
 * (OpenSSL then checks each certificate of a chain, intermediates and root included,
 * against its issuer's list, so the file holds the list of every CA in the members'
 * chains). Whether they are the right ones, and do not revoke this node's own
 * certificate, is checked at start by a TLS handshake of the node with itself
 * (engines/ap/net/tls-check.ts): no parser here.
 */
function pemCrls(p: Picked, ca: Buffer): { path: string; lists: Buffer[] } {
  const { path, data } = readNamedFile(p, "the peer links' certificate revocation list");
  const hint = "give the certificate revocation lists (PEM, -----BEGIN X509 CRL-----, as `openssl ca -gencrl` writes them) of every CA in the members' certificate chains, one after another";
  const lists = [...data.toString('latin1').matchAll(/-----BEGIN X509 CRL-----[\s\S]+?-----END X509 CRL-----/g)].map((m) => Buffer.from(m[0], 'latin1'));
  if (lists.length === 0) {
    throw new ConfigError(p.where, `${p.where}: ${path} holds no PEM certificate revocation list`, { code: 'PEER_TLS_CRL_INVALID', hint });
  }
  try {
    createSecureContext({ ca, crl: lists });
  } catch (err) {
    throw new ConfigError(p.where, `${p.where}: a revocation list of ${path} cannot be read (${(err as Error).message})`, { code: 'PEER_TLS_CRL_INVALID', hint });
  }
  return { path, lists };
}

/** The revocation lists of peerTlsCrlFile read again (SIGHUP), checked as at start. */
export function readPeerRevocationLists(path: string, ca: Buffer): Buffer[] {
  const where = flagOf('peerTlsCrlFile');
  return pemCrls({ value: path, where, drop: `drop ${where}` }, ca).lists;
}

/** Every certificate of a PEM file, in order (those that parse). */
function pemChain(data: Buffer): X509Certificate[] {
  const out: X509Certificate[] = [];
  for (const m of data.toString('latin1').matchAll(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)) {
    const c = parsed(() => new X509Certificate(m[0]));
    if (c) out.push(c);
  }
  return out;
}

/**
 * cp: the CAs that signed the other nodes' API certificates (tlsCaFile), trusted when this
 * node calls them (forwarded consumer reports). Also without tlsCertFile: a node still on
 * plain HTTP calls the nodes already on HTTPS while a cluster moves to it.
 */
function apiTlsCaOf(pick: Picker): Buffer | null {
  const p = pick('tlsCaFile');
  return p === undefined ? null : pemCertificate(p, "the CA of the other nodes' API certificates").data;
}

const PASSWORD_HINT = `put the password in a file readable only by the agent and give it with ${flagOf('etcdPasswordFile')}, or set ${envOf('etcdPassword')}; it is never taken from a flag, which any user can read in ps`;

/**
 * etcd's user authentication: a user name and its password, which comes from a file
 * (etcdPasswordFile) or from SWITCHBOARD_ETCD_PASSWORD. No message ever holds the password.
 */
function etcdAuthOf(pick: Picker): EtcdAuth | null {
  const userP = pick('etcdUsername');
  const fileP = pick('etcdPasswordFile');
  const envP = pick('etcdPassword');
  if (fileP !== undefined && envP !== undefined) {
    throw new ConfigError(envP.where, `the etcd password is given twice: ${envP.where} and ${fileP.where}`, {
      code: 'ETCD_PASSWORD_TWICE',
      hint: 'keep one of them, so that it is clear which password the agent uses',
    });
  }
  const passP = fileP ?? envP;
  if (userP === undefined) {
    if (passP === undefined) return null;
    throw new ConfigError(passP.where, `${passP.where} gives an etcd password but no etcd user`, {
      code: 'ETCD_USERNAME_MISSING',
      hint: `name the etcd user with ${flagOf('etcdUsername')} (or ${envOf('etcdUsername')}, or etcdUsername in the config file)`,
    });
  }
  const username = str(userP.value, userP.where);
  if (passP === undefined) throw new ConfigError(userP.where, `${userP.where} needs the etcd user's password`, { code: 'ETCD_PASSWORD_MISSING', hint: PASSWORD_HINT });
  let password: string;
  if (fileP !== undefined) password = readNamedFile(fileP, 'the etcd password file').data.toString('utf8').replace(/\r?\n$/, '');
  else password = String(passP.value); // the environment's (any other source is refused above)
  if (password === '') throw new ConfigError(passP.where, `${passP.where}: the etcd password is empty`, { code: 'ETCD_PASSWORD_EMPTY', hint: PASSWORD_HINT });
  return { username, password: new Secret(password) };
}

/** Settings that some modes only use: any other mode refuses them rather than ignoring them. */
const MODE_KEYS: Partial<Record<Key, readonly Mode[]>> = {
  dataDir: ['standalone', 'ap'],
  dev: ['standalone', 'ap'],
  peerAddr: ['ap'],
  peers: ['ap'],
  join: ['ap'],
  cluster: ['ap'],
  peerSecretFile: ['ap'],
  peerTlsCertFile: ['ap'],
  peerTlsKeyFile: ['ap'],
  peerTlsCaFile: ['ap'],
  peerTlsCrlFile: ['ap'],
  etcd: ['cp'],
  etcdPrefix: ['cp'],
  etcdCaFile: ['cp'],
  etcdCertFile: ['cp'],
  etcdKeyFile: ['cp'],
  etcdUsername: ['cp'],
  etcdPasswordFile: ['cp'],
  etcdPassword: ['cp'],
  tlsCaFile: ['cp'],
};

/** How to take a value out of its source, for hints. */
function dropOf(s: Source, k: Key | 'limits'): string {
  if (s.name === 'flag') return `drop ${flagOf(k)}`;
  if (s.name === 'env') return `unset ${envOf(k)}`;
  return `remove key ${k} from ${s.name}`;
}

/** A value that asks for nothing (dev off, an empty list such as SWITCHBOARD_PEERS= from a shared environment file). */
function asksNothing(k: Key, p: Picked): boolean {
  if (k === 'dev') return !boolOf(p.value, p.where);
  return p.value === '' || (Array.isArray(p.value) && p.value.length === 0);
}

/**
 * Refuses a setting of another mode, from whichever source: --peers without --mode ap
 * started a standalone node that never dialed anyone, without a word.
 */
function refuseOtherModes(mode: Mode, pick: Picker): void {
  const foreign = (Object.entries(MODE_KEYS) as [Key, readonly Mode[]][]).flatMap(([k, modes]) => {
    const p = pick(k);
    return p === undefined || modes.includes(mode) || asksNothing(k, p) ? [] : [{ p, modes }];
  });
  const [first, ...others] = foreign;
  if (first === undefined) return;
  const { p, modes } = first;
  const modeFrom = pick('mode')?.where;
  const also = others.length === 0 ? '' : `; ${others.map((o) => o.p.where).join(' and ')} ${others.length === 1 ? 'does' : 'do'} not apply to ${mode} either`;
  const drops = foreign.map((o) => o.p.drop).join(', ');
  const hint = modeFrom === undefined && modes.length === 1 ? `did you mean --mode ${modes[0]}? Otherwise ${drops}` : `${drops}: --mode ${mode} does not use ${foreign.length === 1 ? 'it' : 'them'}`;
  throw new ConfigError(p.where, `${p.where} is for ${modes.map((m) => `--mode ${m}`).join(' or ')}, but the mode is ${mode} (${modeFrom ?? 'the default'})${also}`, { hint });
}

/** Resolves the configuration; `sources` are in order of precedence, highest first. */
export function resolveConfig(sources: Source[]): AgentConfig {
  const whereOf = (s: Source, k: Key | 'limits'): string => (s.name === 'flag' ? flagOf(k) : s.name === 'env' ? envOf(k) : `${s.name} key ${k}`);
  const pick = (k: Key | 'limits'): Picked | undefined => {
    const s = sources.find((x) => x.values[k] !== undefined);
    return s === undefined ? undefined : { value: s.values[k], where: whereOf(s, k), drop: dropOf(s, k) };
  };
  for (const k of ENV_ONLY_KEYS) {
    // Every source, not only the one that wins: a password in a config file is refused
    // even when the environment gives one too.
    const s = sources.find((x) => x.name !== 'env' && x.values[k] !== undefined);
    const p = s === undefined ? undefined : { where: whereOf(s, k) };
    if (p !== undefined) {
      throw new ConfigError(p.where, `${p.where} is not accepted: the etcd password is read from ${envOf(k)} or from a file`, {
        code: 'SECRET_NOT_FROM_ENV',
        hint: `a flag is visible to every user in ps and a config file is often widely readable: set ${envOf(k)}, or give a file readable only by the agent with ${flagOf(`${k}File`)} (config key ${k}File)`,
      });
    }
  }
  const get = <T>(k: Key | 'limits', parse: (v: unknown, where: string) => T, fallback: T): T => {
    const p = pick(k);
    return p === undefined ? fallback : parse(p.value, p.where);
  };
  const name = (v: unknown, where: string): string => {
    const s = str(v, where);
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(s)) throw new ConfigError(where, `${where} "${s}" must be 1-64 characters of A-Z, a-z, 0-9, ".", "_" and "-"`);
    return s;
  };
  // The rule the API checks member ids with (protocol's validateNodeId).
  const nodeId = (v: unknown, where: string, what = 'node id'): string => {
    const s = str(v, where);
    if (!isNodeId(s)) throw new ConfigError(where, `${where}: ${what} "${s}" must be ${NODE_ID_RULE}`);
    return s;
  };
  const mode = get('mode', (v, w) => oneOf(v, w, MODES), 'standalone');
  refuseOtherModes(mode, pick);
  const etcd = get('etcd', (v, w) => listOf(v, w).map((u) => {
    if (!/^https?:\/\/[^\s/]+$/.test(u)) throw new ConfigError(w, `${w}: "${u}" must be a URL like http://127.0.0.1:2379`);
    // Without a port the etcd client dials 443 (gRPC's default), whatever the scheme.
    if (!/:\d{1,5}$/.test(u)) throw new ConfigError(w, `${w}: "${u}" has no port`, { hint: "give etcd's client port, usually 2379, like http://127.0.0.1:2379" });
    return u;
  }), []);
  const cfg: AgentConfig = {
    mode,
    httpAddr: get('httpAddr', (v, w) => hostPort(v, w, { listen: true, hint: 'use HOST:PORT, like 127.0.0.1:7700 (port 0 picks a free port)' }), { host: '127.0.0.1', port: 7700 }),
    dataDir: get('dataDir', str, './data'),
    dev: get('dev', boolOf, false),
    nodeId: get<string | null>('nodeId', nodeId, null),
    peerAddr: get('peerAddr', (v, w) => hostPort(v, w, { listen: true, hint: 'use HOST:PORT, like 127.0.0.1:7701 (port 0 picks a free port)' }), { host: '127.0.0.1', port: 7701 }),
    peers: get('peers', (v, w) => listOf(v, w).map((p) => {
      const at = p.indexOf('@');
      if (at <= 0) throw new ConfigError(w, `${w}: peer "${p}" must be ID@HOST:PORT`);
      return { id: nodeId(p.slice(0, at), w, `the id of peer "${p}"`), ...hostPort(p.slice(at + 1), w, { listen: false, hint: 'write each peer as ID@HOST:PORT, like b@10.0.0.2:7701' }) };
    }), []),
    etcd,
    etcdPrefix: get('etcdPrefix', (v, w) => {
      const s = str(v, w);
      if (!/^\/[\x21-\x7e]*\/$/.test(s)) throw new ConfigError(w, `${w} "${s}" must start and end with "/" (for example /switchboard/)`);
      return s;
    }, '/switchboard/'),
    etcdTls: etcdTlsOf(etcd, pick),
    etcdAuth: etcdAuthOf(pick),
    join: get('join', (v, w) => listOf(v, w).map((a) => hostPort(a, w, { listen: false, hint: 'use HOST:PORT,..., like 10.0.0.1:7701' })), []),
    cluster: get('cluster', name, 'switchboard'),
    peerSecret: peerSecretOf(pick),
    peerTls: peerTlsOf(pick),
    alertWebhooks: get('alertWebhooks', (v, w) => listOf(v, w).map((u) => {
      // Named without its query and credentials: either may hold a secret.
      if (!/^https?:\/\/\S+$/.test(u) || !URL.canParse(u)) throw new ConfigError(w, `${w}: "${URL.canParse(u) ? displayUrl(u) : '(not a URL)'}" must be an http(s) URL, like https://alerts.example.com/hook (a user and password in it are sent as basic authentication)`);
      // The user and password are percent-decoded for basic authentication (webhookTarget):
      // a "%" not followed by two hex digits cannot be, and would stop the agent later.
      const { username, password } = new URL(u);
      try {
        decodeURIComponent(username);
        decodeURIComponent(password);
      } catch {
        throw new ConfigError(w, `${w}: the user or password of "${displayUrl(u)}" has a "%" that is not followed by two hex digits`, { hint: 'percent-encode a "%" in the user or password as %25 (and ":", "@", "/" as %3A, %40, %2F)' });
      }
      return u;
    }), []),
    proxyAddr: get<HostPort | null>('proxyAddr', (v, w) => hostPort(v, w, { listen: true, hint: 'use HOST:PORT, like 127.0.0.1:7780 (port 0 picks a free port)' }), null),
    proxyNamespace: get('proxyNamespace', (v, w) => {
      const s = str(v, w);
      try {
        return validateNamespace(s);
      } catch (err) {
        throw new ConfigError(w, `${w}: ${(err as Error).message}`);
      }
    }, DEFAULT_NAMESPACE),
    proxyStrategy: get('proxyStrategy', (v, w) => oneOf(v, w, PICK_STRATEGIES), 'round-robin'),
    otlpEndpoint: get<string | null>('otlpEndpoint', (v, w) => {
      const s = str(v, w);
      if (!/^https?:\/\/\S+$/.test(s)) throw new ConfigError(w, `${w}: "${s}" must be an http(s) URL like http://127.0.0.1:4318/v1/traces`);
      return s;
    }, null),
    logLevel: get('logLevel', (v, w) => oneOf(v, w, ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const), 'info'),
    logFormat: get('logFormat', (v, w) => oneOf(v, w, ['json', 'pretty', 'auto'] as const), 'auto'),
    checkNetworks: new CheckNetworks(get('checkDenyNetworks', networkList, [...DEFAULT_DENY_NETWORKS]), get('checkAllowNetworks', networkList, [])),
    apiTokens: get<ApiTokensConfig | null>('apiTokensFile', (v, w) => readApiTokens(str(v, w), w), null),
    metricsOpen: get('metricsOpen', boolOf, false),
    secretFiles: SECRET_FILE_KEYS.flatMap((k) => {
      const p = pick(k);
      return p === undefined || typeof p.value !== 'string' ? [] : [{ where: p.where, path: p.value }];
    }),
    tls: apiTlsOf(pick),
    tlsCa: apiTlsCaOf(pick),
    limits: get('limits', limitsOf, { ...DEFAULT_LIMITS }),
    listenFrom: { httpAddr: pick('httpAddr')?.where ?? flagOf('httpAddr'), peerAddr: pick('peerAddr')?.where ?? flagOf('peerAddr'), proxyAddr: pick('proxyAddr')?.where ?? flagOf('proxyAddr') },
  };
  checkModeNeeds(cfg);
  if (cfg.proxyAddr === null) {
    for (const k of ['proxyNamespace', 'proxyStrategy'] as const) {
      const p = pick(k);
      if (p !== undefined) throw new ConfigError(p.where, `${p.where} is a setting of the service proxy, which is off`, { hint: `add ${flagOf('proxyAddr')} HOST:PORT to start the proxy, or drop ${p.where}` });
    }
  } else {
    const x = cfg.proxyAddr;
    for (const [key, other] of [['httpAddr', cfg.httpAddr], ...(cfg.mode === 'ap' ? [['peerAddr', cfg.peerAddr] as const] : [])] as const) {
      if (x.port !== 0 && x.port === other.port && x.host === other.host) {
        throw new ConfigError(cfg.listenFrom.proxyAddr, `${cfg.listenFrom.proxyAddr} ${x.host}:${x.port} is the address of ${key === 'httpAddr' ? 'the REST API' : 'the peer links'} too (${cfg.listenFrom[key]})`, { hint: `the proxy needs a port of its own: give ${cfg.listenFrom.proxyAddr} another port, like 7780` });
      }
    }
  }
  checkPeerCertificateId(cfg, pick('peerTlsCertFile')?.where ?? flagOf('peerTlsCertFile'));
  return cfg;
}

/**
 * A peer certificate bound to node ids (subjectAltName URI:switchboard:node:ID) must name
 * this node's: its peers would refuse every link otherwise.
 */
function checkPeerCertificateId(cfg: AgentConfig, where: string): void {
  if (!cfg.peerTls) return;
  const ids = peerIdsOfSubjectAltName(new X509Certificate(cfg.peerTls.cert).subjectAltName);
  if (ids.length === 0 || (cfg.nodeId !== null && ids.includes(cfg.nodeId))) return;
  throw new ConfigError(where, `${where}: the certificate is issued for node ${ids.map((id) => `"${id}"`).join(', ')}, and this node is "${cfg.nodeId}"`, {
    code: 'PEER_TLS_WRONG_ID',
    hint: 'give this node its own certificate (subjectAltName URI:switchboard:node:<its --node-id>), or start it with the --node-id its certificate names',
  });
}

/** What a mode cannot start without, and listen addresses that would collide. */
function checkModeNeeds(cfg: AgentConfig): void {
  if (cfg.mode === 'cp' && cfg.etcd.length === 0) throw new ConfigError('etcd', '--mode cp needs --etcd URL,... (the etcd cluster)');
  if (cfg.mode === 'ap' && cfg.nodeId === null) throw new ConfigError('nodeId', '--mode ap needs --node-id');
  const { httpAddr: h, peerAddr: p } = cfg;
  if (cfg.mode === 'ap' && h.port !== 0 && h.port === p.port && h.host === p.host) {
    const where = cfg.listenFrom.peerAddr;
    throw new ConfigError(where, `${where} ${p.host}:${p.port} is the address of the REST API too (${cfg.listenFrom.httpAddr})`, {
      hint: `peer links need a port of their own (by default 7701): give ${where} another port`,
    });
  }
}

/** The node id when none is configured: the host name, with any character a node id may not have replaced by "-". */
export function defaultNodeId(host = hostname()): string {
  const id = host.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 253);
  return id === '' ? 'switchboard' : id;
}
