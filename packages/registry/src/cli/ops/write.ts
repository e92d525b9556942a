/** `switchboard register`, `deregister` and `set-status`: the commands that change the registry. */
import { Argument, Option, type Command } from 'commander';
import { ADMIN_STATUSES, PROTOCOLS, formatDuration, type LeaseGrant, type WriteResult } from '@switchboard/protocol';
import { addressArg, durationArg, instanceIdArg, leaseIdArg, metaArg, portArg, repeatable, serviceArg, tagArg, versionArg, weightArg, zoneArg } from './args.js';
import { CHECK_SYNTAX, checkArg, checkDeclarations, checkIds, sharedCheckId, type CheckArg } from './check-spec.js';
import { commonFlags, instanceName, interruption, nsQuery, runWith, sleep, usageError, type Context, type Exit } from './common.js';
import { ApiError, UnreachableError, apiPath } from './http.js';
import { leaseLine } from './lease.js';

interface RegisterFlags {
  address: string;
  port: number;
  leaseId?: string;
  ttl?: number;
  zone?: string;
  version?: string;
  tag?: string[];
  meta?: Record<string, string>;
  weight?: number;
  protocol?: string;
  check?: CheckArg[];
}

/** The registration body: only what was given, so that the agent's defaults apply. */
function registrationBody(f: RegisterFlags, leaseId: string | undefined): Record<string, unknown> {
  const body: Record<string, unknown> = { address: f.address, port: f.port };
  if (leaseId !== undefined) body.leaseId = leaseId;
  if (f.zone !== undefined) body.zone = f.zone;
  if (f.version !== undefined) body.version = f.version;
  if (f.tag !== undefined) body.tags = f.tag;
  if (f.meta !== undefined) body.metadata = f.meta;
  if (f.weight !== undefined) body.weight = f.weight;
  if (f.protocol !== undefined) body.protocol = f.protocol;
  if (f.check !== undefined) body.checks = checkDeclarations(f.check, f);
  return body;
}

/** `, checks http-0, beat` for the confirmation line; nothing without checks. */
function checksText(body: Record<string, unknown>): string {
  const checks = body.checks as Record<string, unknown>[] | undefined;
  return checks === undefined ? '' : `, check${checks.length === 1 ? '' : 's'} ${checkIds(checks).join(', ')}`;
}

const instancePath = (service: string, id: string, ...rest: string[]): string => apiPath('v1', 'services', service, 'instances', id, ...rest);

const REGISTER_HELP = `
Without --ttl or --lease-id the instance is persistent: it stays until \`switchboard deregister\`.

--check TYPE[:TARGET][,KEY=VALUE...]   a check the agent runs (http, tcp, grpc) or the service reports into (ttl)
  TARGET  http: a URL, or a path (/healthz) on the instance's own address and port; tcp, grpc: HOST:PORT;
          left out: the instance itself. It holds no comma.
  KEY     a field of the API's check declaration: id (default TYPE-N, N counting the --check options
          from 0), interval, timeout, jitter, ttl, expectBody, grpcService, passingThreshold,
          criticalThreshold, deregisterCriticalAfter. ttl=30s,... alone declares a ttl check.
  Report into a ttl check with \`switchboard check pass|warn|fail <service> <id> <checkId>\`.

Examples:
  switchboard register web web-1 --address 10.0.0.5 --port 8080 --check http:/healthz,interval=5s
  switchboard register jobs job-1 --address 10.0.0.6 --port 9000 --check ttl=30s,id=beat
  switchboard register db db-1 --address 10.0.0.7 --port 5432 --check tcp,criticalThreshold=3`;

async function register(ctx: Context, service: string, id: string, f: RegisterFlags, leaseId: string | undefined, signal?: AbortSignal): Promise<number> {
  const body = registrationBody(f, leaseId);
  const res = await ctx.client.request<WriteResult>('PUT', instancePath(service, id), {
    query: nsQuery(ctx),
    body,
    ...(signal ? { signal } : {}),
  });
  if (ctx.out.json) ctx.out.jsonLine(res);
  else ctx.out.line(`registered ${instanceName(ctx, service, id)} (${f.address}:${f.port}, ${leaseId === undefined ? 'persistent' : `lease ${leaseId}`}${checksText(body)}): revision ${res.revision}`);
  return res.revision;
}

async function grantLease(ctx: Context, ttlMs: number, signal?: AbortSignal): Promise<LeaseGrant> {
  const grant = await ctx.client.request<LeaseGrant>('POST', '/v1/leases', { body: { ttlMs }, ...(signal ? { signal } : {}) });
  if (ctx.out.json) ctx.out.jsonLine(grant);
  else ctx.out.line(leaseLine(grant, 'granted'));
  return grant;
}

const describeFailure = (err: ApiError | UnreachableError): string => (err instanceof ApiError ? `${err.code}: ${err.message}` : err.message);
const isFailure = (err: unknown): err is ApiError | UnreachableError => err instanceof ApiError || err instanceof UnreachableError;

/**
 * register --ttl: grant a lease, register under it, keep the lease alive until Ctrl-C, then
 * revoke it (which deregisters the instance at once). A lease that expired meanwhile (the
 * agent was unreachable for longer than the TTL) is replaced and the instance registered again.
 */
async function registerWithLease(ctx: Context, service: string, id: string, f: RegisterFlags, ttlMs: number): Promise<number> {
  const { out, client } = ctx;
  const stop = interruption();
  try {
    let granted: LeaseGrant | undefined;
    try {
      granted = await grantLease(ctx, ttlMs, stop.signal);
      await register(ctx, service, id, f, granted.leaseId, stop.signal);
    } catch (err) {
      // Do not leave an empty lease behind.
      if (granted) await client.request('DELETE', apiPath('v1', 'leases', granted.leaseId)).catch(() => undefined);
      if (stop.signal.aborted) return 130;
      throw err;
    }
    let lease: LeaseGrant = granted;
    const every = (): number => Math.max(100, Math.floor(lease.ttlMs / 3));
    out.note(`keeping lease ${lease.leaseId} alive every ${every() >= 1000 ? `${(every() / 1000).toFixed(1)}s` : `${every()}ms`}; press Ctrl-C to deregister and exit`);
    let failing = false;
    /** The lease is gone (expired): a new one is needed before registering again. */
    let leaseGone = false;
    /** The instance must be registered again (under a new lease) before keep-alives make sense. */
    let reregister = false;
    // A failure is reported when it starts or changes, not at every retry.
    let lastReport = '';
    const report = (text: string): void => {
      if (text !== lastReport) out.note(text);
      lastReport = text;
    };
    while (await sleep(failing ? Math.max(100, Math.floor(every() / 2)) : every(), stop.signal)) {
      try {
        if (reregister) {
          if (leaseGone) {
            lease = await grantLease(ctx, ttlMs, stop.signal);
            leaseGone = false;
          }
          await register(ctx, service, id, f, lease.leaseId, stop.signal);
          reregister = false;
        } else {
          // At most a third of the TTL: a node that takes the connection and never answers
          // must not hold the keep-alive past the lease's end (30 s by default otherwise).
          const g = await client.request<LeaseGrant>('PUT', apiPath('v1', 'leases', lease.leaseId, 'keepalive'), { signal: stop.signal, answerTimeoutMs: Math.max(250, Math.floor(lease.ttlMs / 3)) });
          lease = { leaseId: lease.leaseId, ttlMs: g.ttlMs };
          if (failing) out.note(`keep-alive of lease ${lease.leaseId} works again`);
        }
        failing = false;
        lastReport = '';
      } catch (err) {
        if (stop.signal.aborted) break;
        if (!isFailure(err)) throw err;
        failing = true;
        if (err instanceof ApiError && err.code === 'LEASE_NOT_FOUND') {
          out.note(`lease ${lease.leaseId} expired before it was renewed; registering ${instanceName(ctx, service, id)} again under a new lease`);
          leaseGone = true;
          reregister = true;
        } else {
          report(`${reregister ? 'registering again' : `keep-alive of lease ${lease.leaseId}`} failed: ${describeFailure(err)}; retrying until it works`);
        }
      }
    }
    // Ctrl-C: revoke the lease so that the instance goes away now rather than at expiry.
    try {
      const res = await client.request<WriteResult>('DELETE', apiPath('v1', 'leases', lease.leaseId));
      if (out.json) out.jsonLine(res);
      else out.line(`revoked lease ${lease.leaseId}: ${instanceName(ctx, service, id)} deregistered at revision ${res.revision}`);
      return 0;
    } catch (err) {
      if (err instanceof ApiError && err.code === 'LEASE_NOT_FOUND') {
        out.note(`lease ${lease.leaseId} had already expired; ${instanceName(ctx, service, id)} is gone`);
        return 0;
      }
      if (isFailure(err)) out.note(`could not revoke lease ${lease.leaseId}; ${instanceName(ctx, service, id)} goes away when it expires (within ${formatDuration(lease.ttlMs)})`);
      throw err;
    }
  } finally {
    stop.dispose();
  }
}

export function registerWriteCommands(program: Command, exit: Exit): void {
  commonFlags(
    program
      .command('register')
      .description('register or replace an instance (PUT /v1/services/{service}/instances/{id})')
      .addArgument(new Argument('<service>', 'the service name').argParser(serviceArg))
      .addArgument(new Argument('<id>', 'the instance id').argParser(instanceIdArg))
      .addOption(new Option('--address <host>', 'hostname or IP address of the instance').argParser(addressArg).makeOptionMandatory())
      .addOption(new Option('--port <port>', 'port of the instance (1-65535)').argParser(portArg).makeOptionMandatory())
      .addOption(new Option('--lease-id <lease>', 'bind the instance to this existing lease (kept alive by its owner)').argParser(leaseIdArg))
      .addOption(new Option('--ttl <duration>', 'create a lease with this TTL (like 10s), keep it alive until Ctrl-C, then revoke it').argParser(durationArg).conflicts('leaseId'))
      .addOption(new Option('--zone <zone>', 'the zone of the instance').argParser(zoneArg))
      .addOption(new Option('--version <version>', 'the semver version of the instance (like 1.4.2)').argParser(versionArg))
      .addOption(new Option('--tag <tag>', 'a tag (repeatable)').argParser(repeatable(tagArg)))
      .addOption(new Option('--meta <key=value>', 'a metadata entry (repeatable)').argParser(metaArg))
      .addOption(new Option('--weight <weight>', 'load-balancing weight, 0-10000 (default 100)').argParser(weightArg))
      .addOption(new Option('--protocol <protocol>', 'the protocol (default http)').choices(PROTOCOLS))
      .addOption(new Option('--check <spec>', `a health check (repeatable): ${CHECK_SYNTAX}`).argParser(checkArg))
      .addHelpText('after', REGISTER_HELP),
    true,
  ).action(
    runWith(exit, async (ctx, [service, id]) => {
      const f = ctx.command.opts<RegisterFlags>();
      const shared = f.check === undefined ? null : sharedCheckId(checkDeclarations(f.check, f));
      if (shared !== null) usageError(ctx.command, `two checks share the id ${shared}; give each its own (--check ...,id=NAME)`);
      if (f.ttl !== undefined) return registerWithLease(ctx, service as string, id as string, f, f.ttl);
      await register(ctx, service as string, id as string, f, f.leaseId);
      return 0;
    }),
  );

  commonFlags(
    program
      .command('deregister')
      .description('remove an instance (DELETE /v1/services/{service}/instances/{id})')
      .addArgument(new Argument('<service>', 'the service name').argParser(serviceArg))
      .addArgument(new Argument('<id>', 'the instance id').argParser(instanceIdArg)),
    true,
  ).action(
    runWith(exit, async (ctx, [service, id]) => {
      const res = await ctx.client.request<WriteResult>('DELETE', instancePath(service as string, id as string), { query: nsQuery(ctx) });
      if (ctx.out.json) ctx.out.jsonDoc(res);
      else ctx.out.line(`deregistered ${instanceName(ctx, service as string, id as string)}: revision ${res.revision}`);
      return 0;
    }),
  );

  commonFlags(
    program
      .command('set-status')
      .alias('status-set')
      .description('set the admin status of an instance (PUT /v1/services/{service}/instances/{id}/status)')
      .addArgument(new Argument('<service>', 'the service name').argParser(serviceArg))
      .addArgument(new Argument('<id>', 'the instance id').argParser(instanceIdArg))
      .addArgument(new Argument('<status>', 'the new admin status').choices(ADMIN_STATUSES))
      .addHelpText('after', '\nup: takes traffic; draining: finishing its work, no new traffic; out_of_service: takes no traffic.\nThe status survives re-registration.'),
    true,
  ).action(
    runWith(exit, async (ctx, [service, id, status]) => {
      const res = await ctx.client.request<WriteResult>('PUT', instancePath(service as string, id as string, 'status'), { query: nsQuery(ctx), body: { status } });
      if (ctx.out.json) ctx.out.jsonDoc(res);
      else ctx.out.line(`${instanceName(ctx, service as string, id as string)} is now ${status as string}: revision ${res.revision}`);
      return 0;
    }),
  );
}
