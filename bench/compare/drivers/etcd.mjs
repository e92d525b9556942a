/**
 * etcd as service discovery uses it (gRPC naming, Kubernetes-style): an instance is the
 * key /services/<service>/<id> whose value is the instance's JSON, bound to the process's
 * lease (kept alive by the etcd3 client, every TTL/3 as the Go client does); a read is a
 * prefix range; a watcher watches the prefix.
 *
 * Client settings (the `etcd3` npm client, deliberately configured):
 * - faultHandling: no retry and no circuit breaker (cockatiel's `noop` policy for both the
 *   per-host and the global policy). By default etcd3 retries a failed call up to 3 times
 *   and opens a circuit breaker after 3 consecutive failures; both would hide slow or
 *   failed calls from the latency and error figures. Here every error is counted.
 * - one Etcd3 client (one gRPC channel, one TCP connection) per simulated process, with
 *   `grpc.use_local_subchannel_pool` so that grpc-js does not share one connection between
 *   the clients of this load generator, as it would by default.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Etcd3 } = require('etcd3');
// cockatiel is etcd3's own dependency: resolved from etcd3's location.
const { noop } = createRequire(require.resolve('etcd3'))('cockatiel');

export const name = 'etcd';

export function newClient(target) {
  return new Etcd3({
    hosts: target.endpoints.map((e) => `http://${e}`),
    faultHandling: { host: () => noop, global: noop },
    grpcOptions: { 'grpc.use_local_subchannel_pool': 1 },
  });
}

const keyOf = (service, id) => `/services/${service}/${id}`;

export async function createDriver(target, { readMode = 'serializable' } = {}) {
  const clients = new Set();
  const shared = new Map();
  const open = () => {
    const c = newClient(target);
    clients.add(c);
    return c;
  };
  return {
    name,
    /** Nothing to prepare: prefixes need no parent. */
    async prepareServices() {},
    /**
     * A simulated client process: its own client and one lease (TTL in whole seconds, at
     * least 1). Processes given the same `shareKey` share one client (one connection):
     * the lease renewal workload does so, see there.
     */
    async process({ ttlMs, shareKey = null }) {
      let client;
      if (shareKey === null) client = open();
      else {
        client = shared.get(shareKey);
        if (!client) shared.set(shareKey, (client = open()));
      }
      const lease = client.lease(Math.max(1, Math.round(ttlMs / 1000)), { autoKeepAlive: true });
      let lost = null;
      lease.on('lost', (err) => (lost = err));
      const leaseId = await lease.grant();
      return {
        leaseId,
        get lost() {
          return lost;
        },
        async register(service, id, value) {
          await lease.put(keyOf(service, id)).value(value).exec();
        },
        async deregister(service, id) {
          await client.delete().key(keyOf(service, id)).exec();
        },
        async close({ revoke = true } = {}) {
          try {
            if (revoke) await lease.revoke();
            else lease.release();
          } catch {
            /* gone already */
          }
          if (shareKey === null) {
            client.close();
            clients.delete(client);
          }
        },
      };
    },
    /** A reader process; mode serializable (member-local) or linearizable (through the leader). */
    async reader({ mode = readMode } = {}) {
      const client = open();
      const serializable = mode === 'serializable';
      return {
        async read(service) {
          const kvs = await client.getAll().prefix(`/services/${service}/`).serializable(serializable).strings();
          let n = 0;
          for (const k in kvs) if (kvs[k].length > 0) n++;
          return n;
        },
        async close() {
          client.close();
          clients.delete(client);
        },
      };
    },
    /**
     * A watcher process: onChange(op, id, receivedAtMs) for every put/delete under the
     * service's prefix. Resolves once etcd has acknowledged the watch.
     */
    async watcher(service, onChange, onError) {
      const client = open();
      const prefix = `/services/${service}/`;
      const w = await client.watch().prefix(prefix).create();
      const at = () => performance.timeOrigin + performance.now();
      w.on('put', (kv) => onChange('put', kv.key.toString().slice(prefix.length), at()));
      w.on('delete', (kv) => onChange('delete', kv.key.toString().slice(prefix.length), at()));
      w.on('error', (err) => onError?.(String(err?.message ?? err)));
      w.on('disconnected', (err) => onError?.(`disconnected: ${err?.message ?? err}`));
      return {
        async close() {
          await w.cancel().catch(() => undefined);
          client.close();
          clients.delete(client);
        },
      };
    },
    async close() {
      for (const c of clients) c.close();
      clients.clear();
    },
  };
}
