/**
 * Health routes: reports into ttl checks, consumer reports, service settings (the protect
 * threshold), the reason-coded history of an instance and the drain barrier.
 */
import { FORWARDED_REPORT_HEADER } from '../engines/engine.js';
import type { FastifyInstance } from 'fastify';
import {
  SwitchboardError,
  checkReportSchema,
  consumerReportResultSchema,
  consumerReportSchema,
  drainResultSchema,
  instanceHistorySchema,
  instanceIdSchema,
  serviceSettingsSchema,
  unknownFieldWarnings,
  validateCheckReport,
  validateConsumerReport,
  validateInstanceId,
  validateServiceSettings,
  writeResultSchema,
  type DrainResult,
  type InstanceHistory,
} from '@switchboard/protocol';
import { errorResponses, type ApiContext } from './context.js';
import { bool, durationParam, namespaceOf, nsQuerySchema, readQuerySchema, refuseIfStrict, serviceParam, withWarnings, type Query, instanceTarget } from './query.js';
import type { WatchStreams } from './watch.js';

type Params = Record<string, string>;

const instanceParams = { type: 'object', properties: { service: { type: 'string' }, instanceId: { type: 'string' } } } as const;

const CHECK_REPORT_FIELDS = Object.keys(checkReportSchema.properties);
const REPORT_FIELDS = Object.keys(consumerReportSchema.properties);
const SETTINGS_FIELDS = Object.keys(serviceSettingsSchema.properties);

/** The default bound of a drain's wait. */
const DRAIN_WAIT_DEFAULT_MS = 5_000;

function instanceNotFound(namespace: string, service: string, id: string): SwitchboardError {
  return new SwitchboardError('INSTANCE_NOT_FOUND', `instance ${id} of service ${service} in namespace ${namespace} does not exist`, {
    hint: 'check the service name, instance id and namespace; list the service with GET /v1/services/{service}',
  });
}

export async function healthRoutes(app: FastifyInstance, ctx: ApiContext, streams: WatchStreams): Promise<void> {
  const { engine, limits } = ctx;

  app.put('/v1/services/:service/instances/:instanceId/checks/:checkId', {
    schema: {
      tags: ['health'],
      summary: 'Report into a ttl check (passing, warning, critical; or pass, warn, fail)',
      description: 'Restarts the check\'s TTL; without a report within it, the check turns critical. Only state changes make a new revision.',
      params: { type: 'object', properties: { service: { type: 'string' }, instanceId: { type: 'string' }, checkId: instanceIdSchema } },
      querystring: nsQuerySchema,
      body: checkReportSchema,
      response: { 200: writeResultSchema, ...errorResponses },
    },
  }, async (req) => {
    const p = req.params as Params;
    const service = serviceParam(p.service);
    const id = validateInstanceId(p.instanceId);
    const checkId = validateInstanceId(p.checkId, 'checkId');
    const namespace = namespaceOf(req.query as Query);
    const result = validateCheckReport(req.body, limits);
    const warnings = refuseIfStrict(req, unknownFieldWarnings(req.body, CHECK_REPORT_FIELDS));
    return withWarnings(req, { revision: await engine.reportCheck(namespace, service, id, checkId, result) }, warnings);
  });

  app.post('/v1/services/:service/instances/:instanceId/reports', {
    schema: {
      tags: ['health'],
      summary: 'Report a failure seen when calling an instance (consumers)',
      description: 'When at least reportMinReporters distinct reporters (default 2) reported the instance within reportWindowMs (default 30s), it turns warning until the reports age out or one of its own checks turns passing. One reporter alone never changes anything.',
      params: instanceParams,
      querystring: nsQuerySchema,
      body: consumerReportSchema,
      response: { 200: consumerReportResultSchema, ...errorResponses },
    },
  }, async (req) => {
    const { namespace, service, id } = instanceTarget(req);
    const report = validateConsumerReport(req.body, limits);
    const warnings = refuseIfStrict(req, unknownFieldWarnings(req.body, REPORT_FIELDS));
    // cp: a report another node forwarded to the node that counts this instance's reports.
    const forwarded = req.headers[FORWARDED_REPORT_HEADER] !== undefined;
    return withWarnings(req, await engine.reportInstance(namespace, service, id, report, forwarded ? { forwarded } : undefined), warnings);
  });

  app.get('/v1/services/:service/settings', {
    schema: { tags: ['health'], summary: 'The settings of a service', querystring: readQuerySchema, response: { 200: serviceSettingsSchema, ...errorResponses } },
  }, async (req) => {
    const service = serviceParam((req.params as Params).service);
    const namespace = namespaceOf(req.query as Query);
    if (bool(req.query as Query, 'consistent')) await engine.readFreshness?.(true);
    return engine.registry.serviceSettings(namespace, service) ?? { protectThreshold: null };
  });

  app.put('/v1/services/:service/settings', {
    schema: {
      tags: ['health'],
      summary: 'Set the settings of a service (the protect threshold)',
      description: 'Durable, with a new revision of the service; `{"protectThreshold": null}` turns protection off.',
      querystring: nsQuerySchema,
      body: serviceSettingsSchema,
      response: { 200: writeResultSchema, ...errorResponses },
    },
  }, async (req) => {
    const service = serviceParam((req.params as Params).service);
    const namespace = namespaceOf(req.query as Query);
    const settings = validateServiceSettings(req.body);
    const warnings = refuseIfStrict(req, unknownFieldWarnings(req.body, SETTINGS_FIELDS));
    return withWarnings(req, { revision: await engine.setServiceSettings(namespace, service, settings) }, warnings);
  });

  app.get('/v1/services/:service/instances/:instanceId/history', {
    schema: {
      tags: ['health'],
      summary: 'The reason-coded history of an instance (its last state changes, oldest first)',
      description: 'Also answers for an instance that is gone, while its history is kept (`exists: false`).',
      params: instanceParams,
      querystring: readQuerySchema,
      response: { 200: instanceHistorySchema, ...errorResponses },
    },
  }, async (req) => {
    const { namespace, service, id } = instanceTarget(req);
    if (bool(req.query as Query, 'consistent')) await engine.readFreshness?.(true);
    const h = engine.registry.history(namespace, service, id);
    if (!h) throw instanceNotFound(namespace, service, id);
    const answer: InstanceHistory = { service, namespace, id, exists: h.exists, history: [...h.entries] };
    return answer;
  });

  app.post('/v1/services/:service/instances/:instanceId/drain', {
    schema: {
      tags: ['health'],
      summary: 'Drain an instance and wait until every watcher of its service on this node was sent the change',
      description: 'Sets the status to draining, then answers once each watch stream of the service on this node has flushed that revision, or when `wait` runs out (default 5s, at most the blocking wait maximum). The answer counts the watchers reached and those that timed out.',
      params: instanceParams,
      querystring: { type: 'object', properties: { namespace: { type: 'string', default: 'default' }, wait: { type: 'string', description: 'longest wait, like 5s; 0s answers at once' } } },
      response: { 200: drainResultSchema, ...errorResponses },
    },
  }, async (req) => {
    const p = req.params as Params;
    const q = req.query as Query;
    const service = serviceParam(p.service);
    const id = validateInstanceId(p.instanceId);
    const namespace = namespaceOf(q);
    const waitMs = durationParam(q, 'wait', DRAIN_WAIT_DEFAULT_MS, limits.blockingWaitMaxMs, 'blockingWaitMaxMs');
    // A drain takes no body: each field of one is unknown.
    const warnings = refuseIfStrict(req, unknownFieldWarnings(req.body, []));
    if (!engine.registry.instance(namespace, service, id)) throw instanceNotFound(namespace, service, id);
    // A drain that waits counts against the blocking queries' limit (checked before the
    // status is written, so that a refused drain changes nothing).
    const drains = ctx.drainsWaiting;
    if (waitMs > 0 && drains.value + engine.hub.waiting >= limits.maxBlockingQueriesPerNode) {
      throw new SwitchboardError('RATE_LIMITED', `${drains.value} drains and ${engine.hub.waiting} blocking queries are already waiting on this node`, {
        limit: 'maxBlockingQueriesPerNode',
        retryAfterSec: 1,
        hint: 'retry after a second, or drain with wait=0s and watch the service instead',
      });
    }
    drains.value++;
    try {
      const revision = await engine.setStatus(namespace, service, id, 'draining', 'drained');
      const reach = await streams.reach(namespace, service, revision, waitMs);
      const answer: DrainResult = { revision, ...reach };
      return withWarnings(req, answer, warnings);
    } finally {
      drains.value--;
    }
  });
}
