/**
 * Checks of command-line arguments before anything is sent. Each parser throws commander's
 * InvalidArgumentError, so that commander names the argument and main() exits with 2. The
 * rules are the contract's, through the validators of @switchboard/protocol; named limits
 * (lengths, counts) are left to the agent, whose configuration may differ from the defaults.
 */
import { InvalidArgumentError } from 'commander';
import {
  DEFAULT_LIMITS,
  SwitchboardError,
  isAddress,
  parseDuration,
  validateInstanceId,
  validateLabel,
  validateLeaseId,
  validateNamespace,
  validateNodeId,
  validateServiceName,
  validateVersion,
  validateVersionRange,
} from '@switchboard/protocol';

/** Limits as large as possible: the syntax is checked here, the sizes by the agent. */
const NO_LIMITS = Object.fromEntries(Object.keys(DEFAULT_LIMITS).map((k) => [k, Number.MAX_SAFE_INTEGER])) as unknown as typeof DEFAULT_LIMITS;

/** Runs a protocol validator and turns its failure into a usage error with its hint. */
export function checked<T>(run: () => T): T {
  try {
    return run();
  } catch (err) {
    if (err instanceof SwitchboardError) throw new InvalidArgumentError(err.hint ? `${err.message}; ${err.hint}.` : `${err.message}.`);
    throw err;
  }
}

export const serviceArg = (v: string): string => checked(() => validateServiceName(v));
export const instanceIdArg = (v: string): string => checked(() => validateInstanceId(v));
export const checkIdArg = (v: string): string => checked(() => validateInstanceId(v, 'checkId'));
export const namespaceArg = (v: string): string => checked(() => validateNamespace(v));
export const zoneArg = (v: string): string => checked(() => validateLabel(v, 'zone', 'zone'));
export const leaseIdArg = (v: string): string => checked(() => validateLeaseId(v));
export const nodeIdArg = (v: string): string => checked(() => validateNodeId(v));
export const versionArg = (v: string): string => checked(() => validateVersion(v, 'version', NO_LIMITS));
export const versionRangeArg = (v: string): string => checked(() => validateVersionRange(v));

export function addressArg(v: string): string {
  if (!isAddress(v)) throw new InvalidArgumentError(`address "${v}" is not a hostname or IP literal; give a hostname or IP address of at most 253 characters, such as 10.0.0.5.`);
  return v;
}

function integerIn(v: string, what: string, min: number, max: number): number {
  const n = /^\d{1,10}$/.test(v.trim()) ? Number(v.trim()) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${what} must be an integer from ${min} to ${max}.`);
  return n;
}

export const portArg = (v: string): number => integerIn(v, 'the port', 1, 65535);
export const weightArg = (v: string): number => integerIn(v, 'the weight', 0, 10000);
/** `pick --count`: 1 to the agent's MAX_PICK_COUNT (16). */
export const pickCountArg = (v: string): number => integerIn(v, 'the count', 1, 16);

export function revisionArg(v: string): number {
  if (!/^\d{1,15}$/.test(v.trim())) throw new InvalidArgumentError('a revision is a non-negative integer, such as 42.');
  return Number(v.trim());
}

/** A duration like 10s, 500ms, 1m, in milliseconds. */
export function durationArg(v: string): number {
  const ms = parseDuration(v);
  if (ms === undefined || ms <= 0) throw new InvalidArgumentError('write a duration like 10s, 500ms or 1m.');
  return ms;
}

/** A duration that may be zero, like 0s or 5s, in milliseconds. */
export function durationOrZeroArg(v: string): number {
  const ms = parseDuration(v);
  if (ms === undefined) throw new InvalidArgumentError('write a duration like 5s, 500ms or 0s.');
  return ms;
}

/** A repeatable option collecting its values in order. */
export function repeatable<T>(parse: (v: string) => T): (v: string, previous: T[] | undefined) => T[] {
  return (v, previous) => [...(previous ?? []), parse(v)];
}

export function tagArg(v: string): string {
  if (v === '') throw new InvalidArgumentError('a tag is a non-empty string.');
  return v;
}

/** `--meta key=value`, collected into an object; a key given twice is refused. */
export function metaArg(v: string, previous: Record<string, string> | undefined): Record<string, string> {
  const at = v.indexOf('=');
  if (at <= 0) throw new InvalidArgumentError(`write metadata as key=value, such as build=42.`);
  const key = v.slice(0, at);
  const out = { ...(previous ?? {}) };
  if (Object.prototype.hasOwnProperty.call(out, key)) throw new InvalidArgumentError(`metadata key "${key}" is given twice.`);
  out[key] = v.slice(at + 1);
  return out;
}
