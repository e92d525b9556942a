/**
 * cp: what a node knows of another node's clock (docs/cp.md, *One node writes*). A node
 * that sends its writes to the writer gives each one a time by which the writer must plan
 * it, and that time must be on the writer's clock: the writer's arrival time is no help,
 * since a write may arrive late (a stalled connection) and the sender stops waiting at a
 * time of its own.
 *
 * The writer tells its clock on the link (a reading when the link opens, one every second,
 * one in each answer). A reading `remote`, taken before this node got it at `local`, says that the
 * writer's clock minus this node's was at least `remote - local` at that moment, however
 * long the reading took to come. The bound keeps the best (largest) such reading and ages
 * it by the most two clocks may drift apart, so it stays a lower bound between readings:
 * a time computed from it is never later on the writer's clock than it is on this node's.
 *
 * Pure: the caller passes the times (ms, each side's monotonic clock).
 */

/**
 * How fast two nodes' monotonic clocks may drift apart (ms per ms): 20%. A monotonic
 * clock is never stepped, but it is slewed while the time daemon corrects an offset:
 * ntpd by at most 500 ppm, chrony by up to 83,333 ppm (8.3%, its default maxslewrate),
 * so two nodes slewing in opposite directions, plus their crystals, stay under 20%. The
 * writer tells its clock every second, so the bound loosens by at most about 0.2 s of a
 * write's 4.5 s between readings.
 */
export const MAX_CLOCK_DRIFT = 0.2;

export class ClockBound {
  private lo = Number.NEGATIVE_INFINITY;
  private loAt = 0;

  constructor(private readonly maxDrift = MAX_CLOCK_DRIFT) {}

  /** Whether any reading came yet. */
  get known(): boolean {
    return this.lo !== Number.NEGATIVE_INFINITY;
  }

  /** The other clock read `remote`, and this node got that reading at `local` on its own. */
  observe(remote: number, local: number): void {
    if (!Number.isFinite(remote) || !Number.isFinite(local)) return;
    const sample = remote - local;
    if (sample >= this.offsetAt(local)) {
      this.lo = sample;
      this.loAt = local;
    }
  }

  /** How long ago (ms, at `local`) the reading the bound rests on came; null before any reading. */
  ageAt(local: number): number | null {
    return this.known ? local - this.loAt : null;
  }

  /** A lower bound of (the other clock - this clock) at `local`; -Infinity before any reading. */
  offsetAt(local: number): number {
    if (!this.known) return Number.NEGATIVE_INFINITY;
    return this.lo - Math.abs(local - this.loAt) * this.maxDrift;
  }

  /** The other clock's time when this clock reads `local`, or earlier; -Infinity before any reading. */
  remoteAt(local: number): number {
    return local + this.offsetAt(local);
  }
}
