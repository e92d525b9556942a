/**
 * Kept for scripts written against this path: the process manager is bench/lib/procs.mjs,
 * shared by every suite.
 */
export * from '../../lib/procs.mjs';
