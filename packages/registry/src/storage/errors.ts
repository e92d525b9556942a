/** Damage to data that was acknowledged: the node must not start until an operator decides. */
import { join } from 'node:path';

/** The documented recovery command for a data directory. */
export const repairCommand = (dir: string): string => `switchboard storage repair --data-dir ${dir}`;

export class StorageCorruptionError extends Error {
  constructor(
    readonly dir: string,
    readonly file: string,
    readonly offset: number,
    readonly reason: string,
  ) {
    super(
      `data directory ${dir} is damaged: ${join(dir, file)} at byte ${offset}: ${reason}. ` +
        `Everything before that point is intact. To keep it and move the damaged part aside ` +
        `(into ${join(dir, 'damaged-<time>')}), stop the agent and run: ${repairCommand(dir)}`,
    );
    this.name = 'StorageCorruptionError';
  }
}
