// Starting the real `switchboard` command as a child process, for integration tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../../bin/switchboard.js', import.meta.url));

export interface AgentProcess {
  child: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<number | null>;
}

/** Spawns `switchboard agent ARGS` and resolves once it prints `listening on URL`. */
export function spawnAgent(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 15_000): Promise<AgentProcess> {
  const child = spawn(process.execPath, [BIN, 'agent', '--http-addr', '127.0.0.1:0', '--log-format', 'json', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`agent did not start within ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /listening on (https?:\/\/[^\s"]+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1] as string, output: () => out, exited });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`agent exited with ${code} before listening:\n${out}`));
    });
  });
}

/** Runs a command to completion; resolves with its exit code and output. */
export function run(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 15_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export const PROVIDER = fileURLToPath(new URL('./provider.js', import.meta.url));

export interface ProviderProcess {
  child: ChildProcess;
  leaseId: string;
  output: () => string;
  exited: Promise<number | null>;
}

/**
 * Spawns test/integration/provider.js: one process, one session, one leased instance
 * `service/id`. Resolves once it is registered.
 */
export function spawnProvider(url: string, service: string, id: string, opts: { ttlMs: number; everyMs: number; align?: boolean; zone?: string }, timeoutMs = 10_000): Promise<ProviderProcess> {
  const args = [PROVIDER, url, service, id, String(opts.ttlMs), String(opts.everyMs)];
  if (opts.align) args.push('--align');
  if (opts.zone) args.push('--zone', opts.zone);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`provider ${id} did not register within ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /ready (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, leaseId: m[1] as string, output: () => out, exited });
      }
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`provider ${id} exited with ${code} before registering:\n${out}`));
    });
  });
}
