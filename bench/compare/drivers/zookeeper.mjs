/**
 * ZooKeeper as service discovery uses it (Curator's ServiceDiscovery): an instance is the
 * ephemeral znode /services/<service>/<id> holding the instance's JSON, owned by the
 * process's session; a discovery read is getChildren of the service plus getData of each
 * child (what Curator's queryForInstances does; here the getData calls are pipelined on
 * the connection rather than sequential, which favours ZooKeeper), or getChildren alone
 * (a "bare listing"); a watcher keeps a child watch on the service and re-lists on each
 * notification (one-shot watches), as Curator's caches do.
 *
 * Client settings (the `node-zookeeper-client` npm client): sessionTimeout = the lease TTL
 * of the other systems (the server negotiates it into [2, 20] ticks; with the default
 * 2000 ms tick, 4 s and 10 s are kept as asked); one client (one session, one TCP
 * connection) per simulated process; retries: 0 (an operation's error is counted, never
 * retried); spinDelay 100 ms.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const zookeeper = require('node-zookeeper-client');
const { CreateMode, Event } = zookeeper;

export const name = 'zookeeper';

const pathOf = (service, id) => `/services/${service}/${id}`;

/** Connects one client; resolves once its session is established (bounded). */
export function connectClient(target, sessionTimeout, timeoutMs = 20_000) {
  const client = zookeeper.createClient(target.connectString, { sessionTimeout, spinDelay: 100, retries: 0 });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.close();
      reject(new Error(`no ZooKeeper session within ${timeoutMs} ms`));
    }, timeoutMs);
    client.once('connected', () => {
      clearTimeout(timer);
      resolve(client);
    });
    client.connect();
  });
}

const p = (f) => new Promise((resolve, reject) => f((err, ...rest) => (err ? reject(err) : resolve(rest))));

export async function createDriver(target, { readMode = 'curator' } = {}) {
  const clients = new Set();
  const open = async (sessionTimeout = 10_000) => {
    const c = await connectClient(target, sessionTimeout);
    clients.add(c);
    return c;
  };
  const closeClient = (c) => {
    c.close();
    clients.delete(c);
  };
  return {
    name,
    /** The persistent parents /services/<service> (not measured). */
    async prepareServices(services) {
      const c = await open();
      try {
        for (const s of services) await p((cb) => c.mkdirp(`/services/${s}`, cb));
      } finally {
        closeClient(c);
      }
    },
    /** A simulated client process: its own session with timeout = TTL. */
    async process({ ttlMs }) {
      const client = await open(ttlMs);
      let lost = null;
      client.on('state', (s) => {
        if (s === zookeeper.State.EXPIRED) lost = new Error('session expired');
      });
      return {
        leaseId: client.getSessionId().toString('hex'),
        get lost() {
          return lost;
        },
        async register(service, id, value) {
          await p((cb) => client.create(pathOf(service, id), Buffer.from(value), CreateMode.EPHEMERAL, cb));
        },
        async deregister(service, id) {
          await p((cb) => client.remove(pathOf(service, id), -1, cb));
        },
        async close() {
          closeClient(client);
        },
      };
    },
    /** A reader: mode curator (children + each child's data) or bare (children only). */
    async reader({ mode = readMode } = {}) {
      const client = await open();
      return {
        async read(service) {
          const base = `/services/${service}`;
          const [children] = await p((cb) => client.getChildren(base, cb));
          if (mode === 'bare') return children.length;
          const datas = await Promise.all(children.map((ch) => p((cb) => client.getData(`${base}/${ch}`, cb))));
          let n = 0;
          for (const [d] of datas) if (d && d.length > 0) n++;
          return n;
        },
        async close() {
          closeClient(client);
        },
      };
    },
    /**
     * A watcher: a child watch on the service, re-armed by the getChildren that re-lists
     * it; onChange(op, id, at) for each child added or removed since the previous listing,
     * `at` being when that listing arrived (when this watcher knows the new membership).
     * Changes that come and go between two listings are never seen (ZooKeeper's one-shot
     * watches coalesce them); the caller counts them as missed.
     */
    async watcher(service, onChange, onError) {
      const client = await open();
      const base = `/services/${service}`;
      let known = null;
      let closed = false;
      const list = () =>
        new Promise((resolve) => {
          client.getChildren(
            base,
            (ev) => {
              if (closed) return;
              if (ev.getType() === Event.NODE_CHILDREN_CHANGED) list();
              else if (ev.getType() === Event.NODE_DELETED) onError?.('service node deleted');
            },
            (err, children) => {
              const at = performance.timeOrigin + performance.now();
              if (err) {
                if (!closed) onError?.(`getChildren: ${err.message ?? err}`);
                return resolve();
              }
              const now = new Set(children);
              if (known !== null) {
                for (const c of now) if (!known.has(c)) onChange('put', c, at);
                for (const c of known) if (!now.has(c)) onChange('delete', c, at);
              }
              known = now;
              resolve();
            },
          );
        });
      await list();
      return {
        async close() {
          closed = true;
          closeClient(client);
        },
      };
    },
    async close() {
      for (const c of clients) c.close();
      clients.clear();
    },
  };
}
