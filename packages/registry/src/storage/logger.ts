/** What storage needs from a logger; a pino logger (or a child of one) fits. */
export interface StorageLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** One JSON line per message on stderr, for when no logger is given. */
export const stderrLogger: StorageLogger = {
  info: (obj, msg) => process.stderr.write(JSON.stringify({ level: 'info', component: 'storage', ...obj, msg }) + '\n'),
  warn: (obj, msg) => process.stderr.write(JSON.stringify({ level: 'warn', component: 'storage', ...obj, msg }) + '\n'),
};

export const silentLogger: StorageLogger = { info: () => undefined, warn: () => undefined };
