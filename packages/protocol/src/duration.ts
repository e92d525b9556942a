const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION = /^(\d{1,12})(ms|s|m|h)$/;

/** Parses `500ms`, `30s`, `5m`, `1h` into milliseconds; undefined when malformed. */
export function parseDuration(text: string): number | undefined {
  if (typeof text !== 'string') return undefined; // JSON bodies can hold anything
  const m = DURATION.exec(text.trim());
  if (!m) return undefined;
  return Number(m[1]) * (UNITS[m[2] as string] as number);
}

/** Formats milliseconds the way queries write them (the largest exact unit). */
export function formatDuration(ms: number): string {
  for (const unit of ['h', 'm', 's'] as const) {
    const size = UNITS[unit] as number;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
