/**
 * A Switchboard agent (standalone mode, durable: --data-dir on a fresh temporary
 * directory, every acknowledged write fsync'd; or `mode: 'dev'`, in memory) on 127.0.0.1
 * with a free port, its output in a log file. The one setting the side-by-side suite
 * changes from the defaults is `limits.maxWatchStreamsPerClient` (default 1000 per client
 * address), because every watcher of the benchmark comes from 127.0.0.1; the standalone
 * suite passes `config: null` (every default).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_BIN, ROOT, makeTempDir, removeTempDir, spawnLogged, stopProc, waitReady } from '../../lib/procs.mjs';

export { AGENT_BIN };

/** The agent's configuration file for the benchmark (written into its temporary directory). */
export const AGENT_CONFIG = { limits: { maxWatchStreamsPerClient: 5000, maxWatchStreamsPerNode: 20_000 } };

export async function startSwitchboard({ timeoutMs = 30_000, profileDir = null, profileName = 'agent.cpuprofile', bin = AGENT_BIN, config = AGENT_CONFIG, mode = 'durable', dataRoot = undefined } = {}) {
  if (!existsSync(join(bin, '../../dist/src/cli/main.js'))) throw new Error('the agent is not built: run `npm run build` (npm run bench builds first)');
  if (mode !== 'durable' && mode !== 'dev') throw new Error(`mode must be durable or dev, got ${mode}`);
  const dir = makeTempDir('bench-switchboard', dataRoot);
  const args = [bin, 'agent', ...(mode === 'durable' ? ['--data-dir', join(dir, 'data')] : ['--dev']), '--http-addr', '127.0.0.1:0', '--log-format', 'json'];
  if (config) {
    const cfgFile = join(dir, 'config.json');
    writeFileSync(cfgFile, JSON.stringify(config, null, 2));
    args.push('--config', cfgFile);
  }
  const logFile = join(dir, 'agent.log');
  const nodeArgs = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${profileName}`] : [];
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('SWITCHBOARD_')) delete env[k]; // flags and the file only
  const spawnedAt = performance.now();
  const proc = spawnLogged('switchboard agent', process.execPath, [...nodeArgs, ...args], { cwd: ROOT, env, logFile });
  const sys = {
    kind: 'switchboard',
    label: 'Switchboard',
    members: 1,
    mode,
    pids: [proc.pid],
    procs: [proc],
    dataDir: dir,
    logFile,
    url: null,
    /** Milliseconds from spawn to the "listening on" line. */
    startMs: null,
    /** What the agent logged after it started: warnings, errors, info events (see agentLogFacts). */
    log: null,
    async stop(graceMs = 10_000) {
      // SIGTERM lets it write the CPU profile when one was asked for.
      const r = await stopProc(proc, graceMs);
      if (sys.log === null && existsSync(logFile)) sys.log = agentLogFacts(readFileSync(logFile, 'utf8'));
      removeTempDir(dir);
      return r;
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
    sys.startMs = Math.round(performance.now() - spawnedAt);
    if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(sys.url)) throw new Error(`the agent listens on ${sys.url}, not on 127.0.0.1`);
    const status = await (await fetch(`${sys.url}/v1/status`)).json();
    sys.version = status.version ?? null;
    sys.durable = status.storage?.durable ?? null;
    if (mode === 'durable' && sys.durable === false) throw new Error('the agent reports storage.durable=false although it runs with --data-dir');
  } catch (err) {
    await sys.stop(2000);
    throw err;
  }
  return sys;
}

/**
 * The agent's JSON log, read for the report: lines at warn level or above (counted, the
 * first 20 kept), info lines after "listening on" (snapshots, segment changes: for
 * correlating latency outliers) and the last lines.
 */
export function agentLogFacts(text) {
  const facts = { warnings: 0, errors: 0, examples: [], events: [], tail: [] };
  let listening = false;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    facts.tail.push(line);
    if (facts.tail.length > 30) facts.tail.shift();
    let rec = null;
    try {
      rec = JSON.parse(line);
    } catch {
      continue; // not JSON: kept in the tail only
    }
    if (typeof rec.level !== 'number') continue;
    if (listening && rec.level === 30 && facts.events.length < 50) {
      facts.events.push({ time: rec.time, msg: rec.msg, ...(rec.ms !== undefined ? { ms: rec.ms } : {}), ...(rec.bytes !== undefined ? { bytes: rec.bytes } : {}) });
    }
    if (rec.level >= 40) {
      if (rec.level >= 50) facts.errors++;
      else facts.warnings++;
      if (facts.examples.length < 20) facts.examples.push(line.slice(0, 2000));
    }
    if (/listening on http/.test(rec.msg ?? '')) listening = true;
  }
  return facts;
}
