/**
 * A hybrid logical clock: versions that follow physical time while it moves forward and a
 * logical counter when it does not, so that a version made after seeing another is always
 * greater. Pure: the physical time comes from an injected clock.
 *
 * A version is a string that sorts like the clock: 11 base-36 digits of milliseconds,
 * 4 of the counter, then `@` and the node id, which breaks ties between nodes. Comparing
 * two versions is comparing the strings.
 *
 * Two rules keep one bad clock from winning every conflict:
 *  - the physical time is the wall clock read once at start plus the monotonic time since,
 *    so a wall clock stepped while the node runs does not move its versions;
 *  - a version from a peer more than `maxOffsetMs` ahead of this node's physical time is
 *    not followed (counted in `rejected`): this node's clock is not dragged into the
 *    future. A write that replaces a record still gets a greater version (`after`).
 */
import type { Clock } from './clock.js';

const P_DIGITS = 11;
const L_DIGITS = 4;
const L_MAX = 36 ** L_DIGITS - 1;

export interface HlcParts {
  physical: number;
  logical: number;
  node: string;
}

export function encodeVersion(p: HlcParts): string {
  return `${p.physical.toString(36).padStart(P_DIGITS, '0')}${p.logical.toString(36).padStart(L_DIGITS, '0')}@${p.node}`;
}

export function decodeVersion(v: string): HlcParts {
  return {
    physical: parseInt(v.slice(0, P_DIGITS), 36),
    logical: parseInt(v.slice(P_DIGITS, P_DIGITS + L_DIGITS), 36),
    node: v.slice(P_DIGITS + L_DIGITS + 1),
  };
}

/**
 * A version above every version of millisecond `physical` and below every later one: a
 * cut for "versions made at or before `physical`" (`v <= cut`).
 */
export function cutAt(physical: number): string {
  return `${encodeVersion({ physical, logical: L_MAX, node: '' })}\uffff`;
}

/** The physical milliseconds of a version. */
export function versionMs(v: string): number {
  return parseInt(v.slice(0, P_DIGITS), 36);
}

export interface HlcOptions {
  node: string;
  /** Wall-clock milliseconds since the Unix epoch, read once at start. */
  wallAtStart: number;
  /** Monotonic time; the physical clock is wallAtStart plus its progress. */
  monotonic: Clock;
  /** Versions further ahead than this are not followed. */
  maxOffsetMs: number;
}

export class HybridClock {
  private physical = 0;
  private logical = 0;
  private readonly monoAtStart: number;
  /** Versions from peers that were too far ahead to follow. */
  rejected = 0;

  constructor(private readonly opts: HlcOptions) {
    this.monoAtStart = opts.monotonic.now();
  }

  /** This node's physical time (ms since the Unix epoch, jump-free while running). */
  physicalNow(): number {
    return Math.floor(this.opts.wallAtStart + (this.opts.monotonic.now() - this.monoAtStart));
  }

  /** A new version, greater than every version made or followed before. */
  now(): string {
    const pt = this.physicalNow();
    if (pt > this.physical) {
      this.physical = pt;
      this.logical = 0;
    } else this.tick();
    return encodeVersion({ physical: this.physical, logical: this.logical, node: this.opts.node });
  }

  /** A new version greater than `v` too (a write that replaces the record of version `v`). */
  after(v: string): string {
    const mine = this.now();
    if (mine > v) return mine;
    const p = decodeVersion(v);
    // Not followed into the clock when it is too far ahead, but still exceeded.
    const logical = p.logical + 1;
    if (logical > L_MAX) return encodeVersion({ physical: p.physical + 1, logical: 0, node: this.opts.node });
    return encodeVersion({ physical: p.physical, logical, node: this.opts.node });
  }

  /** Follows a version seen from a peer, unless it is too far ahead. Returns whether it was followed. */
  observe(v: string): boolean {
    const p = decodeVersion(v);
    if (p.physical > this.physicalNow() + this.opts.maxOffsetMs) {
      this.rejected++;
      return false;
    }
    if (p.physical > this.physical) {
      this.physical = p.physical;
      this.logical = p.logical;
    } else if (p.physical === this.physical && p.logical > this.logical) this.logical = p.logical;
    return true;
  }

  /** The greatest version made or followed so far (for status). */
  last(): string {
    return encodeVersion({ physical: this.physical, logical: this.logical, node: this.opts.node });
  }

  private tick(): void {
    if (this.logical < L_MAX) this.logical++;
    else {
      this.physical++;
      this.logical = 0;
    }
  }
}
