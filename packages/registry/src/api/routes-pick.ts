/**
 * Server-side load distribution (an extension, api.md "Server-side pick"): the registry
 * picks an instance of a service for a client without the SDK, with the SDK's balancers.
 */
import type { FastifyInstance } from 'fastify';
import { SwitchboardError, instanceSchema, invalid, limitExceeded, validateInstanceId, validateLabel } from '@switchboard/protocol';
import { MAX_PICK_COUNT, MAX_PICK_EXCLUDES, PICK_STRATEGIES, Pickers, type PickStrategy } from '../core/picker.js';
import { errorResponses, type ApiContext } from './context.js';
import { bool, list, namespaceOf, serviceParam, serviceQuery, single, type Query } from './query.js';

/** Longest consistent-hash key, in characters. */
export const MAX_PICK_KEY_LENGTH = 1024;

const pickQuerySchema = {
  type: 'object',
  properties: {
    namespace: { type: 'string', default: 'default' },
    strategy: { type: 'string', enum: [...PICK_STRATEGIES], default: 'round-robin', description: 'the balancer: as the SDK\'s of the same name' },
    key: { type: 'string', description: `consistent-hash: the key (a user or cart id), at most ${MAX_PICK_KEY_LENGTH} characters` },
    preferZone: { type: 'string', description: 'prefer this zone while at least half of its instances can be picked' },
    count: { type: 'integer', minimum: 1, maximum: MAX_PICK_COUNT, default: 1, description: 'distinct instances to answer: the pick, then fallbacks in order' },
    exclude: { type: 'array', items: { type: 'string' }, description: `instance ids not to answer (already tried), comma-separated or repeated, at most ${MAX_PICK_EXCLUDES}` },
    zone: { type: 'string' },
    tag: { type: 'array', items: { type: 'string' }, description: 'repeatable; all must match' },
    version: { type: 'string', description: 'npm semver range' },
    consistent: { type: 'boolean' },
  },
} as const;

const pickAnswerSchema = {
  type: 'object',
  required: ['service', 'namespace', 'revision', 'strategy', 'instances', 'candidates'],
  properties: {
    service: { type: 'string' },
    namespace: { type: 'string' },
    revision: { type: 'integer' },
    strategy: { type: 'string' },
    instances: { type: 'array', items: instanceSchema },
    candidates: { type: 'integer', description: 'instances the pick chose among' },
    protected: { type: 'boolean', description: 'the protect threshold widened the candidates to unhealthy instances' },
    stale: { type: 'boolean' },
    staleMs: { type: 'integer' },
    epoch: { type: 'string' },
  },
} as const;

function strategyOf(q: Query): PickStrategy {
  const v = single(q, 'strategy');
  if (v === undefined || v === '') return 'round-robin';
  if ((PICK_STRATEGIES as readonly string[]).includes(v)) return v as PickStrategy;
  const why = v === 'least-outstanding' || v === 'p2c' ? `${v} needs the caller's own requests in flight, which the registry does not see` : `strategy=${v.slice(0, 64)} is not a strategy`;
  throw invalid('strategy', why, `use one of ${PICK_STRATEGIES.join(', ')}; for ${v === 'p2c' ? 'p2c' : 'least-outstanding'} use an SDK view`);
}

function countOf(q: Query): number {
  const v = single(q, 'count');
  if (v === undefined || v === '') return 1;
  if (!/^\d{1,6}$/.test(v) || Number(v) < 1) throw invalid('count', `count=${v.slice(0, 64)} is not a whole number from 1`, 'ask for count=1 (the default) up to the number of fallbacks you will try, such as count=3');
  if (Number(v) > MAX_PICK_COUNT) throw limitExceeded('MAX_PICK_COUNT', 'count', `count=${v} is more than ${MAX_PICK_COUNT} instances`, `ask for at most ${MAX_PICK_COUNT}, or read the service (GET /v1/services/{service}) for all of them`);
  return Number(v);
}

function excludeOf(q: Query): string[] {
  const ids = list(q, 'exclude').flatMap((v) => v.split(',')).filter((v) => v !== '');
  if (ids.length > MAX_PICK_EXCLUDES) throw limitExceeded('MAX_PICK_EXCLUDES', 'exclude', `${ids.length} instances excluded, at most ${MAX_PICK_EXCLUDES}`, 'exclude only the instances this request already tried');
  return ids.map((id) => validateInstanceId(id, 'exclude'));
}

function keyOf(q: Query, strategy: PickStrategy): string | undefined {
  const v = single(q, 'key');
  if (v === undefined) return undefined;
  if (v.length > MAX_PICK_KEY_LENGTH) throw limitExceeded('MAX_PICK_KEY_LENGTH', 'key', `key is ${v.length} characters, at most ${MAX_PICK_KEY_LENGTH}`, 'hash a shorter key, such as the user or cart id alone');
  if (strategy !== 'consistent-hash') throw invalid('key', `key is used by strategy=consistent-hash only (this pick is ${strategy})`, 'add strategy=consistent-hash, or leave key out');
  return v;
}

export async function pickRoutes(app: FastifyInstance, ctx: ApiContext, pickers = new Pickers()): Promise<void> {
  const { engine, limits } = ctx;
  const reg = engine.registry;

  app.get('/v1/services/:service/pick', {
    schema: {
      tags: ['discovery'],
      summary: '(extension) Pick an instance of a service, with the SDK\'s balancers',
      querystring: pickQuerySchema,
      response: { 200: pickAnswerSchema, ...errorResponses },
    },
  }, async (req, reply) => {
    const q = req.query as Query;
    const service = serviceParam((req.params as Record<string, string>).service);
    const namespace = namespaceOf(q);
    const filter = { ...serviceQuery(q, limits), healthy: true, fields: null };
    const strategy = strategyOf(q);
    const key = keyOf(q, strategy);
    const zoneText = single(q, 'preferZone');
    const preferZone = zoneText === undefined || zoneText === '' ? undefined : validateLabel(zoneText, 'preferZone', 'preferZone');
    const count = countOf(q);
    const exclude = excludeOf(q);
    const fresh = await engine.readFreshness?.(bool(q, 'consistent'));
    const svc = reg.service(namespace, service);
    const protectThreshold = reg.serviceSettings(namespace, service)?.protectThreshold ?? null;
    const res = pickers.pick(svc, { namespace, service, filter, strategy, key, preferZone, count, exclude, protectThreshold });
    const revision = svc?.revision ?? reg.serviceRevision(namespace, service);
    if (res.instances.length === 0) {
      const filters = [filter.zone !== null ? `zone=${filter.zone}` : '', ...filter.tags.map((t) => `tag=${t}`), filter.version !== null ? `version=${filter.version}` : ''].filter((s) => s !== '');
      const what = res.matching === 0
        ? `service ${service} in namespace ${namespace} has no instance${filters.length > 0 ? ` matching ${filters.join('&')}` : ''}`
        : res.candidates === 0
          ? `none of the ${res.matching} instances of service ${service} in namespace ${namespace}${filters.length > 0 ? ` matching ${filters.join('&')}` : ''} can be picked (each is down, critical, taken out by an operator or of weight 0)`
          : `every one of the ${res.candidates} instances that could be picked is excluded`;
      throw new SwitchboardError('NO_INSTANCE', what, {
        retryAfterSec: 1,
        hint: `GET /v1/services/${service}${namespace === 'default' ? '' : `?namespace=${namespace}`} shows its instances and their health; retry once one is up, or widen the filters`,
      });
    }
    reply.header('cache-control', 'no-store').header('x-switchboard-index', String(revision));
    return {
      service,
      namespace,
      revision,
      strategy,
      instances: res.instances,
      candidates: res.candidates,
      ...(res.protected ? { protected: true } : {}),
      ...(fresh?.stale ? { stale: true, staleMs: Math.round(fresh.staleMs) } : {}),
      epoch: reg.epoch,
    };
  });
}
