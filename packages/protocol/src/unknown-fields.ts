/**
 * Unknown body fields and query parameters. The contract (api-v1.md) has them ignored, so
 * that newer clients work with older nodes; a misspelt field (`leaseID`, `Zone`, `ttl`) is
 * then silently lost, and an instance meant to go with its lease stays for ever. The node
 * still ignores them, and says so: writes list them in `warnings` (an extension of the
 * answer), every route in a `Switchboard-Warning` header, each with the field meant when
 * one is close.
 */

/** At most this many fields are named in one answer (the rest are counted). */
export const MAX_FIELD_WARNINGS = 10;

/** Fields people coming from other registries send, and what to say about them. */
const SYNONYMS: Readonly<Record<string, string>> = {
  ttl: 'a lease carries the TTL: create one with POST /v1/leases {"ttlMs": 10000} and register with "leaseId"; without it the instance is persistent',
  ip: 'did you mean "address"?',
  host: 'did you mean "address"?',
  hostname: 'did you mean "address"?',
  meta: 'did you mean "metadata"?',
  lease: 'did you mean "leaseId"?',
};

/** Levenshtein distance of two short strings, stopping above `max`. */
function distance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      const v = Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
      cur.push(v);
      best = Math.min(best, v);
    }
    if (best > max) return max + 1;
    prev = cur;
  }
  return prev[b.length] as number;
}

/** The known field closest to `name` (same letters in another case, or two edits away), if any. */
export function closestField(name: string, known: readonly string[]): string | null {
  const lower = name.toLowerCase();
  const sameCase = known.find((k) => k.toLowerCase() === lower);
  if (sameCase !== undefined) return sameCase;
  if (name.length < 3) return null;
  let best: string | null = null;
  let bestD = 3;
  for (const k of known) {
    const d = distance(lower, k.toLowerCase(), 2);
    if (d < bestD) {
      best = k;
      bestD = d;
    }
  }
  return best;
}

/** Names longer than this are cut in a warning (the name is the client's input). */
const MAX_SHOWN_NAME = 64;

/** One line about one unknown field. */
function warningFor(what: 'field' | 'query parameter', name: string, known: readonly string[], path: string): string {
  const cut = name.length > MAX_SHOWN_NAME ? `${name.slice(0, MAX_SHOWN_NAME)}...` : name;
  const shown = JSON.stringify(path === '' ? cut : `${path}/${cut}`);
  const lower = name.toLowerCase();
  // Own keys only: "constructor" or "__proto__" are a client's field names, not advice.
  const synonym = Object.hasOwn(SYNONYMS, lower) ? SYNONYMS[lower] : undefined;
  const near = closestField(name, known);
  const advice = near !== null ? `did you mean "${near}"?` : synonym;
  return `unknown ${what} ${shown} ignored${advice ? `: ${advice}` : ''}`;
}

/**
 * The line of one more unknown field once MAX_FIELD_WARNINGS are written: capWarnings only
 * counts those, so no name is looked up for them (a body of 50,000 unknown keys would
 * otherwise cost the node a near-match search for each, about a second of its one thread).
 */
const COUNTED_ONLY = 'unknown field ignored';

/**
 * Warnings about the keys of `value` (when it is a plain object) that are not in `known`.
 * `path` prefixes the names shown (`instances/2`). Appends to `out`: a line each, the ones
 * after the first MAX_FIELD_WARNINGS only to be counted by capWarnings.
 */
export function unknownFieldWarnings(value: unknown, known: readonly string[], path = '', out: string[] = []): string[] {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return out;
  return warnUnknown('field', value, known, path, out);
}

/** The same for the query parameters of a request. */
export function unknownQueryWarnings(query: Record<string, unknown>, known: readonly string[]): string[] {
  return warnUnknown('query parameter', query, known, '', []);
}

function warnUnknown(what: 'field' | 'query parameter', value: object, known: readonly string[], path: string, out: string[]): string[] {
  for (const name of Object.keys(value)) {
    if (known.includes(name)) continue;
    out.push(out.length < MAX_FIELD_WARNINGS ? warningFor(what, name, known, path) : COUNTED_ONLY);
  }
  return out;
}

/** At most MAX_FIELD_WARNINGS lines; the rest counted in a last one. */
export function capWarnings(warnings: string[]): string[] {
  if (warnings.length <= MAX_FIELD_WARNINGS) return warnings;
  return [...warnings.slice(0, MAX_FIELD_WARNINGS - 1), `${warnings.length - MAX_FIELD_WARNINGS + 1} more unknown fields ignored`];
}

/** The warnings as one header value: printable ASCII only (the names are the client's input). */
export function warningHeader(warnings: string[]): string {
  return capWarnings(warnings)
    .join('; ')
    .replace(/[^\x20-\x7e]/g, '?');
}
