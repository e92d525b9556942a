/**
 * etcd 3.4 (Debian's etcd-server) on loopback: one member, or a 3-member cluster. Each
 * member has its own temporary data directory and distinct client/peer ports on
 * 127.0.0.1. Defaults are kept where they matter for fairness: fsync on (never
 * --unsafe-no-fsync), the default --snapshot-count, the default backend quota.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { StartError, freePorts, makeTempDir, removeTempDir, spawnLogged, stopProc, waitReady } from '../lib/proc.mjs';

function etcdctl(endpoints, args, timeoutMs = 3000) {
  return new Promise((resolve, reject) => {
    execFile('etcdctl', ['--endpoints', endpoints.join(','), '--dial-timeout=1s', '--command-timeout=2s', ...args], { env: { ...process.env, ETCDCTL_API: '3' }, timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${stderr || err.message}`.trim()));
      else resolve(stdout);
    });
  });
}

/**
 * Starts etcd with `members` members (1 or 3). Resolves once every member answers and
 * the cluster has a leader; rejects (after stopping everything) with the log tails
 * otherwise.
 */
export async function startEtcd({ members = 1, timeoutMs = 30_000 } = {}) {
  const dir = makeTempDir(`bench-etcd${members}`);
  const ports = await freePorts(members * 2);
  const names = Array.from({ length: members }, (_, i) => `m${i + 1}`);
  const peerUrl = (i) => `http://127.0.0.1:${ports[members + i]}`;
  const clientUrl = (i) => `http://127.0.0.1:${ports[i]}`;
  const cluster = names.map((n, i) => `${n}=${peerUrl(i)}`).join(',');
  const procs = names.map((name, i) =>
    spawnLogged(`etcd ${name}`, 'etcd', [
      '--name', name,
      '--data-dir', join(dir, name),
      '--listen-client-urls', clientUrl(i),
      '--advertise-client-urls', clientUrl(i),
      '--listen-peer-urls', peerUrl(i),
      '--initial-advertise-peer-urls', peerUrl(i),
      '--initial-cluster', cluster,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', `bench-${ports[0]}`,
    ], { cwd: dir, logFile: join(dir, `${name}.log`) }),
  );
  const endpoints = names.map((_, i) => `127.0.0.1:${ports[i]}`);
  const sys = {
    kind: 'etcd',
    label: members === 1 ? 'etcd' : 'etcd x3',
    members,
    endpoints,
    pids: procs.map((p) => p.pid),
    procs,
    dataDir: dir,
    async stop() {
      await Promise.all(procs.map((p) => stopProc(p, 5000)));
      removeTempDir(dir);
    },
  };
  const what = `etcd (${members} member${members > 1 ? 's' : ''})`;
  try {
    // The version comes with the status that says it is ready (as ZooKeeper's `srvr`): no
    // call of its own after readiness, which could fail on a slow machine.
    const ready = await waitReady({
      what,
      procs,
      timeoutMs,
      probe: async () => {
        const out = JSON.parse(await etcdctl(endpoints, ['endpoint', 'status', '-w', 'json']));
        const up = out.length === members && out.every((s) => s.Status && s.Status.leader && s.Status.leader !== '0' && s.Status.leader !== 0);
        return up && { version: out[0].Status.version ?? null };
      },
    });
    sys.version = ready.version;
  } catch (err) {
    // Whatever failed, the message names the system and carries the members' log tails
    // (read before stop() removes the directory).
    const failure = err instanceof StartError ? err : new StartError(`${what}: ${err.message}`, procs);
    await sys.stop();
    throw failure;
  }
  return sys;
}
