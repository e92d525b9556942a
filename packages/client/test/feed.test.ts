// Goal: the watch client follows api-v1.md exactly, against a scripted fake node: list,
// then watch after `<epoch>:<listed revision>`; only events newer than the list are applied;
// a dropped stream resumes with Last-Event-ID = the last `id:` seen; `reset` relists from
// the node that sent it and the stream goes on; an empty relist from another epoch keeps
// the last known instances (stale) until the service has instances again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Instance } from '@switchboard/protocol';
import { ServiceFeed, type FeedChange } from '../src/feed.js';
import { Endpoints, RegistryHttp } from '../src/registry-http.js';
import { inst, waitFor } from './helpers.js';

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

async function fakeNode(routes: Record<string, Handler>) {
  const log: string[] = [];
  const counts = new Map<string, number>();
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] as string;
    const n = (counts.get(path) ?? 0) + 1;
    counts.set(path, n);
    log.push(`${path}#${n} ${req.url} lei=${req.headers['last-event-id'] ?? ''}`);
    const h = routes[path];
    if (!h) return res.writeHead(404).end();
    h(req, res, n);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return { url, log, close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

const json = (res: ServerResponse, body: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
const sse = (res: ServerResponse) => res.writeHead(200, { 'content-type': 'text/event-stream' });
const ev = (type: string, epoch: string, revision: number, instance: Instance, id?: string) =>
  `event: ${type}\n${id ? `id: ${id}\n` : ''}data: ${JSON.stringify({ epoch, revision, type, service: 'svc', namespace: 'default', instance })}\n\n`;

function feedFor(url: string, emptyViewGraceMs = 30_000) {
  const endpoints = new Endpoints([url]);
  const feed = new ServiceFeed({ namespace: 'default', service: 'svc', endpoints, http: new RegistryHttp(endpoints), backoff: { initialMs: 10, maxMs: 50 }, cacheDir: undefined, watchIdleTimeoutMs: 5_000, emptyViewGraceMs, snapshotIntervalMs: 1_000, onError: () => undefined });
  const changes: FeedChange[] = [];
  const stale: boolean[] = [];
  feed.subscribe({ onChanges: (c) => changes.push(...c), onStale: (s) => stale.push(s) });
  feed.start();
  return { feed, changes, stale, ids: () => [...feed.instances.keys()].sort() };
}

test('list, watch after the listed revision, resume with Last-Event-ID, relist on reset', async () => {
  const node = await fakeNode({
    '/v1/status': (_q, res) => json(res, { epoch: 'e1' }),
    '/v1/services/svc': (_q, res, n) => (n === 1 ? json(res, { service: 'svc', revision: 5, instances: [inst('a')] }) : json(res, { service: 'svc', revision: 9, instances: [inst('x')] })),
    '/v1/watch': (_q, res, n) => {
      sse(res);
      if (n === 1) {
        // An event at or below the listed revision is already in the list: skipped.
        res.write(ev('put', 'e1', 5, inst('stale-b')));
        res.write(ev('put', 'e1', 6, inst('c'), 'e1:6'));
        res.write(ev('put', 'e1', 7, inst('d'))); // no id: the revision is not complete yet
        res.end();
      } else {
        res.write(`event: reset\ndata: ${JSON.stringify({ epoch: 'e2', revision: 10 })}\n\n`);
        setTimeout(() => {
          res.write(ev('put', 'e2', 9, inst('y'))); // not newer than the relist (9): skipped
          res.write(ev('put', 'e2', 11, inst('z'), 'e2:11'));
        }, 50);
      }
    },
  });
  const { feed, ids } = feedFor(node.url);
  try {
    await waitFor(() => ids().join() === 'x,z', 5_000, `x and z; log: ${node.log.join(' | ')}`);
    const watches = node.log.filter((l) => l.startsWith('/v1/watch'));
    assert.match(watches[0]!, /fromRevision=6&epoch=e1 lei=e1:5$/, 'the first watch starts after the listed revision');
    assert.match(watches[1]!, /lei=e1:6$/, 'the resume names the last complete revision, not 7');
    assert.equal(node.log.filter((l) => l.startsWith('/v1/status')).length, 1, 'after a reset the epoch comes from the reset itself');
    assert.equal(node.log.filter((l) => l.startsWith('/v1/services/svc')).length, 2);
  } finally {
    await feed.close();
    await node.close();
  }
});

test('an empty relist from another epoch keeps the last known instances until instances come back', async () => {
  let sendLater: ((s: string) => void) | undefined;
  const node = await fakeNode({
    '/v1/status': (_q, res, n) => json(res, { epoch: n === 1 ? 'e1' : 'e2' }),
    '/v1/services/svc': (_q, res, n) => json(res, n === 1 ? { service: 'svc', revision: 3, instances: [inst('a'), inst('b')] } : { service: 'svc', revision: 0, instances: [] }),
    '/v1/watch': (_q, res, n) => {
      sse(res);
      // The first stream ends at once: the node "restarted" without its data (epoch e2).
      if (n === 1) return void res.end(': bye\n\n');
      res.write(`event: reset\ndata: ${JSON.stringify({ epoch: 'e2', revision: 0 })}\n\n`);
      sendLater = (s) => res.write(s);
    },
  });
  const { feed, changes, stale, ids } = feedFor(node.url);
  try {
    await waitFor(() => sendLater !== undefined && feed.stale, 5_000, 'the hold');
    assert.deepEqual(ids(), ['a', 'b'], 'still the last known instances');
    assert.ok(!changes.some((c) => c.type === 'delete'));
    sendLater!(ev('put', 'e2', 1, inst('a', { modRevision: 1 }), 'e2:1'));
    await waitFor(() => ids().join() === 'a', 5_000, 'the new epoch to take over');
    assert.equal(feed.stale, false);
    assert.deepEqual(changes.filter((c) => c.type === 'delete').map((c) => c.instance.id), ['b']);
    assert.deepEqual(stale, [true, false]);
  } finally {
    await feed.close();
    await node.close();
  }
});

test('the hold ends after emptyViewGraceMs when nothing comes back', async () => {
  const node = await fakeNode({
    '/v1/status': (_q, res, n) => json(res, { epoch: n === 1 ? 'e1' : 'e2' }),
    '/v1/services/svc': (_q, res, n) => json(res, n === 1 ? { service: 'svc', revision: 3, instances: [inst('a')] } : { service: 'svc', revision: 0, instances: [] }),
    '/v1/watch': (_q, res, n) => {
      sse(res);
      if (n === 1) return void res.end();
      res.write(`event: reset\ndata: ${JSON.stringify({ epoch: 'e2', revision: 0 })}\n\n`);
    },
  });
  const { feed, ids } = feedFor(node.url, 200);
  try {
    await waitFor(() => feed.stale, 5_000, 'the hold');
    await waitFor(() => ids().length === 0 && !feed.stale, 2_000, 'the grace to end');
  } finally {
    await feed.close();
    await node.close();
  }
});
