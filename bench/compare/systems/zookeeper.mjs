/**
 * ZooKeeper 3.8 (Debian's zookeeper package) on loopback: standalone, or a 3-node
 * ensemble. A zoo.cfg per node in a temporary directory; `forceSync=yes` (fsync of the
 * transaction log before acknowledging, the default, written out) and `maxClientCnxns=0`
 * (no per-address connection limit: every client of the benchmark comes from 127.0.0.1).
 * Started as `java -cp <Debian jars> org.apache.zookeeper.server.quorum.QuorumPeerMain zoo.cfg`.
 */
import { connect } from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { zookeeperClasspath } from '../lib/install.mjs';
import { freePorts, makeTempDir, removeTempDir, spawnLogged, stopProc, waitReady } from '../lib/proc.mjs';

/** The ZooKeeper tick; the session timeout must lie within [2, 20] ticks. The default. */
export const ZK_TICK_MS = 2000;

/** Sends a four-letter-word command and resolves with the answer. */
export function fourLetter(host, port, cmd, timeoutMs = 2000) {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port });
    let out = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`${cmd}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    s.on('connect', () => s.write(cmd));
    s.on('data', (d) => (out += d));
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

const LOG4J = `log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=\${zookeeper.log.file}
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} [myid:%X{myid}] - %-5p [%t:%C{1}@%L] - %m%n
`;

/**
 * Starts ZooKeeper with `nodes` nodes (1: standalone, 3: ensemble). Resolves once every
 * node answers `srvr` with a mode (standalone, or one leader and followers). The JVM keeps
 * its defaults unless `heap` or `jvmOpts` (extra JVM options, for experiments) say otherwise.
 */
export async function startZookeeper({ nodes = 1, timeoutMs = 45_000, heap = null, jvmOpts = [] } = {}) {
  const dir = makeTempDir(`bench-zk${nodes}`);
  const ports = await freePorts(nodes * 3);
  const clientPort = (i) => ports[i];
  const jars = zookeeperClasspath();
  const procs = [];
  for (let i = 0; i < nodes; i++) {
    const nodeDir = join(dir, `n${i + 1}`);
    mkdirSync(join(nodeDir, 'data'), { recursive: true });
    const cfg = [
      `tickTime=${ZK_TICK_MS}`,
      'initLimit=10',
      'syncLimit=5',
      `dataDir=${join(nodeDir, 'data')}`,
      `clientPort=${clientPort(i)}`,
      'clientPortAddress=127.0.0.1',
      'maxClientCnxns=0',
      'forceSync=yes',
      'admin.enableServer=false',
      '4lw.commands.whitelist=ruok,srvr,mntr',
      'autopurge.purgeInterval=0',
    ];
    if (nodes > 1) {
      writeFileSync(join(nodeDir, 'data', 'myid'), `${i + 1}\n`);
      for (let j = 0; j < nodes; j++) cfg.push(`server.${j + 1}=127.0.0.1:${ports[nodes + 2 * j]}:${ports[nodes + 2 * j + 1]}`);
    }
    writeFileSync(join(nodeDir, 'zoo.cfg'), cfg.join('\n') + '\n');
    writeFileSync(join(nodeDir, 'log4j.properties'), LOG4J);
    const logFile = join(nodeDir, 'zookeeper.log');
    const args = [
      ...(heap ? [`-Xmx${heap}`] : []),
      ...jvmOpts,
      `-Dzookeeper.log.file=${logFile}`,
      `-Dlog4j.configuration=file:${join(nodeDir, 'log4j.properties')}`,
      '-cp', [nodeDir, ...jars].join(':'),
      'org.apache.zookeeper.server.quorum.QuorumPeerMain',
      join(nodeDir, 'zoo.cfg'),
    ];
    procs.push(spawnLogged(`zookeeper n${i + 1}`, 'java', args, { cwd: nodeDir, logFile }));
  }
  const hosts = procs.map((_, i) => `127.0.0.1:${clientPort(i)}`);
  const sys = {
    kind: 'zookeeper',
    label: nodes === 1 ? 'ZooKeeper' : 'ZooKeeper x3',
    members: nodes,
    hosts,
    connectString: hosts.join(','),
    pids: procs.map((p) => p.pid),
    procs,
    dataDir: dir,
    async stop() {
      await Promise.all(procs.map((p) => stopProc(p, 5000)));
      removeTempDir(dir);
    },
  };
  try {
    await waitReady({
      what: `ZooKeeper (${nodes === 1 ? 'standalone' : `${nodes}-node ensemble`})`,
      procs,
      timeoutMs,
      everyMs: 300,
      probe: async () => {
        const modes = [];
        for (let i = 0; i < nodes; i++) {
          const out = await fourLetter('127.0.0.1', clientPort(i), 'srvr');
          const m = /Mode: (\w+)/.exec(out);
          if (!m) return false;
          modes.push(m[1]);
          if (i === 0) sys.version = /Zookeeper version: ([0-9.]+)/.exec(out)?.[1] ?? null;
        }
        return nodes === 1 ? modes[0] === 'standalone' : modes.filter((m) => m === 'leader').length === 1 && modes.filter((m) => m === 'follower').length === nodes - 1;
      },
    });
  } catch (err) {
    await sys.stop();
    throw err;
  }
  return sys;
}
