/** The TCP check: passing when a connection to host:port opens; it is closed at once. */
import { connect } from 'node:net';
import { parseHostPort, type CheckResult } from '@switchboard/protocol';
import { critical, describeError, type ProbeTarget } from './runner.js';

export function probeTcp(t: ProbeTarget, signal: AbortSignal): Promise<CheckResult> {
  const hp = parseHostPort(t.target);
  if (!hp) return Promise.resolve(critical(`${t.target} is not host:port`));
  return new Promise((resolve) => {
    const socket = connect({ host: hp.host, port: hp.port });
    const done = (result: CheckResult): void => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve(result);
    };
    const onAbort = (): void => done(critical(`TCP connect to ${t.target}: timed out`));
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => done({ status: 'passing', output: `TCP connect to ${t.target} succeeded` }));
    socket.once('error', (err) => done(critical(`TCP connect to ${t.target}: ${describeError(err)}`)));
  });
}
