/** Formatting of the progress display and of the final table. */

export const fmtInt = (n) => (n === null || n === undefined || Number.isNaN(n) ? '-' : Math.round(n).toLocaleString('en-US'));
export const fmtMs = (v) => {
  if (v === null || v === undefined) return '-';
  if (v < 1) return `${v.toFixed(3)} ms`;
  if (v < 10) return `${v.toFixed(2)} ms`;
  if (v < 100) return `${v.toFixed(1)} ms`;
  return `${Math.round(v)} ms`;
};
export const fmtPct = (v) => (v === null || v === undefined ? '-' : `${Math.round(v)}%`);
export const fmtUs = (v) => (v === null || v === undefined ? '-' : `${v < 10 ? v.toFixed(1) : Math.round(v)} µs`);
export const fmtBytes = (b) => (b === null || b === undefined ? '-' : `${Math.round(b / (1024 * 1024))} MiB`);

/** A plain-text table; numbers are right-aligned. */
export function table(headers, rows) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i] ?? '').length)));
  const isNum = (s) => /^[-\d.,]+( ?[a-zA-Zµ/%]+(\/s)?)?$/.test(s) || s === '-';
  const line = (cells) => cells.map((c, i) => (isNum(String(c ?? '')) && i > 0 ? String(c ?? '').padStart(widths[i]) : String(c ?? '').padEnd(widths[i]))).join('  ');
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** One progress line per workload: rewritten in place on a TTY, throttled plain lines otherwise. */
export class Progress {
  constructor(stream = process.stdout) {
    this.stream = stream;
    this.tty = stream.isTTY === true;
    this.lastPlain = 0;
    this.current = '';
  }
  update(text, { force = false } = {}) {
    if (this.tty) {
      const cols = this.stream.columns || 120;
      this.current = text.length > cols - 1 ? text.slice(0, cols - 2) + '…' : text;
      this.stream.write(`\r\x1b[2K${this.current}`);
      return;
    }
    const t = Date.now();
    if (!force && t - this.lastPlain < 2000) return;
    this.lastPlain = t;
    this.stream.write(text + '\n');
  }
  /** Ends the workload's line with its final text. */
  done(text) {
    if (this.tty) this.stream.write(`\r\x1b[2K${text}\n`);
    else this.stream.write(text + '\n');
    this.current = '';
    this.lastPlain = 0;
  }
  /** A line of its own that does not disturb the progress line. */
  log(text) {
    if (this.tty && this.current) this.stream.write(`\r\x1b[2K${text}\n${this.current}`);
    else this.stream.write(text + '\n');
  }
}
