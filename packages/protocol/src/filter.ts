/**
 * The instance filters of `GET /v1/services/{service}` (healthy, zone, tag, version), as
 * one pure function, so that the registry's answers and a client's local view agree.
 */
import semver from 'semver';
import type { Instance } from './types.js';

export interface InstanceFilter {
  /** Only instances with status `up` and health not `critical`. */
  healthy: boolean;
  zone: string | null;
  /** Every tag must be present. */
  tags: readonly string[];
  /** An npm semver range (prereleases included); instances without a version never match. */
  version: string | null;
}

/** Status `up` and health not `critical`: what `healthy=true` keeps. */
export function isHealthy(i: Instance): boolean {
  return i.status === 'up' && i.health !== 'critical';
}

export function matchesFilter(i: Instance, f: InstanceFilter): boolean {
  if (f.healthy && !isHealthy(i)) return false;
  if (f.zone !== null && i.zone !== f.zone) return false;
  for (const t of f.tags) if (!i.tags.includes(t)) return false;
  if (f.version !== null && (i.version === null || !semver.satisfies(i.version, f.version, { includePrerelease: true }))) return false;
  return true;
}
