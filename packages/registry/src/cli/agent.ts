/** `switchboard agent`: starts a node and serves until SIGTERM or SIGINT. */
import { hostname } from 'node:os';
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';
import { build, type SwitchboardApp } from '../api/app.js';
import type { Engine } from '../engines/engine.js';
import { StandaloneEngine } from '../engines/standalone.js';
import { createStorage } from '../storage/index.js';
import { VERSION } from '../version.js';
import type { AgentConfig } from './config.js';

export interface RunningAgent {
  app: SwitchboardApp;
  engine: Engine;
  url: string;
  logger: Logger;
  stop(): Promise<void>;
}

export function createLogger(cfg: Pick<AgentConfig, 'logLevel' | 'logFormat'>, stream: NodeJS.WritableStream = process.stdout): Logger {
  const prettyOut = cfg.logFormat === 'pretty' || (cfg.logFormat === 'auto' && (stream as { isTTY?: boolean }).isTTY === true);
  const dest = prettyOut ? pretty({ destination: stream, colorize: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' }) : stream;
  return pino({ level: cfg.logLevel, base: { pid: process.pid } }, dest);
}

const monotonic = { now: () => performance.timeOrigin + performance.now() };

export async function startAgent(cfg: AgentConfig, logger: Logger = createLogger(cfg)): Promise<RunningAgent> {
  if (cfg.mode !== 'standalone') {
    throw new Error(`--mode ${cfg.mode} is not available in this version; run the default standalone mode`);
  }
  const nodeId = cfg.nodeId ?? hostname();
  const storage = createStorage({ dev: cfg.dev, dataDir: cfg.dataDir, logger: logger.child({ component: 'storage' }) });
  const engine = await StandaloneEngine.open({
    nodeId,
    storage,
    limits: cfg.limits,
    clock: monotonic,
    onFatal: (err) => {
      logger.fatal({ err }, 'storage failed; stopping so that memory never runs ahead of disk');
      process.exit(70);
    },
    onSnapshotError: (err) => logger.error({ err }, 'snapshot failed; the log is intact and the next snapshot will be tried later'),
    onRecovered: (r) => logger.info(r, r.entries > 0 || r.fromSnapshot ? 'recovered state from the data directory' : 'starting with an empty registry'),
    onProtectionChange: (c) =>
      c.engaged
        ? logger.warn({ selfPreservation: true, zone: c.zone }, `self-preservation engaged: lapsed leases are held, not evicted (${c.reason})`)
        : logger.info({ selfPreservation: false, zone: c.zone }, `self-preservation released: evictions resume (${c.reason})`),
  });
  const app = await build({ engine, limits: cfg.limits, version: VERSION, logger: logger.child({ component: 'http' }) });
  const address = await app.listen({ host: cfg.httpAddr.host, port: cfg.httpAddr.port });
  const url = address.replace('[::1]', '[::1]');
  logger.info({ nodeId, mode: cfg.mode, epoch: engine.registry.epoch, revision: engine.registry.revision, durable: engine.durable, dataDir: engine.dataDir }, `listening on ${url}`);
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      logger.info('shutting down: no new requests, ending watch streams');
      await app.shutdown();
      await engine.close();
      logger.info('stopped');
    })());
  return { app, engine, url, logger, stop };
}
