import type { Storage } from './storage.js';
import { MemoryStorage } from './storage.js';

export interface StorageOptions {
  dev: boolean;
  dataDir: string;
}

/** The storage for a standalone node: memory with --dev, else the data directory. */
export function createStorage(opts: StorageOptions): Storage {
  if (opts.dev) return new MemoryStorage();
  throw new Error('durable storage is not available yet: start the agent with --dev');
}

export { MemoryStorage, type Storage } from './storage.js';
