/** Node status, liveness, readiness, metrics and the OpenAPI document. */
import type { FastifyInstance } from 'fastify';
import { SwitchboardError, selfPreservationSchema, type NodeStatus } from '@switchboard/protocol';
import { errorResponses, type ApiContext } from './context.js';

const statusSchema = {
  type: 'object',
  properties: {
    nodeId: { type: 'string' },
    mode: { type: 'string', enum: ['standalone', 'ap', 'cp'] },
    version: { type: 'string' },
    epoch: { type: 'string' },
    revision: { type: 'integer' },
    startedAt: { type: 'string', format: 'date-time' },
    uptimeMs: { type: 'integer' },
    leases: { type: 'integer' },
    instances: { type: 'integer' },
    services: { type: 'integer' },
    watchers: { type: 'integer' },
    sessions: { type: 'integer' },
    selfPreservation: selfPreservationSchema,
    checks: {
      type: 'object',
      description: 'active checks this node runs',
      properties: { scheduled: { type: 'integer' }, running: { type: 'integer' }, queued: { type: 'integer' }, maxConcurrent: { type: 'integer' } },
    },
    storage: { type: 'object', properties: { durable: { type: 'boolean' }, dataDir: { type: ['string', 'null'] } } },
    cluster: { type: 'object', description: 'ap and cp: members, reachability, lag and the store', additionalProperties: true },
  },
} as const;

export async function nodeRoutes(app: FastifyInstance, ctx: ApiContext, counts: { watchers: () => number; sessions: () => number }): Promise<void> {
  const { engine } = ctx;

  app.get('/v1/status', { schema: { tags: ['node'], summary: 'This node', response: { 200: statusSchema, ...errorResponses } } }, async () => {
    const reg = engine.registry;
    const checks = engine.checkStats();
    const status: NodeStatus = {
      nodeId: engine.nodeId,
      mode: engine.mode,
      version: ctx.version,
      epoch: reg.epoch,
      revision: reg.revision,
      startedAt: ctx.startedAt.toISOString(),
      uptimeMs: Date.now() - ctx.startedAt.getTime(),
      leases: reg.leaseCount,
      instances: reg.instanceCount,
      services: reg.serviceCount,
      watchers: counts.watchers(),
      sessions: counts.sessions(),
      selfPreservation: reg.selfPreservationStatus(),
      checks: { scheduled: checks.scheduled, running: checks.running, queued: checks.queued, maxConcurrent: ctx.limits.maxConcurrentChecks },
      storage: { durable: engine.durable, dataDir: engine.dataDir },
    };
    const cluster = engine.cluster?.();
    if (cluster) status.cluster = cluster;
    return status;
  });

  app.get('/healthz', { schema: { tags: ['node'], summary: 'Liveness: the process answers' } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { schema: { tags: ['node'], summary: 'Readiness: the node takes requests' } }, async () => {
    if (ctx.closing.value) throw new SwitchboardError('NOT_READY', 'the node is shutting down', { retryAfterSec: 1, hint: 'send requests to another node' });
    if (engine.cluster?.().ready === false) throw new SwitchboardError('NOT_READY', 'the node is catching up from its peers', { retryAfterSec: 1, hint: 'wait, or send requests to another node' });
    return { status: 'ready' };
  });

  app.get('/metrics', { schema: { tags: ['node'], summary: 'Prometheus metrics' } }, async (_req, reply) => {
    const body = await ctx.metrics.registry.metrics();
    return reply.type(ctx.metrics.registry.contentType).send(body);
  });

  app.get('/v1/openapi.json', { schema: { hide: true } }, async (_req, reply) => reply.type('application/json; charset=utf-8').send(JSON.stringify(app.swagger())));
}
