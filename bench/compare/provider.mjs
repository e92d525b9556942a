/**
 * A provider process for the failure-detection workload: it takes a lease (Switchboard:
 * the session WebSocket; etcd: a lease kept alive by the client; ZooKeeper: a session),
 * registers one instance of service `fd` with it, tells the runner, and then only keeps
 * its lease alive until the runner kills it (SIGKILL) or freezes it (SIGSTOP). It leaves
 * by itself after 120 s in any case.
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
  setInterval(() => {}, 60_000); // stay alive; the lease's own keep-alive runs
} catch (err) {
  send({ type: 'error', error: String(err?.stack ?? err) });
  setTimeout(() => process.exit(1), 100);
}
