// A real 3-member etcd cluster on loopback for the cp tests: free ports, data dirs in a
// temporary directory removed afterwards, timings raised for a loaded 2-core machine.
// Members can be killed, paused (SIGSTOP, which cuts them off as a partition would) and
// restarted with their data. With `tls`, the client URLs are https:// (peers stay plain);
// /metrics, which the helper reads, is on a plain URL of its own either way.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../support/ap-cluster.js';
import { waitUntil } from '../support/wait.js';

export const ETCD_BIN = process.env.ETCD_BIN ?? 'etcd';

interface Member {
  name: string;
  clientPort: number;
  peerPort: number;
  metricsPort: number;
  proc: ChildProcess | null;
  paused: boolean;
}

/** TLS on the members' client URLs: PEM files as etcd takes them. */
export interface EtcdTlsFiles {
  certFile: string;
  keyFile: string;
  /** The CA etcd trusts for client certificates (--trusted-ca-file, given with clientCertAuth). */
  caFile: string;
  /** etcd --client-cert-auth: a client must present a certificate signed by caFile. */
  clientCertAuth: boolean;
}

export interface EtcdClusterOptions {
  tls?: EtcdTlsFiles;
  /** More etcd flags for every member. */
  extraArgs?: string[];
}

export interface EtcdStatus {
  name: string;
  leader: boolean;
  raftTerm: number;
}

/** A member could not bind a port that was free when the cluster picked it. */
class PortTaken extends Error {}

export class EtcdCluster {
  private constructor(
    readonly dir: string,
    private readonly members: Member[],
    private readonly token: string,
    private readonly tls: EtcdTlsFiles | null,
    private readonly extraArgs: string[] = [],
  ) {}

  get endpoints(): string[] {
    return this.members.map((_, i) => this.endpoint(i));
  }

  endpoint(i: number): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${(this.members[i] as Member).clientPort}`;
  }

  /**
   * Starts a new cluster on free ports. A port is found free and then bound by etcd, so a
   * test running alongside can take it in between: a member that exits saying so makes
   * the start try again on other ports (up to three times).
   */
  static async start(size = 3, timeoutMs = 30_000, opts: EtcdClusterOptions = {}): Promise<EtcdCluster> {
    for (let attempt = 1; ; attempt++) {
      const dir = mkdtempSync(join(tmpdir(), 'sb-etcd-'));
      const members: Member[] = [];
      for (let i = 0; i < size; i++) members.push({ name: `m${i + 1}`, clientPort: await freePort(), peerPort: await freePort(), metricsPort: await freePort(), proc: null, paused: false });
      const cluster = new EtcdCluster(dir, members, `sb-test-${process.pid}-${members[0]?.clientPort}`, opts.tls ?? null, opts.extraArgs);
      try {
        for (let i = 0; i < size; i++) cluster.spawnMember(i, 'new');
        await cluster.waitLeader(timeoutMs, { portTaken: true });
        return cluster;
      } catch (err) {
        await cluster.close();
        if (!(err instanceof PortTaken) || attempt >= 3) throw err;
      }
    }
  }

  private spawnMember(i: number, state: 'new' | 'existing'): void {
    const m = this.members[i] as Member;
    const initial = this.members.map((x) => `${x.name}=http://127.0.0.1:${x.peerPort}`).join(',');
    const log = openSync(join(this.dir, `${m.name}.log`), 'a');
    const tls = this.tls;
    m.proc = spawn(ETCD_BIN, [
      '--name', m.name,
      '--data-dir', join(this.dir, m.name),
      '--listen-client-urls', this.endpoint(i),
      '--advertise-client-urls', this.endpoint(i),
      '--listen-metrics-urls', `http://127.0.0.1:${m.metricsPort}`,
      ...(tls ? ['--cert-file', tls.certFile, '--key-file', tls.keyFile] : []),
      // etcd asks for a client certificate whenever it has a CA for them: only with --client-cert-auth.
      ...(tls?.clientCertAuth ? ['--client-cert-auth', '--trusted-ca-file', tls.caFile] : []),
      '--listen-peer-urls', `http://127.0.0.1:${m.peerPort}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${m.peerPort}`,
      '--initial-cluster', initial,
      '--initial-cluster-state', state,
      '--initial-cluster-token', this.token,
      '--heartbeat-interval', '100',
      '--election-timeout', '1000',
      '--max-txn-ops', '1024',
      '--logger', 'zap',
      ...this.extraArgs,
    ], { stdio: ['ignore', log, log] });
    closeSync(log);
    m.paused = false;
    const p = m.proc;
    p.once('exit', () => {
      if (m.proc === p) m.proc = null;
    });
  }

  /** A running, unpaused member's own view (from its /metrics): leader or not. */
  async status(i: number, timeoutMs = 1000): Promise<EtcdStatus | null> {
    const m = this.members[i] as Member;
    if (!m.proc || m.paused) return null;
    try {
      const res = await fetch(`http://127.0.0.1:${m.metricsPort}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
      const text = await res.text();
      const leader = /^etcd_server_is_leader (\d+)/m.exec(text)?.[1] === '1';
      const hasLeader = /^etcd_server_has_leader (\d+)/m.exec(text)?.[1] === '1';
      const term = Number(/^etcd_server_proposals_committed_total (\d+)/m.exec(text)?.[1] ?? 0);
      return hasLeader ? { name: m.name, leader, raftTerm: term } : { name: m.name, leader: false, raftTerm: -1 };
    } catch {
      return null;
    }
  }

  /** Range requests a member has served (gRPC and its JSON gateway alike), from its /metrics. */
  async rangesServed(i: number): Promise<number> {
    const m = this.members[i] as Member;
    const text = await (await fetch(`http://127.0.0.1:${m.metricsPort}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
    return Number(/^grpc_server_handled_total\{grpc_code="OK",grpc_method="Range",[^}]*\} (\d+)/m.exec(text)?.[1] ?? 0);
  }

  /** The index of the leader among running members; waits for one. `portTaken`: fails at once with PortTaken when a member exited because a port of its was taken. */
  async waitLeader(timeoutMs = 20_000, opts: { portTaken?: boolean } = {}): Promise<number> {
    let li = -1;
    await waitUntil(
      async () => {
        if (opts.portTaken) {
          const gone = this.members.find((m) => m.proc === null && /address already in use/.test(this.log(m)));
          if (gone) throw new PortTaken(`etcd member ${gone.name} could not bind a port another process took`);
        }
        const all = await Promise.all(this.members.map((_, i) => this.status(i)));
        const running = all.filter((s) => s !== null);
        li = all.findIndex((s) => s?.leader);
        return li >= 0 && running.every((s) => (s as EtcdStatus).raftTerm >= 0);
      },
      timeoutMs,
      'an etcd leader',
      { intervalMs: 100, detail: () => this.logTail() },
    );
    return li;
  }

  private log(m: Member): string {
    try {
      return readFileSync(join(this.dir, `${m.name}.log`), 'utf8');
    } catch {
      return '';
    }
  }

  logTail(lines = 15): string {
    return this.members
      .map((m) => {
        try {
          return `--- ${m.name}\n${readFileSync(join(this.dir, `${m.name}.log`), 'utf8').split('\n').slice(-lines).join('\n')}`;
        } catch {
          return `--- ${m.name}: no log`;
        }
      })
      .join('\n');
  }

  /** Kills a member outright (SIGKILL); its data stays for restart(). */
  async kill(i: number): Promise<void> {
    const m = this.members[i] as Member;
    const p = m.proc;
    if (!p) return;
    if (m.paused) p.kill('SIGCONT');
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
    m.proc = null;
    m.paused = false;
  }

  restart(i: number): void {
    if ((this.members[i] as Member).proc) return;
    this.spawnMember(i, 'existing');
  }

  /** Freezes a member (SIGSTOP): to the others and to clients it is cut off. */
  pause(i: number): void {
    const m = this.members[i] as Member;
    if (!m.proc || m.paused) return;
    m.proc.kill('SIGSTOP');
    m.paused = true;
  }

  resume(i: number): void {
    const m = this.members[i] as Member;
    if (!m.proc || !m.paused) return;
    m.proc.kill('SIGCONT');
    m.paused = false;
  }

  async close(): Promise<void> {
    await Promise.all(this.members.map((_, i) => this.kill(i)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
