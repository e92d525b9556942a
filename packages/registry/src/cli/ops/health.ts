/** `switchboard drain`, `history` and `check pass|warn|fail`: the health commands. */
import { Argument, Option, type Command } from 'commander';
import { formatDuration, type DrainResult, type Health, type InstanceHistory, type WriteResult } from '@switchboard/protocol';
import { checkIdArg, durationOrZeroArg, instanceIdArg, serviceArg } from './args.js';
import { commonFlags, instanceName, nsQuery, runWith, type Exit } from './common.js';
import { apiPath } from './http.js';
import { healthPaint, statusPaint, table, type Cell } from './output.js';

const instancePath = (service: string, id: string, ...rest: string[]): string => apiPath('v1', 'services', service, 'instances', id, ...rest);

/** The agent answers a drain only after the wait: the request may take that long and more. */
const DRAIN_SLACK_MS = 10_000;

/** The reports of `switchboard check`, as the API's report words. */
const REPORTS: [string, Health, string][] = [
  ['pass', 'passing', 'report that a ttl check passes'],
  ['warn', 'warning', 'report that a ttl check warns'],
  ['fail', 'critical', 'report that a ttl check fails'],
];

/** `switchboard check pass|warn|fail <service> <id> <checkId>`: PUT .../checks/{checkId}. */
function registerCheckCommands(program: Command, exit: Exit): void {
  const check = program.command('check').description('report into a ttl check of an instance (PUT /v1/services/{service}/instances/{id}/checks/{checkId})');
  for (const [word, status, description] of REPORTS) {
    commonFlags(
      check
        .command(word)
        .description(`${description}; it restarts the check's ttl`)
        .addArgument(new Argument('<service>', 'the service name').argParser(serviceArg))
        .addArgument(new Argument('<id>', 'the instance id').argParser(instanceIdArg))
        .addArgument(new Argument('<checkId>', 'the id of the ttl check (register --check ttl=30s,id=NAME)').argParser(checkIdArg))
        .option('--output <text>', "one line saying why, shown as the check's output (in the instance and its history)")
        .addHelpText('after', `\nWithout a report within its ttl the check turns critical. A report that changes nothing writes nothing.\n\nExample:\n  switchboard check ${word} jobs job-1 beat --output "queue depth 12"`),
      true,
    ).action(
      runWith(exit, async (ctx, [service, id, checkId]) => {
        const { output } = ctx.command.opts<{ output?: string }>();
        const path = instancePath(service as string, id as string, 'checks', checkId as string);
        const res = await ctx.client.request<WriteResult>('PUT', path, { query: nsQuery(ctx), body: { status, ...(output !== undefined ? { output } : {}) } });
        if (ctx.out.json) return ctx.out.jsonDoc(res), 0;
        ctx.out.line(`check ${checkId as string} of ${instanceName(ctx, service as string, id as string)} reported ${status}: revision ${res.revision}`);
        return 0;
      }),
    );
  }
}

export function registerHealthCommands(program: Command, exit: Exit): void {
  registerCheckCommands(program, exit);
  commonFlags(
    program
      .command('drain')
      .description('set an instance to draining and wait until every watcher of its service on the agent was sent the change (POST .../drain)')
      .addArgument(new Argument('<service>', 'the service name').argParser(serviceArg))
      .addArgument(new Argument('<id>', 'the instance id').argParser(instanceIdArg))
      .addOption(new Option('--wait <duration>', 'longest wait for the watchers, like 5s (0s: do not wait)').argParser(durationOrZeroArg).default(5_000, '5s'))
      .addHelpText('after', '\nWhen it returns, consumers watching through this agent have been sent the change: a shutdown\nscript can stop the process without a guessed sleep. Watchers not reached in time are counted.'),
    true,
  ).action(
    runWith(exit, async (ctx, [service, id]) => {
      const { wait } = ctx.command.opts<{ wait: number }>();
      const res = await ctx.client.request<DrainResult>('POST', instancePath(service as string, id as string, 'drain'), {
        query: { ...nsQuery(ctx), wait: formatDuration(wait) },
        answerTimeoutMs: wait + DRAIN_SLACK_MS,
      });
      if (ctx.out.json) return ctx.out.jsonDoc(res), 0;
      const name = instanceName(ctx, service as string, id as string);
      ctx.out.line(`${name} is draining (revision ${res.revision}): ${res.reached} of ${res.watchers} watcher${res.watchers === 1 ? '' : 's'} reached`);
      if (res.timedOut > 0) ctx.out.note(`note: ${res.timedOut} watcher${res.timedOut === 1 ? ' was' : 's were'} not reached within ${formatDuration(wait)}`);
      if (res.gone > 0) ctx.out.note(`note: ${res.gone} watcher${res.gone === 1 ? '' : 's'} disconnected meanwhile`);
      return 0;
    }),
  );

  commonFlags(
    program
      .command('history')
      .description('show the reason-coded history of an instance: its last state changes (GET .../history)')
      .addArgument(new Argument('<service>', 'the service name').argParser(serviceArg))
      .addArgument(new Argument('<id>', 'the instance id').argParser(instanceIdArg)),
    true,
  ).action(
    runWith(exit, async (ctx, [service, id]) => {
      const h = await ctx.client.request<InstanceHistory>('GET', instancePath(service as string, id as string, 'history'), { query: nsQuery(ctx) });
      if (ctx.out.json) return ctx.out.jsonDoc(h), 0;
      const st = ctx.out.style;
      if (!h.exists) ctx.out.note(`note: ${instanceName(ctx, h.service, h.id)} is gone; its history is kept for a while`);
      const rows: Cell[][] = h.history.map((e) => [
        String(e.revision),
        e.at ?? '-',
        { text: e.type === 'delete' ? `${e.reason} (deleted)` : e.reason, paint: e.type === 'delete' ? st.red : undefined },
        { text: e.status, paint: statusPaint(st, e.status) },
        { text: e.health, paint: healthPaint(st, e.health) },
        e.detail ?? '-',
      ]);
      for (const line of table(st, ['REV', 'TIME', 'REASON', 'STATUS', 'HEALTH', 'DETAIL'], rows)) ctx.out.line(line);
      return 0;
    }),
  );
}
