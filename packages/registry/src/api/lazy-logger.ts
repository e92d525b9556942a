/**
 * Fastify gives every request a child logger carrying its request id. Making a pino child
 * costs a few microseconds (bindings serialised, an object built) on every request, yet
 * with request logging off almost no request ever logs. This factory hands out a stand-in
 * that makes the real child on the first log call, so requests that log nothing pay for
 * one small object only; what is logged is the same, request id included.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { FastifyChildLoggerFactory } from 'fastify/types/logger.js';

type Bindings = Record<string, unknown>;
type Log = (...args: unknown[]) => void;
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;

class LazyChildLogger {
  private real: FastifyBaseLogger | null = null;

  constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: Bindings,
    private readonly opts: Record<string, unknown>,
  ) {}

  /** The real child logger, made on first use. */
  get made(): FastifyBaseLogger {
    return (this.real ??= this.parent.child(this.bindings, this.opts));
  }

  get level(): string {
    return this.real?.level ?? (typeof this.opts.level === 'string' ? this.opts.level : this.parent.level);
  }
  set level(level: string) {
    this.made.level = level;
  }

  isLevelEnabled(level: string): boolean {
    const l = (this.real ?? this.parent) as unknown as { isLevelEnabled?: (x: string) => boolean };
    return typeof l.isLevelEnabled === 'function' ? l.isLevelEnabled(level) : true;
  }

  child(bindings: Bindings, opts?: Record<string, unknown>): FastifyBaseLogger {
    return this.made.child(bindings, opts);
  }

  silent(): void {}
}

// The log methods live on the prototype: a request that never logs allocates nothing but
// the stand-in itself.
for (const level of LEVELS) {
  Object.defineProperty(LazyChildLogger.prototype, level, {
    value(this: LazyChildLogger, ...args: unknown[]): void {
      (this.made[level] as Log)(...args);
    },
    writable: true,
    configurable: true,
  });
}

/** Fastify's `childLoggerFactory`: the request's child logger, made on first use. */
export const lazyChildLogger: FastifyChildLoggerFactory = (logger, bindings, opts) => new LazyChildLogger(logger, bindings, opts as Record<string, unknown>) as unknown as FastifyBaseLogger;
