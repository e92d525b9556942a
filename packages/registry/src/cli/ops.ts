/** Operator commands (status, services, instances, register, deregister, watch). */
import type { Command } from 'commander';

export function registerOperatorCommands(_program: Command, _exit: (code: number) => void): void {}
