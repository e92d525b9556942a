/**
 * A Switchboard agent (standalone mode, durable: --data-dir on a fresh temporary
 * directory, every acknowledged write fsync'd) on 127.0.0.1 with a free port. The one
 * setting changed from the defaults is `limits.maxWatchStreamsPerClient` (default 1000
 * per client address), because every watcher of the benchmark comes from 127.0.0.1.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, makeTempDir, removeTempDir, spawnLogged, stopProc, waitReady } from '../lib/proc.mjs';

export const AGENT_BIN = join(ROOT, 'packages/registry/bin/switchboard.js');

/** The agent's configuration file for the benchmark (written into its temporary directory). */
export const AGENT_CONFIG = { limits: { maxWatchStreamsPerClient: 5000, maxWatchStreamsPerNode: 20_000 } };

export async function startSwitchboard({ timeoutMs = 30_000, profileDir = null, profileName = 'agent.cpuprofile', bin = AGENT_BIN, config = AGENT_CONFIG } = {}) {
  if (!existsSync(join(bin, '../../dist/src/cli/main.js'))) throw new Error('the agent is not built: run `npm run build` (npm run bench builds first)');
  const dir = makeTempDir('bench-switchboard');
  const cfgFile = join(dir, 'config.json');
  writeFileSync(cfgFile, JSON.stringify(config, null, 2));
  const logFile = join(dir, 'agent.log');
  const nodeArgs = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${profileName}`] : [];
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('SWITCHBOARD_')) delete env[k]; // flags and the file only
  const proc = spawnLogged('switchboard agent', process.execPath, [...nodeArgs, bin, 'agent', '--data-dir', join(dir, 'data'), '--http-addr', '127.0.0.1:0', '--log-format', 'json', '--config', cfgFile], { cwd: ROOT, env, logFile });
  const sys = {
    kind: 'switchboard',
    label: 'Switchboard',
    members: 1,
    pids: [proc.pid],
    procs: [proc],
    dataDir: dir,
    url: null,
    async stop(graceMs = 10_000) {
      // SIGTERM lets it write the CPU profile when one was asked for.
      await stopProc(proc, graceMs);
      removeTempDir(dir);
    },
  };
  try {
    sys.url = await waitReady({
      what: 'Switchboard agent',
      procs: [proc],
      timeoutMs,
      everyMs: 100,
      probe: async () => {
        const m = /listening on (http:\/\/[^\s"]+)/.exec(readFileSync(logFile, 'utf8'));
        return m ? m[1].replace(/\/$/, '') : null;
      },
    });
    if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(sys.url)) throw new Error(`the agent listens on ${sys.url}, not on 127.0.0.1`);
    const status = await (await fetch(`${sys.url}/v1/status`)).json();
    sys.version = status.version ?? null;
    sys.durable = status.storage?.durable ?? null;
    if (sys.durable === false) throw new Error('the agent reports storage.durable=false although it runs with --data-dir');
  } catch (err) {
    await sys.stop(2000);
    throw err;
  }
  return sys;
}
