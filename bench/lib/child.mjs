/**
 * The side of a forked load generator that talks to the runner: messages over the IPC
 * channel, and the last one (the run's result or error) before the process leaves.
 */

/** Sends a message to the runner; `then` runs once it is handed to the channel (or at once without one). */
export function send(msg, then) {
  if (process.connected) process.send(msg, then);
  else then?.();
}

/**
 * Runs `produce` and sends its result (or its error) as the last message, then leaves once
 * that message is handed to the channel: a large result may take a while, and exiting
 * earlier loses it. Sockets close with the process.
 */
export async function replyThenExit(produce) {
  let last;
  try {
    last = { type: 'result', result: await produce() };
  } catch (err) {
    last = { type: 'error', error: String(err?.stack ?? err) };
  }
  send(last, () => setTimeout(() => process.exit(0), 20));
}
