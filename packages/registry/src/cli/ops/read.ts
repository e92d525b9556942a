/** `switchboard status`, `services` and `instances`: the read-only commands. */
import { Argument, Option, type Command } from 'commander';
import { INSTANCE_FIELDS, type Instance, type NodeStatus, type ServiceAnswer, type ServiceList } from '@switchboard/protocol';
import { instanceIdArg, pickCountArg, repeatable, serviceArg, tagArg, versionRangeArg, zoneArg } from './args.js';
import { commonFlags, nsQuery, runWith, type Context, type Exit } from './common.js';
import { apiPath } from './http.js';
import { dash, healthPaint, humanDuration, statusPaint, table, type Cell, type Output, type Style } from './output.js';
import { printStatus } from './status.js';

const INSTANCE_HEADERS = ['ID', 'ADDRESS', 'PORT', 'ZONE', 'VERSION', 'STATUS', 'HEALTH', 'LEASE', 'TAGS'];
/** ap mode: whose each instance is, and whether its owner is out of reach of the answering node. */
const OWNERSHIP_HEADERS = ['OWNER', 'UNCONFIRMED'];

function ownershipCells(st: Style, i: Instance): Cell[] {
  return [dash(i.owner), i.unconfirmed ? { text: 'yes', paint: st.yellow } : '-'];
}

/** The instances table; ap answers (instances with an owner) get OWNER and UNCONFIRMED before TAGS. */
export function instanceTable(out: Output, instances: Instance[]): string[] {
  const st = out.style;
  const owned = instances.some((i) => i.owner !== undefined);
  const rows = instances.map((i): Cell[] => [
    i.id,
    i.address,
    String(i.port),
    dash(i.zone),
    dash(i.version),
    { text: i.status, paint: statusPaint(st, i.status) },
    { text: i.health, paint: healthPaint(st, i.health) },
    i.leaseId ?? { text: 'persistent', paint: st.dim },
    ...(owned ? ownershipCells(st, i) : []),
    i.tags.length === 0 ? '-' : i.tags.join(','),
  ]);
  const headers = owned ? [...INSTANCE_HEADERS.slice(0, -1), ...OWNERSHIP_HEADERS, 'TAGS'] : INSTANCE_HEADERS;
  return table(st, headers, rows);
}

/** One value of a projected instance as a table cell: lists joined by ",", maps as k=v. */
function fieldCell(v: unknown): Cell {
  if (v === null || v === undefined) return '-';
  if (Array.isArray(v)) return v.length === 0 ? '-' : v.map((x) => (typeof x === 'object' && x !== null ? JSON.stringify(x) : String(x))).join(',');
  if (typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>);
    return entries.length === 0 ? '-' : entries.map(([k, x]) => `${k}=${String(x)}`).join(',');
  }
  return String(v);
}

/** The table of a `--fields` answer: ID and the chosen fields, in the answer's order. */
function projectedTable(out: Output, instances: Instance[], fields: readonly string[]): string[] {
  const columns = INSTANCE_FIELDS.filter((f) => f === 'id' || fields.includes(f));
  const rows = instances.map((i) => columns.map((f) => fieldCell((i as unknown as Record<string, unknown>)[f])));
  return table(out.style, columns.map((f) => f.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()), rows);
}

/** A note on stderr when some instances are unconfirmed: their owner may be gone. */
function unconfirmedNote(out: Output, instances: Instance[]): void {
  const unconfirmed = instances.filter((i) => i.unconfirmed);
  if (unconfirmed.length === 0) return;
  const owners = [...new Set(unconfirmed.map((i) => i.owner ?? '?'))].sort();
  const n = unconfirmed.length;
  out.note(`note: ${n} instance${n === 1 ? ' is' : 's are'} unconfirmed: ${n === 1 ? 'its' : 'their'} owner${owners.length === 1 ? '' : 's'} (${owners.join(', ')}) ${owners.length === 1 ? 'is' : 'are'} unreachable from this node`);
}

export function registerReadCommands(program: Command, exit: Exit): void {
  registerPickCommand(program, exit);
  commonFlags(
    program.command('status').description("show the agent's node status (GET /v1/status)"),
    false,
  ).action(
    runWith(exit, async (ctx) => {
      const s = await ctx.client.request<NodeStatus & Record<string, unknown>>('GET', '/v1/status');
      if (ctx.out.json) ctx.out.jsonDoc(s);
      else printStatus(ctx.out, s);
      return 0;
    }),
  );

  commonFlags(
    program.command('services').description('list the services of a namespace with their instance counts (GET /v1/services)'),
    true,
  ).action(
    runWith(exit, async (ctx) => {
      const list = await ctx.client.request<ServiceList>('GET', '/v1/services', { query: nsQuery(ctx) });
      if (ctx.out.json) return ctx.out.jsonDoc(list), 0;
      if (list.services.length === 0) {
        ctx.out.note(`no services in namespace ${ctx.namespace ?? 'default'} (revision ${list.revision})`);
        return 0;
      }
      const st = ctx.out.style;
      const rows: Cell[][] = list.services.map((s) => [
        s.name,
        String(s.instances),
        { text: String(s.passing), paint: s.passing === 0 ? st.red : s.passing < s.instances ? st.yellow : st.green },
      ]);
      for (const line of table(st, ['NAME', 'INSTANCES', 'PASSING'], rows)) ctx.out.line(line);
      return 0;
    }),
  );

  commonFlags(
    withFilters(program
      .command('instances')
      .description('list the instances of a service (GET /v1/services/{service})')
      .addArgument(new Argument('<service>', 'the service name').argParser(serviceArg))
      .option('--healthy', 'only instances with status up and health not critical')
      .option('--fields <list>', 'only these instance fields, comma-separated (like address,port; the id always)')),
    true,
  ).action(
    runWith(exit, async (ctx, [service]) => {
      const o = ctx.command.opts<{ healthy?: boolean; zone?: string; tag?: string[]; version?: string; fields?: string }>();
      const answer = await listService(ctx, service as string, {
        healthy: o.healthy === true ? 'true' : undefined,
        zone: o.zone,
        tag: o.tag,
        version: o.version,
        fields: o.fields,
      });
      if (ctx.out.json) return ctx.out.jsonDoc(answer), 0;
      if (answer.protected) ctx.out.note('note: the protect threshold of this service triggered: unhealthy instances are included');
      staleNote(ctx.out, answer);
      if (answer.instances.length === 0) {
        const filtered = o.healthy || o.zone || o.tag || o.version;
        ctx.out.note(`no instances of ${answer.service}${filtered ? ' match the filters' : ''} (revision ${answer.revision})`);
        return 0;
      }
      const fields = o.fields?.split(',').map((f) => f.trim()).filter((f) => f !== '') ?? [];
      if (fields.length > 0) {
        // The agent checked the names (400 with the list to choose from); its answer has only those.
        for (const line of projectedTable(ctx.out, answer.instances, fields)) ctx.out.line(line);
        return 0;
      }
      unconfirmedNote(ctx.out, answer.instances);
      for (const line of instanceTable(ctx.out, answer.instances)) ctx.out.line(line);
      return 0;
    }),
  );
}

/** --zone, --tag and --version: the filters of a read (and a pick) of a service. */
function withFilters(cmd: Command): Command {
  return cmd
    .addOption(new Option('--zone <zone>', 'only instances in this zone').argParser(zoneArg))
    .addOption(new Option('--tag <tag>', 'only instances with this tag (repeatable: all must match)').argParser(repeatable(tagArg)))
    .addOption(new Option('--version <range>', 'only instances whose version is in this semver range (like ^1.2.0)').argParser(versionRangeArg));
}

/** A note on stderr when cp could not confirm the answer is current. */
function staleNote(out: Output, answer: { stale?: boolean; staleMs?: number }): void {
  if (answer.stale) out.note(`note: this answer may be stale${typeof answer.staleMs === 'number' ? ` by up to ${humanDuration(answer.staleMs)}` : ''}`);
}

/** `host:port` of an instance, with an IPv6 address in brackets. */
function hostPort(i: Instance): string {
  return `${i.address.includes(':') ? `[${i.address}]` : i.address}:${i.port}`;
}

/** `switchboard pick`: the agent picks (GET /v1/services/{service}/pick, an extension). */
function registerPickCommand(program: Command, exit: Exit): void {
  commonFlags(
    withFilters(program
      .command('pick')
      .description('pick an instance of a service with a balancer run by the agent, and print its host:port (GET /v1/services/{service}/pick)')
      .addArgument(new Argument('<service>', 'the service name').argParser(serviceArg))
      .addOption(new Option('--strategy <name>', 'the balancer').choices(['round-robin', 'random', 'weighted', 'consistent-hash']).default('round-robin'))
      .option('--key <key>', 'the consistent-hash key (with --strategy consistent-hash): the same key, the same instance')
      .addOption(new Option('--prefer-zone <zone>', 'prefer this zone while at least half of its instances can be picked').argParser(zoneArg))
      .addOption(new Option('--count <n>', 'print this many distinct instances, the pick first, then fallbacks').argParser(pickCountArg))
      .addOption(new Option('--exclude <id>', 'an instance not to pick (repeatable: already tried)').argParser(repeatable(instanceIdArg)))
      .option('--url', 'print a URL (the instance\'s protocol://host:port, like http://10.0.0.5:8080) instead of host:port')),
    true,
  ).action(
    runWith(exit, async (ctx, [service]) => {
      const o = ctx.command.opts<{ strategy: string; key?: string; preferZone?: string; count?: number; exclude?: string[]; zone?: string; tag?: string[]; version?: string; url?: boolean }>();
      const answer = await ctx.client.request<{ instances: Instance[]; protected?: boolean; stale?: boolean; staleMs?: number }>('GET', apiPath('v1', 'services', service as string, 'pick'), {
        query: {
          ...nsQuery(ctx),
          strategy: o.strategy,
          key: o.key,
          preferZone: o.preferZone,
          count: o.count === undefined ? undefined : String(o.count),
          exclude: o.exclude,
          zone: o.zone,
          tag: o.tag,
          version: o.version,
        },
      });
      if (ctx.out.json) return ctx.out.jsonDoc(answer), 0;
      if (answer.protected) ctx.out.note('note: the protect threshold of this service triggered: unhealthy instances may be picked');
      staleNote(ctx.out, answer);
      for (const i of answer.instances) ctx.out.line(o.url ? `${i.protocol}://${hostPort(i)}` : hostPort(i));
      return 0;
    }),
  );
}

/** GET /v1/services/{service}: shared by `instances` and the relisting of `watch`. */
export function listService(ctx: Context, service: string, filters: Record<string, string | string[] | undefined> = {}, signal?: AbortSignal): Promise<ServiceAnswer> {
  return ctx.client.request<ServiceAnswer>('GET', apiPath('v1', 'services', service), { query: { ...nsQuery(ctx), ...filters }, ...(signal ? { signal } : {}) });
}
