/** cp mode: stateless nodes over an etcd cluster (docs/cp.md). */
import type { Logger } from 'pino';
import type { AgentConfig } from '../../cli/config.js';
import { logDenials } from '../../health/networks.js';
import type { Engine } from '../engine.js';
import type { OpenContext } from '../open.js';
import { rootCertificates } from 'node:tls';
import { Agent } from 'undici';
import { CpEngine, type CpOptions } from './engine.js';
import type { PeerApi } from './forward.js';
import { probeEndpoints, refusalOf, type Refusal } from './store.js';

/** Deadline of the start's probe of each etcd endpoint. */
const ENDPOINT_PROBE_TIMEOUT_MS = 2_000;

export async function openCpEngine(ctx: OpenContext): Promise<Engine> {
  const { cfg, logger } = ctx;
  const log = logger.child({ component: 'cp' });
  const security = { tls: cfg.etcdTls !== null, clientCert: cfg.etcdTls?.cert != null, username: cfg.etcdAuth?.username ?? null };
  warnOfForwardToken(cfg, log);
  if (cfg.etcdAuth !== null && cfg.etcdTls === null) log.warn({ etcd: cfg.etcd }, 'the etcd password is sent over plain http: use https:// endpoints where others can see the traffic');
  // Every endpoint on its own: one whose TLS handshake fails stops the start, even when the
  // others answer; one that does not answer (or is not an etcd member that can serve) only
  // gets a warning. Best effort: an endpoint that does not answer within the probe's
  // deadline is not checked (its refusal is met later, when the client picks it).
  const secrets = etcdSecurityOf(cfg);
  const probes = await probeEndpoints({ endpoints: cfg.etcd, ...(secrets.tls && { tls: secrets.tls }) }, Buffer.from(cfg.etcdPrefix), ENDPOINT_PROBE_TIMEOUT_MS);
  const refused = probes.filter((p) => p.refusal !== null);
  if (refused.length > 0) {
    const first = refused[0] as (typeof refused)[number];
    const others = refused.length > 1 ? `; also refused by ${refused.slice(1).map((p) => p.endpoint).join(', ')}` : '';
    throw new Error(`${describeRefusal(first.refusal as Refusal, cfg)} (endpoint ${first.endpoint}: ${oneLine(first.error?.message ?? '')}${others})`);
  }
  const silent = probes.filter((p) => p.error !== null);
  if (silent.length > 0 && silent.length < probes.length) log.warn({ endpoints: silent.map((p) => p.endpoint), err: silent[0]?.error }, 'some etcd endpoints do not answer yet');
  const started = Date.now();
  let warnedAt = -Infinity;
  // etcd may still be starting (all members started together): try for a while.
  for (;;) {
    try {
      const engine = await CpEngine.open({
        nodeId: ctx.nodeId,
        address: `${cfg.httpAddr.host}:${cfg.httpAddr.port}`,
        endpoints: cfg.etcd,
        prefix: cfg.etcdPrefix,
        limits: cfg.limits,
        checkNetworks: cfg.checkNetworks,
        onCheckDenied: logDenials(logger.child({ component: 'checks' })),
        clock: ctx.clock,
        ...secrets,
        peerApi: peerApiOf(cfg),
        log: (level, msg, err) => log[level](err === undefined ? {} : { err }, msg),
      });
      log.info({ etcd: cfg.etcd, prefix: cfg.etcdPrefix, ...security, epoch: engine.registry.epoch, revision: engine.registry.revision, instances: engine.registry.instanceCount }, 'following the registry in etcd');
      return engine;
    } catch (err) {
      // A refusal stays a refusal: stop at once instead of retrying it for 30 s.
      const refusal = refusalOf(err);
      if (refusal !== null) throw new Error(`${describeRefusal(refusal, cfg)} (${oneLine((err as Error).message)})`);
      if (Date.now() - started > 30_000) {
        const tlsHint = cfg.etcdTls === null ? ' (if etcd serves TLS, its endpoints are https://)' : '';
        throw new Error(`cannot read the registry from etcd at ${cfg.etcd.join(',')} within 30 s${tlsHint}: ${startFailureCause(err, probes)}`);
      }
      // One line that names the cause, now and then (the whole error at debug level): a
      // stack trace every second says less than "connection refused".
      const cause = startFailureCause(err, probes);
      if (Date.now() - warnedAt >= START_WARN_EVERY_MS) {
        warnedAt = Date.now();
        log.warn({ etcd: cfg.etcd, cause }, `etcd at ${cfg.etcd.join(',')} cannot be read yet (${cause}); trying again every second for up to 30 s`);
      }
      log.debug({ err }, 'etcd cannot be read yet');
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

/**
 * The token file's forward credential, at start: a node that forwards with a write token
 * hands every other node (and whoever sees the traffic) a token that may write anything;
 * one without either token forwards nothing the other nodes accept.
 */
function warnOfForwardToken(cfg: AgentConfig, log: Logger): void {
  const tokens = cfg.apiTokens;
  if (tokens === null) return;
  const forward = tokens.forwardToken;
  if (forward === null) {
    log.warn({ file: tokens.path }, `${tokens.where}: ${tokens.path} holds no forward (or write) token, so the other nodes refuse the consumer reports this node forwards to them and each node counts its own; add a line "forward TOKEN", the same on every node (cp.md, API tokens and TLS)`);
  } else if (forward.scope === 'write') {
    log.warn({ file: tokens.path, line: forward.line }, `${tokens.where}: ${tokens.path} holds no forward token, so this node forwards consumer reports to the other nodes with its first write token (line ${forward.line}), which allows every write; add a line "forward TOKEN", the same on every node, and nodes call each other with a token that can do nothing else (cp.md, API tokens and TLS)`);
  }
}

/** The engine's TLS and auth options, with the secrets taken out of their wrappers. */
function etcdSecurityOf(cfg: AgentConfig): Pick<CpOptions, 'tls' | 'auth'> {
  const { etcdTls: tls, etcdAuth: auth } = cfg;
  return {
    ...(tls !== null && { tls: { ca: tls.ca, cert: tls.cert, key: tls.key?.reveal() ?? null } }),
    ...(auth !== null && { auth: { username: auth.username, password: auth.password.reveal() } }),
  };
}

/** What an operator reads when etcd refuses this node: what happened and what to change. */
function describeRefusal(refusal: Refusal, cfg: Pick<AgentConfig, 'etcdAuth' | 'etcdPrefix'>): string {
  const user = cfg.etcdAuth?.username;
  switch (refusal) {
    case 'authentication':
      return `etcd authentication failed for user "${user}": etcd refused the user name or password; check --etcd-username and the password (--etcd-password-file or SWITCHBOARD_ETCD_PASSWORD)`;
    case 'auth_disabled':
      return `etcd has authentication disabled, but this node was given the etcd user "${user}": enable etcd's authentication (etcdctl auth enable) or leave out --etcd-username`;
    case 'permission':
      return user === undefined
        ? `etcd refused access to ${cfg.etcdPrefix}: etcd has authentication enabled and this node has no etcd user; give one with --etcd-username and its password (--etcd-password-file or SWITCHBOARD_ETCD_PASSWORD)`
        : `etcd user "${user}" may not read and write ${cfg.etcdPrefix}: grant one of its roles readwrite on the prefix (etcdctl role grant-permission ROLE --prefix=true readwrite ${cfg.etcdPrefix}; see docs/cp.md)`;
    case 'tls_untrusted':
      return "TLS with etcd failed: this node does not trust etcd's server certificate; --etcd-ca-file must hold the CA that signed it (default the system CAs), and the certificate must name the host given in --etcd";
    case 'tls_plain':
      return 'TLS with etcd failed: the endpoint answers without TLS; give it as http:// (etcd serves TLS only when started with --cert-file and --key-file)';
    case 'tls_refused':
      return 'TLS with etcd failed: etcd refused the handshake, most likely over the client certificate; with etcd --client-cert-auth the node needs --etcd-cert-file and --etcd-key-file, signed by a CA in etcd\'s --trusted-ca-file';
  }
}

/** grpc-js spreads a connection error over lines and appends an empty "Resolution note". */
/** How often a start that keeps failing to read etcd says so at warn level. */
const START_WARN_EVERY_MS = 10_000;

/**
 * Why reading etcd failed, in a few words: the innermost cause. The client's breaker
 * ("endpoint skipped after a recent failure") hides the real one; the endpoint probe made
 * before the start saw it.
 */
function startFailureCause(err: unknown, probes: readonly { endpoint: string; error: Error | null }[]): string {
  let e: unknown = err;
  while (e instanceof Error && e.cause instanceof Error) e = e.cause;
  const message = oneLine(e instanceof Error ? e.message : String(e));
  if (/BrokenCircuit|skipped after a recent failure/.test(message)) {
    const seen = probes.filter((p) => p.error !== null).map((p) => `${p.endpoint}: ${oneLine((p.error as Error).message)}`);
    if (seen.length > 0) return seen.join('; ');
  }
  return message;
}

function oneLine(message: string): string {
  return message.replace(/\s*Resolution note:\s*$/, '').replace(/\s+/g, ' ').trim();
}

/**
 * How this node calls the other nodes' API (forwarded consumer reports): with the token
 * file's first forward token (else its first write token), over the scheme each node announces, trusting the CAs of
 * --tls-ca-file only, or else Node's CAs and the certificates of this node's own
 * --tls-cert-file (nodes sharing one self-signed certificate, or whose files end with
 * their CA). A node without TLS of its own still calls nodes that serve https (a cluster
 * moving to TLS a node at a time).
 */
function peerApiOf(cfg: AgentConfig): PeerApi {
  const token = (): string | null => cfg.apiTokens?.forwardToken?.token.reveal() ?? null;
  const ca = cfg.tlsCa !== null ? [cfg.tlsCa.toString('utf8')] : [...rootCertificates, ...(cfg.tls === null ? [] : [cfg.tls.cert.toString('utf8')])];
  return { scheme: cfg.tls === null ? 'http' : 'https', token, dispatcher: new Agent({ connect: { ca } }), ca };
}
