/** `switchboard agent`: starts a node and serves until SIGTERM or SIGINT. */
import { statSync } from 'node:fs';
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';
import { Alerts } from '../alerts/index.js';
import { build, type SwitchboardApp } from '../api/app.js';
import { ApiTokens } from '../api/auth.js';
import type { Engine } from '../engines/engine.js';
import { openEngine } from '../engines/open.js';
import { startTracing } from '../telemetry/index.js';
import { VERSION } from '../version.js';
import { DirectoryLockedError, LOCK_STALE_MS } from '../storage/lock.js';
import { ConfigError, defaultNodeId, flagOf, readApiTokens, readPeerRevocationLists, type AgentConfig } from './config.js';
import { checkListenAddresses, listenRefusal } from './listen.js';
import { ServiceProxy } from '../proxy/proxy.js';
import { CRL_VERDICTS } from '../engines/ap/net/crl.js';
import { checkOwnCertificate } from '../engines/ap/net/tls-check.js';

export interface RunningAgent {
  app: SwitchboardApp;
  engine: Engine;
  url: string;
  /** The service proxy's URL (http://HOST:PORT) when --proxy-addr is set. */
  proxyUrl?: string;
  logger: Logger;
  stop(): Promise<void>;
  /**
   * SIGHUP: reads the API token file and the peer revocation lists again; a file that is
   * no longer valid is logged and what is in use is kept.
   */
  reload(): Promise<void>;
}

export function createLogger(cfg: Pick<AgentConfig, 'logLevel' | 'logFormat'>, stream: NodeJS.WritableStream = process.stdout): Logger {
  const prettyOut = cfg.logFormat === 'pretty' || (cfg.logFormat === 'auto' && (stream as { isTTY?: boolean }).isTTY === true);
  const dest = prettyOut ? pretty({ destination: stream, colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' }) : stream;
  return pino({ level: cfg.logLevel, base: { pid: process.pid } }, dest);
}

const monotonic = { now: () => performance.timeOrigin + performance.now() };

/** After a fatal storage failure, how long the failed writes have to be answered before the process ends. */
const FATAL_ANSWER_MS = 250;

/**
 * Starts a node. A listen address that cannot be used is refused with a ConfigError (see
 * listen.ts), before the storage is opened when possible.
 */
export async function startAgent(cfg: AgentConfig, logger: Logger = createLogger(cfg)): Promise<RunningAgent> {
  let fatal = false;
  await checkListenAddresses(cfg);
  if (cfg.mode === 'ap' && cfg.peerTls?.crl) await checkPeerRevocationList(cfg.peerTls, logger);
  const nodeId = cfg.nodeId ?? defaultNodeId();
  // Before the engine, so that its own calls (replication, etcd) are traced from the start.
  const tracing = cfg.otlpEndpoint === null ? undefined : await startTracing({ endpoint: cfg.otlpEndpoint, serviceName: 'switchboard', serviceVersion: VERSION, nodeId, logger: logger.child({ component: 'tracing' }) });
  // ap: the peer links listen while the engine opens.
  const engine = await openEngine({
    cfg,
    nodeId,
    logger,
    clock: monotonic,
    onFatal: (err) => {
      if (fatal) return;
      fatal = true;
      logger.fatal({ err }, 'the node cannot keep its promises (storage or store failed); stopping');
      // The writes that failed are answered first (an error, never a 200), then the
      // process ends: nothing more can be made durable here.
      setTimeout(() => process.exit(70), FATAL_ANSWER_MS);
    },
  }).catch((err: unknown) => {
    // Like an address in use: a setting to change (or another agent to stop), exit 2.
    if (err instanceof DirectoryLockedError) throw new ConfigError('dataDir', err.message.split(': stop that agent')[0] as string, { code: 'DATA_DIR_IN_USE', hint: `stop that agent first, or use another --data-dir${err.elsewhere ? `; a lock of another container or host is taken over ${LOCK_STALE_MS / 1000} s after its owner stops` : `; if pid ${err.pid} is not a switchboard process, remove the LOCK file`}` });
    throw (cfg.mode === 'ap' ? listenRefusal(err, cfg, 'peerAddr') : null) ?? err;
  });
  const alerts = new Alerts({ engine, webhooks: cfg.alertWebhooks, limits: cfg.limits, logger: logger.child({ component: 'alerts' }) });
  const tokens = cfg.apiTokens === null ? undefined : new ApiTokens(cfg.apiTokens.tokens);
  const proxyLog = logger.child({ component: 'proxy' });
  const proxy = cfg.proxyAddr === null ? undefined : new ServiceProxy({ registry: engine.registry, namespace: cfg.proxyNamespace, strategy: cfg.proxyStrategy, log: (level, msg, extra) => proxyLog[level](extra ?? {}, msg) });
  const app = await build({ engine, limits: cfg.limits, version: VERSION, logger: logger.child({ component: 'http' }), alerts, ...(proxy ? { metricSources: [proxy] } : {}), ...(tracing ? { tracing } : {}), ...(tokens ? { tokens, metricsOpen: cfg.metricsOpen } : {}), ...(cfg.tls ? { https: { cert: cfg.tls.cert, key: cfg.tls.key.reveal() } } : {}) });
  const url = await app.listen({ host: cfg.httpAddr.host, port: cfg.httpAddr.port }).catch(async (err: unknown) => {
    alerts.close();
    await app.shutdown();
    await engine.close();
    await tracing?.shutdown();
    throw listenRefusal(err, cfg, 'httpAddr') ?? err;
  });
  let proxyUrl: string | undefined;
  if (proxy && cfg.proxyAddr) {
    const at = await proxy.listen(cfg.proxyAddr.host, cfg.proxyAddr.port).catch(async (err: unknown) => {
      alerts.close();
      await app.shutdown();
      await engine.close();
      await tracing?.shutdown();
      throw listenRefusal(err, cfg, 'proxyAddr') ?? err;
    });
    proxyUrl = `http://${at.address.includes(':') ? `[${at.address}]` : at.address}:${at.port}`;
    logger.info({ namespace: cfg.proxyNamespace, strategy: cfg.proxyStrategy }, `service proxy listening on ${proxyUrl}: ${proxyUrl}/SERVICE/PATH goes to an instance of SERVICE`);
  }
  const bound = app.server.address();
  if (engine.listening && bound !== null && typeof bound === 'object') {
    await engine.listening({ host: cfg.httpAddr.host, port: bound.port }).catch((err) => logger.warn({ err }, 'could not announce the listening address'));
  }
  warnOfReadableSecrets(cfg, logger);
  logger.info({ nodeId, mode: cfg.mode, epoch: engine.registry.epoch, revision: engine.registry.revision, durable: engine.durable, dataDir: engine.dataDir, checkNetworks: cfg.checkNetworks, apiAuth: tokens ? { tokens: tokens.counts(), metricsOpen: cfg.metricsOpen } : 'open' }, `listening on ${url}`);
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      logger.info('shutting down: no new requests, ending watch streams');
      alerts.close();
      await proxy?.close();
      await app.shutdown();
      await engine.close();
      await tracing?.shutdown();
      logger.info('stopped');
    })());
  const reloadTokens = (): void => {
    if (cfg.apiTokens === null || tokens === undefined) return;
    try {
      const read = readApiTokens(cfg.apiTokens.path, cfg.apiTokens.where);
      const closed = tokens.replace(read.tokens);
      // The cp engine reads the forwarding token from here at each forward.
      cfg.apiTokens.forwardToken = read.forwardToken;
      logger.info({ tokens: tokens.counts(), closedConnections: closed }, `API tokens read again from ${cfg.apiTokens.path}${closed > 0 ? `; ${closed} connections opened with a token no longer there were closed` : ''}`);
    } catch (err) {
      const e = err as ConfigError;
      logger.error({ code: e.code, hint: e.hint }, `API tokens not reloaded, the tokens in use stay: ${e.message}`);
    }
  };
  const reloadRevocationLists = async (): Promise<void> => {
    const tls = cfg.peerTls;
    if (!tls?.crlFile || !engine.reloadPeerRevocationLists) return;
    try {
      const crl = readPeerRevocationLists(tls.crlFile, tls.ca);
      // The same check as at start: lists that would refuse this node, or every link, are not taken.
      await checkPeerRevocationList({ ...tls, crl }, logger);
      const reset = engine.reloadPeerRevocationLists(crl);
      logger.info({ lists: crl.length, linksMadeAgain: reset }, `peer revocation lists read again from ${tls.crlFile}`);
    } catch (err) {
      const e = err as ConfigError;
      logger.error({ code: e.code, hint: e.hint }, `peer revocation lists not reloaded, the lists in use stay: ${e.message}`);
    }
  };
  // One reload at a time: each reads the files when it starts, and the revocation lists'
  // check takes a TLS handshake, so two at once could finish out of order and leave the
  // older lists in use. A signal while one runs asks for one more after it, which reads
  // the files as they are then; further signals meanwhile join that one. None once the
  // node is stopping.
  let running: Promise<void> | null = null;
  let waiting: Promise<void> | null = null;
  const start = (): Promise<void> => {
    running = (async () => {
      reloadTokens();
      await reloadRevocationLists();
    })().finally(() => {
      running = null;
    });
    return running;
  };
  const reload = (): Promise<void> => {
    if (stopping !== undefined) return Promise.resolve();
    if (waiting !== null) return waiting;
    if (running === null) return start();
    waiting = running.then(() => {
      waiting = null;
      return stopping === undefined ? start() : undefined;
    });
    return waiting;
  };
  return { app, engine, url, ...(proxyUrl ? { proxyUrl } : {}), logger, stop, reload };
}

/** A file holding a secret that other users may read is worth a warning (it still works). */
function warnOfReadableSecrets(cfg: Pick<AgentConfig, 'secretFiles'>, logger: Logger): void {
  for (const { where, path } of cfg.secretFiles) {
    let mode: number;
    try {
      mode = statSync(path).mode;
    } catch {
      continue; // read at start already; gone since: nothing to say here
    }
    if ((mode & 0o077) === 0) continue;
    logger.warn({ file: path, mode: `0${(mode & 0o777).toString(8)}` }, `${where}: ${path} holds a secret and other users may read it (mode 0${(mode & 0o777).toString(8)}): chmod 600 ${path}`);
  }
}

/**
 * Peer TLS with revocation lists: the node's own certificate under them, as a peer would
 * see it (a TLS handshake of the node with itself), so that lists that miss a CA of the
 * chain, an expired one, or one that revokes this node stop the start with the reason.
 */
async function checkPeerRevocationList(tls: NonNullable<AgentConfig['peerTls']>, logger: Logger): Promise<void> {
  const check = await checkOwnCertificate({ cert: tls.cert, key: tls.key.reveal(), ca: tls.ca, crl: tls.crl });
  const where = `${flagOf('peerTlsCrlFile')} ${tls.crlFile ?? ''}`.trim();
  if (!check.checked) {
    logger.warn({ reason: check.reason }, `${where}: the revocation lists could not be checked at start (${check.reason}); links will say what is wrong, if anything`);
    return;
  }
  const verdict = check.verdict;
  if (verdict === null) return;
  if (verdict === 'CERT_REVOKED') throw new ConfigError('peerTlsCrlFile', `${where}: a list revokes this node's own certificate: every peer would refuse it`, { code: 'PEER_TLS_REVOKED', hint: 'issue this node a new certificate, or take the node out of the cluster' });
  const v = CRL_VERDICTS[verdict];
  if (v !== undefined) throw new ConfigError('peerTlsCrlFile', `${where}: ${v.problem}, so every link would fail (${verdict})`, { code: v.code, hint: v.hint });
  throw new ConfigError('peerTlsCrlFile', `${where}: with these revocation lists, this node's own certificate fails verification (${verdict})`, { code: 'PEER_TLS_CRL_INVALID', hint: 'check the lists against the CA in --peer-tls-ca-file' });
}
