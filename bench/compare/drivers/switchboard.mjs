/**
 * Switchboard through its REST API v1 (docs/api.md), as the SDK uses it: an instance is
 * PUT /v1/services/<service>/instances/<id> with the instance's JSON and the process's
 * lease; a read is GET /v1/services/<service> (the answer parsed, as a client would); a
 * watcher is an SSE stream GET /v1/watch?service=<service>.
 *
 * Leases, two ways:
 * - transport 'rest' (registration workloads): POST /v1/leases, then
 *   PUT /v1/leases/{id}/keepalive every TTL/3 on the process's connection. One lease holds
 *   at most 1,000 instances (the documented limit maxInstancesPerLease), so a process that
 *   registers more opens another lease every 1,000 (its time is inside the measured
 *   window, not counted as a registration).
 * - transport 'session' (lease renewal and failure detection): the SDK's session stream, a
 *   WebSocket at /v1/session (`open`, then `keepalive` every TTL/3); the instance is
 *   registered over REST with that lease. A process that dies closes the socket, and the
 *   agent ends its lease after the 500 ms grace.
 * One keep-alive HTTP connection (undici Client, no pipelining) per simulated process.
 */
import { Client } from 'undici';
import { createParser } from 'eventsource-parser';
import WebSocket from 'ws';

export const name = 'switchboard';

const CLIENT_OPTS = { pipelining: 1, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 600_000, headersTimeout: 30_000, bodyTimeout: 30_000, connectTimeout: 10_000 };
const JSON_HEADERS = { 'content-type': 'application/json' };
const MAX_PER_LEASE = 1000;

async function call(client, method, path, body) {
  const res = await client.request({ method, path, headers: body === undefined ? undefined : JSON_HEADERS, body });
  const text = await res.body.text();
  if (res.statusCode >= 300) {
    let code = '';
    try {
      code = JSON.parse(text).code ?? '';
    } catch {
      /* not a problem document */
    }
    const err = new Error(`${method} ${path} -> ${res.statusCode} ${code} ${text.slice(0, 200)}`);
    err.code = `HTTP ${res.statusCode}${code ? ' ' + code : ''}`;
    throw err;
  }
  return text === '' ? null : JSON.parse(text);
}

/** `{...}` + leaseId: the same instance JSON as the other systems store, plus the lease. */
const withLease = (value, leaseId) => `${value.slice(0, -1)},"leaseId":"${leaseId}"}`;

/**
 * The session stream: resolves with { leaseId, request(), close() } once the agent granted
 * the lease (with `lease: false`, once the socket is open: requests need no lease).
 * request(build) sends build(id), a request message (docs/api.md, "Requests over the
 * session"), and resolves with its `result` message or rejects with its `error`.
 */
export function openSession(url, ttlMs, { onEnded, timeoutMs = 10_000, lease = true } = {}) {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/session`, { perMessageDeflate: false, handshakeTimeout: timeoutMs });
  const waiting = new Map();
  let nextId = 0;
  const failAll = (err) => {
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
  };
  return new Promise((resolve, reject) => {
    let seq = 0;
    let timer = null;
    let leaseId = null;
    const handle = {
      get leaseId() {
        return leaseId;
      },
      get acked() {
        return seq;
      },
      request(build) {
        if (ws.readyState !== WebSocket.OPEN) return Promise.reject(Object.assign(new Error('session closed'), { code: 'SESSION_CLOSED' }));
        const id = nextId++;
        return new Promise((res, rej) => {
          waiting.set(id, { resolve: res, reject: rej });
          ws.send(build(id));
        });
      },
      close(revoke = true) {
        clearInterval(timer);
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'close', revoke }));
        setTimeout(() => ws.terminate(), 1000).unref();
      },
      terminate() {
        clearInterval(timer);
        ws.terminate();
      },
    };
    const fail = setTimeout(() => {
      ws.terminate();
      reject(new Error(`no ${lease ? 'lease on the session stream' : 'session stream'} within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.on('open', () => {
      if (lease) ws.send(JSON.stringify({ type: 'open', ttlMs }));
      else {
        clearTimeout(fail);
        resolve(handle);
      }
    });
    ws.on('message', (data) => {
      let msg;
      try {
        msg = JSON.parse(data.toString());
      } catch {
        return;
      }
      if (msg.type === 'result' || (msg.type === 'error' && msg.id !== undefined)) {
        const w = waiting.get(msg.id);
        if (!w) return;
        waiting.delete(msg.id);
        if (msg.type === 'result') w.resolve(msg);
        else w.reject(Object.assign(new Error(`${msg.request} -> ${msg.problem?.status} ${msg.problem?.code}: ${msg.problem?.detail}`), { code: `${msg.problem?.status} ${msg.problem?.code}` }));
      } else if (msg.type === 'lease' && lease && leaseId === null) {
        clearTimeout(fail);
        leaseId = msg.leaseId;
        timer = setInterval(() => {
          if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'keepalive', seq: ++seq }));
        }, Math.max(100, Math.floor(msg.ttlMs / 3)));
        resolve(handle);
      } else if (msg.type === 'ended') {
        onEnded?.(msg.reason);
      } else if (msg.type === 'error' && leaseId === null) {
        clearTimeout(fail);
        reject(new Error(`session error: ${JSON.stringify(msg.problem)}`));
      }
    });
    ws.on('error', (err) => {
      clearTimeout(fail);
      failAll(err);
      if (leaseId === null) reject(err);
    });
    ws.on('close', () => {
      clearInterval(timer);
      failAll(Object.assign(new Error('session closed'), { code: 'SESSION_CLOSED' }));
    });
  });
}

export async function createDriver(target) {
  const url = target.url;
  const conns = new Set();
  const open = () => {
    const c = new Client(url, CLIENT_OPTS);
    conns.add(c);
    return c;
  };
  const closeConn = async (c) => {
    conns.delete(c);
    await c.close().catch(() => c.destroy());
  };
  /**
   * A simulated client process whose lease and writes both go over session streams
   * (transport 'requests', as the SDK writes): a session holds one lease, so a process
   * that registers more than 1,000 instances opens another session every 1,000.
   */
  const sessionProcess = async (ttlMs) => {
    let lost = null;
    const onEnded = (reason) => (lost = new Error(`lease ended: ${reason}`));
    const sessions = [{ s: await openSession(url, ttlMs, { onEnded }), count: 0 }];
    return {
      get leaseId() {
        return sessions[0].s.leaseId;
      },
      get lost() {
        return lost;
      },
      async register(service, id, value) {
        let cur = sessions[sessions.length - 1];
        if (cur.count >= MAX_PER_LEASE) {
          cur = { s: await openSession(url, ttlMs, { onEnded }), count: 0 };
          sessions.push(cur);
        }
        const instance = withLease(value, cur.s.leaseId);
        cur.count++;
        await cur.s.request((rid) => `{"type":"register","id":${rid},"service":"${service}","instanceId":"${id}","instance":${instance}}`);
      },
      async deregister(service, id) {
        await sessions[sessions.length - 1].s.request((rid) => `{"type":"deregister","id":${rid},"service":"${service}","instanceId":"${id}"}`);
      },
      async dropHttp() {},
      async close({ revoke = true } = {}) {
        for (const x of sessions) x.s.close(revoke);
      },
    };
  };
  return {
    name,
    async prepareServices() {},
    /**
     * A simulated client process. transport 'rest' or 'session' (see above);
     * keepHttp false closes the HTTP connection after each registration's answer is in
     * (the lease renewal workload, to stay within the file descriptor limit).
     */
    async process({ ttlMs, transport = 'rest' }) {
      if (transport === 'requests') return sessionProcess(ttlMs);
      let conn = open();
      let lost = null;
      const leases = []; // rest: { id, count }
      let session = null;
      let keepTimer = null;
      let inKeepalive = false;
      const newRestLease = async () => {
        const l = await call(conn, 'POST', '/v1/leases', JSON.stringify({ ttlMs }));
        leases.push({ id: l.leaseId, count: 0 });
      };
      if (transport === 'session') {
        session = await openSession(url, ttlMs, { onEnded: (reason) => (lost = new Error(`lease ended: ${reason}`)) });
        leases.push({ id: session.leaseId, count: 0 });
      } else {
        await newRestLease();
        keepTimer = setInterval(async () => {
          if (inKeepalive) return;
          inKeepalive = true;
          try {
            for (const l of leases) await call(conn, 'PUT', `/v1/leases/${l.id}/keepalive`);
          } catch (err) {
            lost ??= err;
          } finally {
            inKeepalive = false;
          }
        }, Math.floor(ttlMs / 3));
      }
      return {
        get leaseId() {
          return leases[0]?.id;
        },
        get lost() {
          return lost;
        },
        async register(service, id, value) {
          let l = leases[leases.length - 1];
          if (l.count >= MAX_PER_LEASE) {
            if (transport === 'session') throw new Error(`a session lease holds at most ${MAX_PER_LEASE} instances`);
            await newRestLease();
            l = leases[leases.length - 1];
          }
          await call(conn, 'PUT', `/v1/services/${service}/instances/${id}`, withLease(value, l.id));
          l.count++;
        },
        async deregister(service, id) {
          await call(conn, 'DELETE', `/v1/services/${service}/instances/${id}`);
        },
        /** Ends the HTTP connection but keeps the lease (session) alive. */
        async dropHttp() {
          await closeConn(conn);
          conn = null;
        },
        async close({ revoke = true } = {}) {
          clearInterval(keepTimer);
          if (session) session.close(revoke);
          else if (revoke && conn) for (const l of leases) await call(conn, 'DELETE', `/v1/leases/${l.id}`).catch(() => undefined);
          if (conn) await closeConn(conn);
        },
      };
    },
    async reader({ mode } = {}) {
      if (mode === 'session' || mode === 'session-endpoints') {
        const session = await openSession(url, 0, { lease: false });
        // Endpoints only: the `fields` projection (docs/api.md), id, address and port.
        const fields = mode === 'session-endpoints' ? ',"fields":["address","port"]' : '';
        return {
          async read(service) {
            const r = await session.request((id) => `{"type":"read","id":${id},"service":"${service}"${fields}}`);
            return r.answer.instances.length;
          },
          async close() {
            session.terminate();
          },
        };
      }
      const conn = open();
      return {
        async read(service) {
          const a = await call(conn, 'GET', `/v1/services/${service}`);
          return a.instances.length;
        },
        async close() {
          await closeConn(conn);
        },
      };
    },
    /** A watcher: one SSE stream; onChange(op, instanceId, receivedAtMs) per put/delete event. */
    async watcher(service, onChange, onError) {
      const client = new Client(url, { ...CLIENT_OPTS, bodyTimeout: 0 });
      let closed = false;
      let chunkAt = 0;
      const parser = createParser({
        onEvent(ev) {
          if (ev.event !== 'put' && ev.event !== 'delete') return;
          let d;
          try {
            d = JSON.parse(ev.data);
          } catch {
            onError?.('unparseable event');
            return;
          }
          onChange(ev.event, d.instance?.id, chunkAt);
        },
      });
      const res = await client.request({ method: 'GET', path: `/v1/watch?service=${service}`, headers: { accept: 'text/event-stream' } });
      if (res.statusCode !== 200) {
        const text = await res.body.text();
        await client.destroy();
        throw new Error(`watch: HTTP ${res.statusCode} ${text.slice(0, 200)}`);
      }
      const decoder = new TextDecoder();
      res.body.on('data', (chunk) => {
        chunkAt = performance.timeOrigin + performance.now();
        parser.feed(decoder.decode(chunk, { stream: true }));
      });
      res.body.on('error', (err) => !closed && onError?.(String(err.code ?? err.message)));
      res.body.on('end', () => !closed && onError?.('stream ended by the agent'));
      return {
        async close() {
          closed = true;
          await client.destroy();
        },
      };
    },
    async close() {
      await Promise.all([...conns].map((c) => c.destroy()));
      conns.clear();
    },
  };
}
