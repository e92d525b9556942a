/** Time as the core sees it: milliseconds from an arbitrary, monotonic origin. */
export interface Clock {
  now(): number;
}

/** A clock that only moves when told to: for tests and the simulation. */
export class ManualClock implements Clock {
  private t: number;
  constructor(startMs = 0) {
    this.t = startMs;
  }
  now(): number {
    return this.t;
  }
  advance(ms: number): number {
    this.t += ms;
    return this.t;
  }
  set(ms: number): void {
    this.t = ms;
  }
}
