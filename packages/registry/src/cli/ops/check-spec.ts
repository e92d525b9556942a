/**
 * `register --check SPEC`: a check declaration (docs/health.md) in one argument,
 *
 *   TYPE[:TARGET][,KEY=VALUE...]      http:/healthz,interval=5s   tcp   grpc:10.0.0.5:9090
 *   URL[,KEY=VALUE...]                http://10.0.0.9:9000/healthz (an http check of that URL)
 *   ttl=DURATION[,KEY=VALUE...]       ttl=30s,id=beat
 *
 * TYPE is http, tcp, grpc or ttl; TARGET is what the API takes (a URL for http, HOST:PORT
 * for tcp and grpc), or for http a path alone (/healthz) on the instance's own address and
 * port. A TARGET may hold commas (http:/search?tags=a,b): the fields start at the first
 * comma followed by KEY=VALUE. KEYs are the API's field names. Each declaration is checked by the protocol's own
 * validator, so that the CLI refuses what the API refuses, in the same words.
 */
import { InvalidArgumentError } from 'commander';
import { CHECK_TYPES, validateCheck } from '@switchboard/protocol';
import { checked } from './args.js';

/** The fields a spec may set, as the API names them. */
const CHECK_KEYS = ['id', 'interval', 'timeout', 'jitter', 'ttl', 'expectBody', 'grpcService', 'passingThreshold', 'criticalThreshold', 'deregisterCriticalAfter'];
const INTEGER_KEYS = new Set(['passingThreshold', 'criticalThreshold']);

export const CHECK_SYNTAX = 'TYPE[:TARGET][,KEY=VALUE...], like http:/healthz,interval=5s or ttl=30s,id=beat';

/** One parsed --check: the declaration, and for http a path still to be put on the instance's address. */
export interface CheckArg {
  declaration: Record<string, unknown>;
  path: string | null;
}

function refused(message: string): never {
  throw new InvalidArgumentError(`${message}; write --check ${CHECK_SYNTAX}.`);
}

/** `TYPE` or `TYPE:TARGET` (a leading `ttl=30s` is a ttl check and its first field). */
function typeAndTarget(head: string): { type: string; target: string | null; fields: string[] } {
  if (head.startsWith('ttl=')) return { type: 'ttl', target: null, fields: [head] };
  // A URL alone is an http check of that URL (http://HOST:PORT/path, as http:http://...).
  if (/^https?:\/\//i.test(head)) return { type: 'http', target: head, fields: [] };
  const colon = head.indexOf(':');
  if (colon < 0) return { type: head, target: null, fields: [] };
  return { type: head.slice(0, colon), target: head.slice(colon + 1), fields: [] };
}

function fieldsOf(items: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) refused(`"${item}" is not KEY=VALUE`);
    const key = item.slice(0, eq);
    const value = item.slice(eq + 1);
    if (!CHECK_KEYS.includes(key)) refused(`"${key}" is not a check field (known: ${CHECK_KEYS.join(', ')})`);
    if (key in out) refused(`"${key}" is given twice`);
    out[key] = INTEGER_KEYS.has(key) && /^\d{1,9}$/.test(value) ? Number(value) : value;
  }
  return out;
}

/** An http path alone: put on the instance's own address once --address and --port are known. */
function pathOf(type: string, target: string | null): string | null {
  if (type !== 'http' || target === null || !target.startsWith('/')) return null;
  // `//host/...` is a URL without its scheme, not a path: put on the instance's address it
  // would probe somewhere else than meant.
  if (target.startsWith('//')) refused(`"${target}" is neither a path nor a URL: give the path (http:/healthz) or the whole URL (http://HOST:PORT/healthz)`);
  if (/\s/.test(target)) refused(`the path "${target}" holds white space`);
  return target;
}

/**
 * The head (TYPE[:TARGET], or ttl=DURATION) and the KEY=VALUE items after it. The head
 * runs to the first comma followed by something shaped like KEY=VALUE, so that a target's
 * own commas stay in it; everything from there on must be fields (and is checked as such).
 */
function splitSpec(spec: string): { head: string; rest: string[] } {
  const items = spec.split(',');
  if ((items[0] ?? '').trim().startsWith('ttl=')) return { head: items[0] as string, rest: items.slice(1) };
  const firstField = items.findIndex((item, i) => i > 0 && /^\s*[A-Za-z]+=/.test(item));
  const cut = firstField < 0 ? items.length : firstField;
  return { head: items.slice(0, cut).join(','), rest: items.slice(cut) };
}

/** Parses one --check; repeatable, the index giving the default id (http-0, ttl-1) as the API does. */
export function checkArg(spec: string, previous: CheckArg[] | undefined): CheckArg[] {
  const index = previous?.length ?? 0;
  const { head, rest } = splitSpec(spec);
  const { type, target, fields } = typeAndTarget(head.trim());
  if (!(CHECK_TYPES as readonly string[]).includes(type)) refused(`the check type "${type}" is not one of ${CHECK_TYPES.join(', ')}`);
  const path = pathOf(type, target);
  const declaration: Record<string, unknown> = { type, ...(target !== null && path === null ? { target } : {}), ...fieldsOf([...fields, ...rest]) };
  checked(() => validateCheck(declaration, `checks/${index}`, index));
  return [...(previous ?? []), { declaration, path }];
}

/** `http://10.0.0.5:8080/healthz` for a path on the instance (https when its protocol is https). */
function instanceUrl(address: string, port: number, protocol: string | undefined, path: string): string {
  const host = address.includes(':') ? `[${address}]` : address;
  return `${protocol === 'https' ? 'https' : 'http'}://${host}:${port}${path}`;
}

/** The ids the agent gives the declarations: their own, or TYPE-INDEX. */
export const checkIds = (declarations: Record<string, unknown>[]): string[] => declarations.map((d, i) => (typeof d.id === 'string' ? d.id : `${String(d.type)}-${i}`));

/** The declarations to send, http paths put on the instance's address and port. */
export function checkDeclarations(args: CheckArg[], instance: { address: string; port: number; protocol?: string }): Record<string, unknown>[] {
  return args.map(({ declaration, path }) => (path === null ? declaration : { ...declaration, target: instanceUrl(instance.address, instance.port, instance.protocol, path) }));
}

/** An id two declarations share (the API refuses them), or null. */
export function sharedCheckId(declarations: Record<string, unknown>[]): string | null {
  const ids = checkIds(declarations);
  return ids.find((id, i) => ids.indexOf(id) !== i) ?? null;
}
