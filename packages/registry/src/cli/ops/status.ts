/**
 * `switchboard status` as text: the node's fields as key/value lines, the lists of records
 * (cluster members, active alerts, webhooks) as tables after them, durations rounded
 * (363ms, 3s, 1m5s). Fields this version does not know are shown too, by the same rules,
 * so that a newer agent's status is never hidden. `--json` prints the answer untouched.
 */
import type { AlertEpisode, AlertWebhookStatus, ClusterMember, NodeStatus } from '@switchboard/protocol';
import { dash, humanDuration, keyValues, table, type Cell, type Output, type Style } from './output.js';

const KNOWN_STATUS_KEYS = new Set(['nodeId', 'mode', 'version', 'epoch', 'revision', 'startedAt', 'uptimeMs', 'leases', 'instances', 'services', 'watchers', 'selfPreservation', 'checks', 'storage']);

type Row = Record<string, unknown>;

/** A list of records shown as a table under its own title. */
interface Section {
  title: string;
  lines: string[];
}

const isRecord = (v: unknown): v is Row => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Fields named like `lagMs`, `syncedMsAgo` or `downMs` hold milliseconds. */
const isDurationKey = (key: string): boolean => /Ms(Ago)?$/.test(key);

/** A value for display: durations rounded to a readable unit, fractions to 3 decimals, null as -. */
export function valueText(key: string, v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'number') {
    if (isDurationKey(key)) return humanDuration(v);
    return Number.isInteger(v) ? String(v) : String(Math.round(v * 1000) / 1000);
  }
  if (typeof v === 'string') return v;
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

const ago = (ms: number | null | undefined): string => (ms === null || ms === undefined ? 'never' : `${humanDuration(ms)} ago`);
const yesNo = (st: Style, ok: boolean): Cell => (ok ? { text: 'yes', paint: st.green } : { text: 'no', paint: st.red });

function membersTable(st: Style, members: ClusterMember[]): string[] {
  const rows: Cell[][] = members.map((m) => [
    m.self ? `${m.id} (self)` : m.id,
    dash(m.address),
    yesNo(st, m.reachable),
    m.self ? '-' : ago(m.lastSeenMs),
    m.lagMs === undefined ? '-' : humanDuration(m.lagMs),
    dash(m.revision),
  ]);
  return table(st, ['ID', 'ADDRESS', 'REACHABLE', 'LAST SEEN', 'LAG', 'REVISION'], rows);
}

function alertsTable(st: Style, alerts: AlertEpisode[], now: number): string[] {
  const rows: Cell[][] = alerts.map((a) => [
    a.alert,
    { text: a.severity, paint: a.severity === 'critical' ? st.red : st.yellow },
    a.subject,
    a.startedAt,
    humanDuration(now - Date.parse(a.startedAt)),
    a.summary,
  ]);
  return table(st, ['ALERT', 'SEVERITY', 'SUBJECT', 'SINCE', 'FOR', 'SUMMARY'], rows);
}

function webhooksTable(st: Style, hooks: AlertWebhookStatus[]): string[] {
  const rows: Cell[][] = hooks.map((w) => [w.url, String(w.pending), String(w.delivered), String(w.failed), String(w.dropped), dash(w.lastDeliveredAt), dash(w.lastError)]);
  return table(st, ['URL', 'PENDING', 'DELIVERED', 'FAILED', 'DROPPED', 'LAST DELIVERED', 'LAST ERROR'], rows);
}

/** A column title from a field name: `syncedMsAgo` is SYNCED AGO (its values are shown as durations). */
const columnTitle = (key: string): string => key.replace(/Ms(Ago)?$/, (_, a: string | undefined) => a ?? '').replace(/([a-z0-9])([A-Z])/g, '$1 $2').toUpperCase();

/** Any other list of records: a column per field, in the order the fields first appear. */
function recordsTable(st: Style, rows: Row[]): string[] {
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return table(st, keys.map(columnTitle), rows.map((r) => keys.map((k) => valueText(k, r[k]))));
}

function tableOf(st: Style, path: string, rows: Row[], now: number): string[] {
  if (path === 'cluster.members') return membersTable(st, rows as unknown as ClusterMember[]);
  if (path === 'alerts.active') return alertsTable(st, rows as unknown as AlertEpisode[], now);
  if (path === 'alerts.webhooks') return webhooksTable(st, rows as unknown as AlertWebhookStatus[]);
  return recordsTable(st, rows);
}

/**
 * Flattens a field: objects into dotted keys, lists of records into sections, other lists
 * joined. An object whose every value is a record (`cluster.peerSync`: one per peer) is a
 * table too, its entries' names in the first column.
 */
function flatten(st: Style, path: string, value: unknown, pairs: [string, Cell][], sections: Section[], now: number): void {
  const entries = isRecord(value) ? Object.entries(value) : [];
  if (entries.length > 0 && entries.every(([, v]) => isRecord(v) && Object.values(v).every((x) => !isRecord(x) && !Array.isArray(x)))) {
    pairs.push([path, `${entries.length} (below)`]);
    sections.push({ title: path, lines: recordsTable(st, entries.map(([id, v]) => ({ id, ...(v as Row) }))) });
  } else if (isRecord(value)) {
    for (const [k, v] of Object.entries(value)) flatten(st, `${path}.${k}`, v, pairs, sections, now);
  } else if (Array.isArray(value) && value.length > 0 && value.every(isRecord)) {
    pairs.push([path, `${value.length} (below)`]);
    sections.push({ title: path, lines: tableOf(st, path, value, now) });
  } else if (Array.isArray(value)) {
    pairs.push([path, value.length === 0 ? 'none' : value.map((v) => valueText(path, v)).join(', ')]);
  } else {
    pairs.push([path, valueText(path, value)]);
  }
}

function knownPairs(st: Style, s: NodeStatus): [string, Cell][] {
  const sp = s.selfPreservation?.engaged;
  return [
    ['node', dash(s.nodeId)],
    ['mode', dash(s.mode)],
    ['version', dash(s.version)],
    ['epoch', dash(s.epoch)],
    ['revision', dash(s.revision)],
    ['started', s.startedAt ? `${s.startedAt}${typeof s.uptimeMs === 'number' ? ` (up ${humanDuration(s.uptimeMs)})` : ''}` : '-'],
    ['services', dash(s.services)],
    ['instances', dash(s.instances)],
    ['leases', dash(s.leases)],
    ['watchers', dash(s.watchers)],
    ['self-preservation', sp === undefined ? '-' : sp ? { text: `engaged${s.selfPreservation.blockedLeases !== undefined ? `, ${s.selfPreservation.blockedLeases} lapsed leases held` : ''}${s.selfPreservation.reason ? `: ${s.selfPreservation.reason}` : ''}`, paint: st.yellow } : 'off'],
    ['checks', s.checks ? `${s.checks.scheduled} active, ${s.checks.running} running, ${s.checks.queued} queued (at most ${s.checks.maxConcurrent} at once)${typeof s.checks.denied === 'number' ? `, ${s.checks.denied} probes denied by the check networks` : ''}` : '-'],
    ['storage', s.storage ? (s.storage.durable ? `durable, ${dash(s.storage.dataDir)}` : { text: 'in memory (not durable)', paint: st.yellow }) : '-'],
  ];
}

export function printStatus(out: Output, s: NodeStatus & Record<string, unknown>, now = Date.now()): void {
  const st = out.style;
  const pairs = knownPairs(st, s);
  const sections: Section[] = [];
  for (const [k, v] of Object.entries(s)) if (!KNOWN_STATUS_KEYS.has(k)) flatten(st, k, v, pairs, sections, now);
  for (const line of keyValues(st, pairs)) out.line(line);
  for (const section of sections) {
    out.line();
    out.line(st.bold(section.title));
    for (const line of section.lines) out.line(`  ${line}`);
  }
}
