/**
 * Operator commands of `switchboard`: status, services, instances, pick, register, deregister,
 * set-status (alias status-set), lease grant|keepalive|revoke, watch, drain, history,
 * check pass|warn|fail and cluster remove. Each finds the agent through --addr or
 * SWITCHBOARD_ADDR (default http://127.0.0.1:7700), prints text or, with --json, the API's
 * own JSON shapes, and exits 0 on success, 1 on an error answer or an unreachable agent,
 * 2 on bad usage. The pieces live in ./ops/: http (the one HTTP helper), output (tables,
 * errors), args (argument checks), common (flags, exit codes, Ctrl-C), and the commands.
 */
import type { Command } from 'commander';
import { registerClusterCommands } from './ops/cluster.js';
import type { Exit } from './ops/common.js';
import { registerHealthCommands } from './ops/health.js';
import { registerLeaseCommands } from './ops/lease.js';
import { registerReadCommands } from './ops/read.js';
import { registerWatchCommand } from './ops/watch.js';
import { registerWriteCommands } from './ops/write.js';

export function registerOperatorCommands(program: Command, exit: Exit): void {
  registerReadCommands(program, exit);
  registerWriteCommands(program, exit);
  registerLeaseCommands(program, exit);
  registerWatchCommand(program, exit);
  registerHealthCommands(program, exit);
  registerClusterCommands(program, exit);
}
