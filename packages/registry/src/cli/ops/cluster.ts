/** `switchboard cluster remove`: the cluster membership command (ap mode). */
import { Argument, type Command } from 'commander';
import type { MemberRemoval } from '@switchboard/protocol';
import { nodeIdArg } from './args.js';
import { commonFlags, runWith, type Exit } from './common.js';
import { apiPath } from './http.js';

export function registerClusterCommands(program: Command, exit: Exit): void {
  const cluster = program.command('cluster').description('manage the members of an ap cluster');
  commonFlags(
    cluster
      .command('remove')
      .description('remove a member that is gone for good from the cluster (DELETE /v1/cluster/members/{id}), through any running node')
      .addArgument(new Argument('<id>', 'the node id of the member, as GET /v1/status lists it').argParser(nodeIdArg))
      .addHelpText(
        'after',
        [
          '',
          'Stop the member first: a reachable member is refused (MEMBER_REACHABLE). The removal is permanent and',
          'spreads to every node. Its persistent instances are taken over by the remaining nodes; its lease-bound',
          'instances are dropped (their leases lived on it). If the removed node is ever started again, its peers',
          'refuse it: to bring it back, start it with a new --node-id and an empty data directory.',
          '',
          'Example:',
          '  switchboard cluster remove sb-3 --addr http://sb-1:7700',
        ].join('\n'),
      ),
    false,
  ).action(
    runWith(exit, async (ctx, [id]) => {
      const r = await ctx.client.request<MemberRemoval>('DELETE', apiPath('v1', 'cluster', 'members', id as string));
      if (ctx.out.json) return ctx.out.jsonDoc(r), 0;
      ctx.out.line(`removed member ${r.member} from the cluster: ${r.adopted} persistent instance${r.adopted === 1 ? '' : 's'} adopted by this node, ${r.adoptedElsewhere} by other nodes, ${r.dropped} lease-bound instance${r.dropped === 1 ? '' : 's'} dropped`);
      ctx.out.note(r.notified.length > 0 ? `told ${r.notified.join(', ')}; nodes unreachable now learn it when they link to any node that knows` : 'no other node is reachable now: the others learn it when they link to this node');
      return 0;
    }),
  );
}
