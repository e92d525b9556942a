/** Discovery: service lists, service answers with filters, blocking queries and ETags. */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SwitchboardError, instanceSchema, serviceAnswerSchema, serviceListSchema } from '@switchboard/protocol';
import { serviceAnswerBytes, serviceAnswerJson, type ServiceQuery } from '../core/views.js';
import { errorResponses, type ApiContext } from './context.js';
import { blocking, bool, namespaceOf, readQuerySchema, serviceParam, serviceQuery, type Query, instanceTarget } from './query.js';

type Params = Record<string, string>;

const JSON_TYPE = 'application/json; charset=utf-8';

const serviceQuerySchema = {
  type: 'object',
  properties: {
    namespace: { type: 'string', default: 'default' },
    healthy: { type: 'boolean', description: 'only status up and health not critical' },
    zone: { type: 'string' },
    tag: { type: 'array', items: { type: 'string' }, description: 'repeatable; all must match' },
    version: { type: 'string', description: 'npm semver range' },
    fields: { type: 'array', items: { type: 'string' }, description: '(extension) answer only these instance fields, comma-separated or repeated (id is always answered)' },
    consistent: { type: 'boolean' },
    index: { type: 'integer', description: 'blocking query: answer once the service revision exceeds it' },
    wait: { type: 'string', description: 'blocking query: longest wait, like 30s (default 60s, at most 5m)' },
  },
} as const;

/** True when If-None-Match names this ETag (or `*`). */
function notModified(req: FastifyRequest, etag: string): boolean {
  const inm = req.headers['if-none-match'];
  if (!inm) return false;
  return inm.split(',').some((t) => {
    const tag = t.trim();
    return tag === '*' || tag === etag || tag === `W/${etag}`;
  });
}

function sendCached(req: FastifyRequest, reply: FastifyReply, etag: string, body: () => string | Buffer): FastifyReply {
  reply.header('etag', etag).header('cache-control', 'no-cache');
  if (notModified(req, etag)) return reply.code(304).send();
  return reply.type(JSON_TYPE).send(body());
}

export async function readRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { engine, limits } = ctx;
  const reg = engine.registry;
  let listCache: { key: string; body: string } | undefined;

  app.get('/v1/services', {
    schema: { tags: ['discovery'], summary: 'List the services of a namespace', querystring: readQuerySchema, response: { 200: serviceListSchema, ...errorResponses } },
  }, async (req, reply) => {
    const namespace = namespaceOf(req.query as Query);
    if (bool(req.query as Query, 'consistent')) await engine.readFreshness?.(true);
    const revision = reg.revision;
    return sendCached(req, reply, `"${reg.epoch}.${revision}"`, () => {
      const key = `${namespace}@${revision}`;
      if (listCache?.key === key) return listCache.body;
      const services = reg.listServices(namespace).map((s) => {
        let passing = 0;
        for (const r of s.instances.values()) if (r.instance.status === 'up' && r.instance.health === 'passing') passing++;
        return { name: s.name, namespace: s.namespace, instances: s.instances.size, passing };
      });
      listCache = { key, body: JSON.stringify({ revision, services }) };
      return listCache.body;
    });
  });

  app.get('/v1/services/:service', {
    schema: { tags: ['discovery'], summary: 'Instances of a service, with filters and blocking', querystring: serviceQuerySchema, response: { 200: serviceAnswerSchema, ...errorResponses } },
  }, async (req, reply) => {
    const q = req.query as Query;
    const service = serviceParam((req.params as Params).service);
    const namespace = namespaceOf(q);
    const filter = serviceQuery(q, limits);
    // Standalone reads always reflect every completed write; cp may have to wait or say stale.
    // Every parameter is checked before anything waits (and in standalone, where there is
    // no freshness to wait for, `consistent` is still validated).
    const consistent = bool(q, 'consistent');
    const block = blocking(q, limits);
    const fresh = await engine.readFreshness?.(consistent);
    if (block) await waitForChange(ctx, reply, namespace, service, block.index, block.waitMs);
    const answer = currentAnswer(ctx, namespace, service, filter, fresh);
    reply.header('x-switchboard-index', String(answer.revision));
    if (answer.stale) return reply.type(JSON_TYPE).header('cache-control', 'no-cache').send(answer.body());
    return sendCached(req, reply, `"${reg.epoch}.${answer.revision}"`, answer.body);
  });

  app.get('/v1/services/:service/instances/:instanceId', {
    schema: { tags: ['discovery'], summary: 'One instance', querystring: readQuerySchema, response: { 200: instanceSchema, ...errorResponses } },
  }, async (req, reply) => {
    const { namespace, service, id } = instanceTarget(req);
    if (bool(req.query as Query, 'consistent')) await engine.readFreshness?.(true);
    const rec = reg.instance(namespace, service, id);
    if (!rec) {
      throw new SwitchboardError('INSTANCE_NOT_FOUND', `instance ${id} of service ${service} in namespace ${namespace} does not exist`, {
        hint: 'list the service with GET /v1/services/{service} to see its instances',
      });
    }
    return sendCached(req, reply, `"${reg.epoch}.${rec.instance.modRevision}"`, () => rec.json);
  });
}

/**
 * The answer to a read of a service as the node holds it now (GET /v1/services/{service}
 * and the session's `read`): marked stale when cp could not confirm its view is current.
 * The body is made when asked for (an unchanged answer is not sent at all).
 */
export function currentAnswer(ctx: ApiContext, namespace: string, service: string, filter: ServiceQuery, fresh: { stale: boolean; staleMs: number } | undefined): { revision: number; stale: boolean; body: () => string | Buffer } {
  const reg = ctx.engine.registry;
  const svc = reg.service(namespace, service);
  const revision = svc?.revision ?? reg.serviceRevision(namespace, service);
  // A protect threshold only ever widens a healthy=true answer.
  const protectThreshold = filter.healthy ? (reg.serviceSettings(namespace, service)?.protectThreshold ?? null) : null;
  if (fresh?.stale) {
    const staleMs = Math.round(fresh.staleMs);
    return { revision, stale: true, body: () => `${serviceAnswerJson(svc, service, revision, filter, protectThreshold, reg.epoch).slice(0, -1)},"stale":true,"staleMs":${staleMs}}` };
  }
  return { revision, stale: false, body: () => serviceAnswerBytes(svc, service, revision, filter, protectThreshold, reg.epoch) };
}

/**
 * Waits until the service's revision exceeds `index`, the wait runs out, the client goes
 * away or the node shuts down. An index ahead of the store (another epoch) answers at once.
 */
async function waitForChange(ctx: ApiContext, reply: FastifyReply, namespace: string, service: string, index: number, waitMs: number): Promise<void> {
  const { engine, limits } = ctx;
  const reg = engine.registry;
  if (reg.serviceRevision(namespace, service) > index || index > reg.revision || waitMs === 0 || ctx.closing.value) return;
  if (engine.hub.waiting + ctx.drainsWaiting.value >= limits.maxBlockingQueriesPerNode) {
    throw new SwitchboardError('RATE_LIMITED', `${engine.hub.waiting} blocking queries and ${ctx.drainsWaiting.value} drains are already waiting on this node`, {
      limit: 'maxBlockingQueriesPerNode',
      retryAfterSec: 1,
      hint: 'retry after a second, or use the watch stream (GET /v1/watch) for many services',
    });
  }
  const deadline = Date.now() + waitMs;
  await new Promise<void>((resolve) => {
    let cancel = (): void => undefined;
    const finish = (): void => {
      clearTimeout(timer);
      cancel();
      reply.raw.off('close', onClose);
      socket.off('close', onClose);
      resolve();
    };
    const onClose = (): void => finish();
    const arm = (): void => {
      cancel = engine.hub.waitFor(namespace, service, () => {
        // Woken by an announced change; the read model may have been ahead of it.
        if (reg.serviceRevision(namespace, service) > index || ctx.closing.value || Date.now() >= deadline) finish();
        else arm();
      });
    };
    const timer = setTimeout(finish, waitMs);
    // A query pipelined behind another request has no socket on its response yet, and
    // that response never emits 'close' when the client leaves: the connection's does.
    const socket = reply.request.raw.socket;
    reply.raw.once('close', onClose);
    // (Queries pipelined on one connection each listen: no leak warning for them.)
    socket.setMaxListeners(0);
    socket.once('close', onClose);
    if (socket.destroyed) return finish();
    arm();
  });
}
