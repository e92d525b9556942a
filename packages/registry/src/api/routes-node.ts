/** Node status, liveness, readiness, metrics and the OpenAPI document. */
import type { FastifyInstance } from 'fastify';
import { SwitchboardError, selfPreservationSchema, validateNodeId, type NodeStatus } from '@switchboard/protocol';
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
      properties: {
        scheduled: { type: 'integer' },
        running: { type: 'integer' },
        queued: { type: 'integer' },
        maxConcurrent: { type: 'integer' },
        denied: { type: 'integer', description: 'probes the check networks refused since the node started (checkDenyNetworks, checkAllowNetworks)' },
      },
    },
    storage: { type: 'object', properties: { durable: { type: 'boolean' }, dataDir: { type: ['string', 'null'] } } },
    cluster: { type: 'object', description: 'ap and cp: members, reachability, lag and the store', additionalProperties: true },
    alerts: {
      type: 'object',
      description: 'alert episodes now active and the delivery state of each webhook (docs/alerts.md)',
      properties: {
        active: { type: 'array', items: { type: 'object', additionalProperties: true } },
        webhooks: { type: 'array', items: { type: 'object', additionalProperties: true } },
      },
    },
  },
} as const;

const memberParams = { type: 'object', properties: { id: { type: 'string' } } } as const;

const memberRemovalSchema = {
  type: 'object',
  properties: {
    member: { type: 'string' },
    adopted: { type: 'integer', description: 'persistent instances of the member this node took over' },
    adoptedElsewhere: { type: 'integer', description: 'persistent instances of the member another remaining node takes over' },
    dropped: { type: 'integer', description: 'lease-bound instances of the member dropped (their leases lived on it)' },
    notified: { type: 'array', items: { type: 'string' }, description: 'reachable peers the removal was sent to' },
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
      checks: { scheduled: checks.scheduled, running: checks.running, queued: checks.queued, maxConcurrent: ctx.limits.maxConcurrentChecks, denied: checks.denied },
      storage: { durable: engine.durable, dataDir: engine.dataDir },
    };
    const cluster = engine.cluster?.();
    if (cluster) status.cluster = cluster;
    const alerts = ctx.alerts?.status();
    if (alerts) status.alerts = alerts;
    return status;
  });

  app.delete('/v1/cluster/members/:id', {
    schema: { tags: ['node'], summary: 'ap: remove a member that is gone for good (docs/ap.md, "Removing a member")', params: memberParams, response: { 200: memberRemovalSchema, ...errorResponses } },
  }, async (req) => {
    if (!engine.removeMember) {
      throw new SwitchboardError('UNSUPPORTED_MODE', `this node runs in ${engine.mode} mode: only ap clusters have members to remove`, {
        hint: engine.mode === 'cp' ? 'cp nodes leave by themselves: a stopped node drops out of the members when its etcd lease ends' : 'a standalone node has no cluster; nothing to remove',
      });
    }
    return engine.removeMember(validateNodeId((req.params as { id: string }).id));
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
