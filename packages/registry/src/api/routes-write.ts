/** Leases, registration, deregistration and admin status: the write side of API v1. */
import { isIP } from 'node:net';
import type { FastifyInstance } from 'fastify';
import {
  SwitchboardError,
  batchSchema,
  checkSpecSchema,
  instanceInputSchema,
  leaseGrantSchema,
  leaseRequestSchema,
  statusBodySchema,
  unknownFieldWarnings,
  validateBatch,
  validateInstanceInput,
  validateLeaseId,
  validateLeaseRequest,
  validateStatusBody,
  writeResultSchema,
  type CheckSpec,
  type InstanceInput,
} from '@switchboard/protocol';
import { denialText, targetHost, type CheckNetworks } from '../health/networks.js';
import { errorResponses, type ApiContext } from './context.js';
import { writeThrough } from '../engines/engine.js';
import { instanceTarget, namespaceOf, noQuerySchema, nsQuerySchema, refuseIfStrict, withWarnings, type Query } from './query.js';

type Params = Record<string, string>;

/** The body fields each write knows; others are ignored (api-v1.md) and listed in `warnings`. */
const INSTANCE_FIELDS = Object.keys(instanceInputSchema.properties);
const BATCH_ITEM_FIELDS = Object.keys(batchSchema.properties.instances.items.properties);
const CHECK_FIELDS = Object.keys(checkSpecSchema.properties);

/** An instance's unknown fields, its checks' included (called after validation: the shapes are right). */
function instanceWarnings(body: unknown, known: readonly string[], path = '', out: string[] = []): string[] {
  unknownFieldWarnings(body, known, path, out);
  const checks = (body as { checks?: unknown }).checks;
  if (Array.isArray(checks)) checks.forEach((c, i) => unknownFieldWarnings(c, CHECK_FIELDS, `${path === '' ? '' : `${path}/`}checks/${i}`, out));
  return out;
}

function batchWarnings(body: unknown): string[] {
  const out = unknownFieldWarnings(body, ['instances']);
  const items = (body as { instances?: unknown[] }).instances ?? [];
  items.forEach((item, i) => instanceWarnings(item, BATCH_ITEM_FIELDS, `instances/${i}`, out));
  return out;
}

const instanceParams = { type: 'object', properties: { service: { type: 'string' }, instanceId: { type: 'string' } } } as const;
const leaseParams = { type: 'object', properties: { leaseId: { type: 'string' } } } as const;

/**
 * A check target that is an IP literal the node's checks may not reach is refused (400
 * CHECK_TARGET_DENIED): it would never be probed. Other spellings of an IPv4 address
 * (`0x7f.1:5432`) are that address, in every check type. A name is checked when it is
 * probed (what it resolves to may change), and so is the instance's own address, which is
 * not refused: the instance may be legitimate, only checks against it are not run.
 */
function refuseDeniedTargets(checks: CheckSpec[], networks: CheckNetworks, item = ''): void {
  checks.forEach((spec, i) => {
    const host = spec.target === null ? null : targetHost(spec.type, spec.target);
    const denial = host !== null && isIP(host) !== 0 ? networks.denial(host) : null;
    if (denial === null || spec.target === null) return;
    // A target that spells the address another way (0x7f.1:5432, http://0251.0376.0251.0376/) is told which address that is.
    const spelled = spec.target.toLowerCase().includes(denial.address.toLowerCase()) ? '' : ` (the address ${denial.address})`;
    throw new SwitchboardError('CHECK_TARGET_DENIED', `${item === '' ? '' : `${item}: `}check target "${spec.target}"${spelled} ${denialText(denial, false)}: this node does not probe it`, {
      field: `${item === '' ? '' : `${item}/`}checks/${i}/target`,
      hint: "point the check at an address the registry's nodes may probe; the networks they may reach are their operator's setting (checkDenyNetworks, checkAllowNetworks)",
    });
  });
}

/**
 * A registration's checked input and the unknown fields it ignores (`path` prefixes their
 * names): the same for PUT /v1/services/{service}/instances/{id} and the session's `register`.
 */
export function checkedRegistration(body: unknown, ctx: ApiContext, path = '', warnings: string[] = []): { input: InstanceInput; warnings: string[] } {
  const input = validateInstanceInput(body, ctx.limits, path);
  refuseDeniedTargets(input.checks, ctx.engine.checkNetworks, path);
  return { input, warnings: instanceWarnings(body, INSTANCE_FIELDS, path, warnings) };
}

export async function writeRoutes(app: FastifyInstance, ctx: ApiContext): Promise<void> {
  const { engine, limits } = ctx;

  app.post('/v1/leases', {
    schema: { tags: ['leases'], summary: 'Create a lease for this client process', querystring: noQuerySchema, body: leaseRequestSchema, response: { 201: leaseGrantSchema, ...errorResponses } },
  }, async (req, reply) => {
    const ttlMs = validateLeaseRequest(req.body, limits);
    const warnings = refuseIfStrict(req, unknownFieldWarnings(req.body, ['ttlMs']));
    return reply.code(201).send(withWarnings(req, await engine.grantLease(ttlMs), warnings));
  });

  app.put('/v1/leases/:leaseId/keepalive', {
    schema: { tags: ['leases'], summary: 'Keep a lease alive for another TTL', params: leaseParams, querystring: noQuerySchema, response: { 200: leaseGrantSchema, ...errorResponses } },
  }, async (req) => engine.keepAlive(validateLeaseId((req.params as Params).leaseId)));

  app.delete('/v1/leases/:leaseId', {
    schema: { tags: ['leases'], summary: 'Revoke a lease and deregister its instances', params: leaseParams, querystring: noQuerySchema, response: { 200: writeResultSchema, ...errorResponses } },
  }, async (req) => withWarnings(req, { revision: await engine.revokeLease(validateLeaseId((req.params as Params).leaseId)) }));

  app.put('/v1/services/:service/instances/:instanceId', {
    schema: { tags: ['instances'], summary: 'Register or replace an instance (idempotent)', params: instanceParams, querystring: nsQuerySchema, body: instanceInputSchema, response: { 200: writeResultSchema, ...errorResponses } },
  }, async (req) => {
    const { namespace, service, id } = instanceTarget(req);
    const { input, warnings: unknown } = checkedRegistration(req.body, ctx);
    const warnings = refuseIfStrict(req, unknown);
    const written = writeThrough(engine, { type: 'register', namespace, service, instanceId: id, instance: req.body }, () => engine.register({ namespace, service, id, input }));
    return withWarnings(req, { revision: await written }, warnings);
  });

  app.post('/v1/instances/batch', {
    schema: { tags: ['instances'], summary: 'Register several instances, all or nothing', querystring: nsQuerySchema, body: batchSchema, response: { 200: writeResultSchema, ...errorResponses } },
  }, async (req) => {
    const items = validateBatch(req.body, limits, namespaceOf(req.query as Query));
    items.forEach((item, i) => refuseDeniedTargets(item.input.checks, engine.checkNetworks, `instances/${i}`));
    const warnings = refuseIfStrict(req, batchWarnings(req.body));
    return withWarnings(req, { revision: await engine.registerBatch(items) }, warnings);
  });

  app.delete('/v1/services/:service/instances/:instanceId', {
    schema: { tags: ['instances'], summary: 'Deregister an instance', params: instanceParams, querystring: nsQuerySchema, response: { 200: writeResultSchema, ...errorResponses } },
  }, async (req) => {
    const { namespace, service, id } = instanceTarget(req);
    const written = writeThrough(engine, { type: 'deregister', namespace, service, instanceId: id }, () => engine.deregister(namespace, service, id));
    return withWarnings(req, { revision: await written });
  });

  app.put('/v1/services/:service/instances/:instanceId/status', {
    schema: { tags: ['instances'], summary: 'Set the admin status (up, draining, out_of_service)', params: instanceParams, querystring: nsQuerySchema, body: statusBodySchema, response: { 200: writeResultSchema, ...errorResponses } },
  }, async (req) => {
    const { namespace, service, id } = instanceTarget(req);
    const status = validateStatusBody(req.body);
    const warnings = refuseIfStrict(req, unknownFieldWarnings(req.body, ['status']));
    return withWarnings(req, { revision: await engine.setStatus(namespace, service, id, status) }, warnings);
  });
}
