/**
 * `switchboard lease grant|keepalive|revoke`: leases by hand, for scripts that register
 * several instances under one lease (register --lease-id) and keep it alive themselves.
 * `register --ttl` does all three for one instance. The API lists no leases.
 */
import { Argument, Option, type Command } from 'commander';
import { formatDuration, type LeaseGrant, type WriteResult } from '@switchboard/protocol';
import { durationArg, leaseIdArg } from './args.js';
import { commonFlags, runWith, type Exit } from './common.js';
import { apiPath } from './http.js';

/** The line that confirms a lease granted or kept alive. */
export const leaseLine = (g: LeaseGrant, what: string): string => `lease ${g.leaseId} ${what} (ttl ${formatDuration(g.ttlMs)})`;

const leaseArg = (): Argument => new Argument('<leaseId>', 'the lease id, as lease grant printed it').argParser(leaseIdArg);

export function registerLeaseCommands(program: Command, exit: Exit): void {
  const lease = program.command('lease').description('create, keep alive and revoke leases (/v1/leases)');
  commonFlags(
    lease
      .command('grant')
      .description('create a lease (POST /v1/leases); it ends unless kept alive within its ttl')
      .addOption(new Option('--ttl <duration>', 'how long the lease lives without a keep-alive, like 10s').argParser(durationArg).makeOptionMandatory())
      .addHelpText('after', '\nExample:\n  LEASE=$(switchboard lease grant --ttl 30s --json | node -pe \'JSON.parse(require("fs").readFileSync(0)).leaseId\')\n  switchboard register web web-1 --address 10.0.0.5 --port 8080 --lease-id $LEASE'),
    false,
  ).action(
    runWith(exit, async (ctx) => {
      const { ttl } = ctx.command.opts<{ ttl: number }>();
      const g = await ctx.client.request<LeaseGrant>('POST', '/v1/leases', { body: { ttlMs: ttl } });
      if (ctx.out.json) ctx.out.jsonDoc(g);
      else ctx.out.line(leaseLine(g, 'granted'));
      return 0;
    }),
  );

  byId(lease, exit, 'keepalive', 'keep a lease alive for another ttl (PUT /v1/leases/{id}/keepalive); once, run it again within every ttl', async (ctx, leaseId) => {
    const g = await ctx.client.request<LeaseGrant>('PUT', apiPath('v1', 'leases', leaseId, 'keepalive'));
    return { doc: g, line: leaseLine(g, 'kept alive') };
  });
  byId(lease, exit, 'revoke', 'end a lease now and deregister its instances (DELETE /v1/leases/{id})', async (ctx, leaseId) => {
    const res = await ctx.client.request<WriteResult>('DELETE', apiPath('v1', 'leases', leaseId));
    return { doc: res, line: `revoked lease ${leaseId}: the instances bound to it, if any, are deregistered (revision ${res.revision})` };
  });
}

type Ctx = Parameters<Parameters<typeof runWith>[1]>[0];

/** A lease subcommand that takes the lease id and prints one line (or the answer with --json). */
function byId(lease: Command, exit: Exit, name: string, description: string, call: (ctx: Ctx, leaseId: string) => Promise<{ doc: object; line: string }>): void {
  commonFlags(lease.command(name).description(description).addArgument(leaseArg()), false).action(
    runWith(exit, async (ctx, [leaseId]) => {
      const { doc, line } = await call(ctx, leaseId as string);
      if (ctx.out.json) ctx.out.jsonDoc(doc);
      else ctx.out.line(line);
      return 0;
    }),
  );
}
