/** The event emitter of the SDK's objects whose events come from its own loops. */
import { EventEmitter } from 'node:events';

/**
 * Events emitted from the SDK's own loops (lease keeping, registration, watch streams): a
 * listener that throws must not stop them half-way, nor keep the listeners after it, or
 * other views of the same service, from hearing of the change. Its error is thrown again
 * on its own, as an uncaught exception, the way an error in an I/O callback surfaces.
 */
export class LoopEmitter extends EventEmitter {
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    const listeners = this.rawListeners(event);
    if (listeners.length === 0) {
      // As EventEmitter: an 'error' nobody listens to is thrown (here, on its own).
      if (event === 'error') throwLater(args[0] instanceof Error ? args[0] : new Error(`unhandled 'error' event: ${String(args[0])}`));
      return false;
    }
    for (const l of listeners) {
      try {
        (l as (...a: unknown[]) => unknown).apply(this, args);
      } catch (err) {
        throwLater(err);
      }
    }
    return true;
  }
}

/** Throws `err` on the next tick, where nothing of the SDK's is on the stack. */
export function throwLater(err: unknown): void {
  process.nextTick(() => {
    throw err;
  });
}
