/**
 * A provider process for the failure-detection workload: it takes a lease (Switchboard:
 * the session WebSocket; etcd: a lease kept alive by the client; ZooKeeper: a session),
 * registers one instance of service `fd` with it, tells the runner, and then only keeps
 * its lease alive until the runner kills it (SIGKILL), freezes it (SIGSTOP) or asks it to
 * drain (the IPC message `drain`: it deregisters the instance as a process shutting down
 * cleanly does, reports `drained` with the time it started, then closes its lease). It
 * leaves by itself after 120 s in any case.
 *
 *   node bench/compare/provider.mjs '<target JSON>' <ttlMs> <instanceId>
 */
import { loadDriver } from './drivers/index.mjs';
import { payload } from './lib/payload.mjs';

const [targetJson, ttl, id] = process.argv.slice(2);
const send = (m) => process.connected && process.send(m);
setTimeout(() => process.exit(0), 120_000).unref();
process.on('disconnect', () => process.exit(0));
try {
  const target = JSON.parse(targetJson);
  const drv = await loadDriver(target);
  const p = await drv.process({ ttlMs: Number(ttl), transport: 'session' });
  await p.register('fd', id, payload(250, 1, 1));
  send({ type: 'registered', id, leaseId: String(p.leaseId), at: performance.timeOrigin + performance.now() });
  process.on('message', async (m) => {
    if (m?.type !== 'drain') return;
    try {
      const at = performance.timeOrigin + performance.now();
      await p.deregister('fd', id);
      send({ type: 'drained', id, at, ackMs: performance.timeOrigin + performance.now() - at });
      await p.close();
    } catch (err) {
      send({ type: 'error', error: String(err?.stack ?? err) });
    }
  });
  setInterval(() => {}, 60_000); // stay alive; the lease's own keep-alive runs
} catch (err) {
  send({ type: 'error', error: String(err?.stack ?? err) });
  setTimeout(() => process.exit(1), 100);
}
