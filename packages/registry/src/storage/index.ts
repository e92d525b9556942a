import { FileStorage } from './file-storage.js';
import type { StorageLogger } from './logger.js';
import type { StorageObserver } from './observer.js';
import type { Storage } from './storage.js';
import { MemoryStorage } from './storage.js';

export interface StorageOptions {
  dev: boolean;
  dataDir: string;
  /** Where recovery reports what it found (a pino logger fits); stderr when absent. */
  logger?: StorageLogger;
  /** Told about each group commit of the log (metrics); optional. */
  observer?: StorageObserver;
}

/** The storage for a standalone node: memory with --dev, else the data directory. */
export function createStorage(opts: StorageOptions): Storage {
  if (opts.dev) return new MemoryStorage();
  return new FileStorage({ dataDir: opts.dataDir, ...(opts.logger ? { logger: opts.logger } : {}), ...(opts.observer ? { observer: opts.observer } : {}) });
}

export { MemoryStorage, type Storage } from './storage.js';
export { FileStorage, DEFAULT_FILE_STORAGE_LIMITS, type FileStorageLimits, type FileStorageOptions } from './file-storage.js';
export { StorageCorruptionError, repairCommand } from './errors.js';
export { DirectoryLockedError } from './lock.js';
export type { StorageLogger } from './logger.js';
export { StorageObservers, type StorageObserver, type WalCommit } from './observer.js';
