/** The TCP check: passing when a connection to host:port opens; it is closed at once. */
import { connect } from 'node:net';
import { parseHostPort, type CheckResult } from '@switchboard/protocol';
import { deniedOutput, type TargetGuard } from './networks.js';
import { critical, describeError, type Probe, type ProbeTarget } from './runner.js';

/** TCP probes whose connections the guard checks (an IP literal before, a name by the connection's lookup). */
export function tcpProbe(guard: TargetGuard): Probe {
  return (t, signal) => probeTcp(t, signal, guard);
}

function probeTcp(t: ProbeTarget, signal: AbortSignal, guard: TargetGuard): Promise<CheckResult> {
  const hp = parseHostPort(t.target);
  if (!hp) return Promise.resolve(critical(`${t.target} is not host:port`));
  try {
    guard.checkLiteral(hp.host);
  } catch (err) {
    return Promise.resolve(critical(deniedOutput(err, t.target) ?? describeError(err)));
  }
  return new Promise((resolve) => {
    const socket = connect({ host: hp.host, port: hp.port, lookup: guard.lookup });
    const done = (result: CheckResult): void => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve(result);
    };
    const onAbort = (): void => done(critical(`TCP connect to ${t.target}: timed out`));
    signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => done({ status: 'passing', output: `TCP connect to ${t.target} succeeded` }));
    socket.once('error', (err) => done(critical(deniedOutput(err, t.target) ?? `TCP connect to ${t.target}: ${describeError(err)}`)));
  });
}
