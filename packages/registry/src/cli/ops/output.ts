/**
 * Output of the operator commands: aligned tables, key/value blocks, JSON, and the readable
 * form of errors on stderr. Color only when stdout is a terminal and NO_COLOR is unset.
 */
import { ApiError, UnreachableError } from './http.js';

export type Paint = (text: string) => string;

export interface Style {
  readonly enabled: boolean;
  bold: Paint;
  dim: Paint;
  red: Paint;
  green: Paint;
  yellow: Paint;
  cyan: Paint;
}

function sgr(open: number, close: number, enabled: boolean): Paint {
  return enabled ? (t) => (t === '' ? t : `\x1b[${open}m${t}\x1b[${close}m`) : (t) => t;
}

export function makeStyle(enabled: boolean): Style {
  return {
    enabled,
    bold: sgr(1, 22, enabled),
    dim: sgr(2, 22, enabled),
    red: sgr(31, 39, enabled),
    green: sgr(32, 39, enabled),
    yellow: sgr(33, 39, enabled),
    cyan: sgr(36, 39, enabled),
  };
}

function colorFor(stream: NodeJS.WriteStream): boolean {
  const env = process.env;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '' && env.FORCE_COLOR !== '0') return true;
  return stream.isTTY === true && env.TERM !== 'dumb';
}

/** Where a command writes: stdout for results, stderr for diagnostics. */
export class Output {
  readonly style: Style;
  readonly errStyle: Style;

  constructor(
    readonly json: boolean,
    private readonly out: NodeJS.WriteStream = process.stdout,
    private readonly err: NodeJS.WriteStream = process.stderr,
  ) {
    this.style = makeStyle(colorFor(out));
    this.errStyle = makeStyle(colorFor(err));
  }

  line(text = ''): void {
    this.out.write(text + '\n');
  }

  /** A whole JSON document, indented (single answers). */
  jsonDoc(value: unknown): void {
    this.out.write(JSON.stringify(value, null, 2) + '\n');
  }

  /** One JSON value per line (streams: watch, register --ttl). */
  jsonLine(value: unknown): void {
    this.out.write((typeof value === 'string' ? value : JSON.stringify(value)) + '\n');
  }

  /** A diagnostic on stderr, prefixed with the command name. */
  note(text: string): void {
    this.err.write(text + '\n');
  }
}

/** A table cell: its text, and how to paint it once padded. */
export type Cell = string | { text: string; paint?: Paint };

/**
 * Control characters (C0, DEL, C1) written visibly as \\uXXXX: cells hold what registrants
 * sent (metadata values may hold any text), which must neither move the cursor, send the
 * terminal escape sequences, nor break a row over two lines.
 */
export const visible = (s: string): string => s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

const textOf = (c: Cell): string => visible(typeof c === 'string' ? c : c.text);

/** Display width of plain text: code points (control characters are made visible first). */
const width = (s: string): number => [...s].length;

/** Aligned columns separated by two spaces, a bold header line, no trailing spaces. */
export function table(style: Style, headers: string[], rows: Cell[][]): string[] {
  const widths = headers.map((h, i) => Math.max(width(h), ...rows.map((r) => width(textOf(r[i] ?? '')))));
  const render = (cells: Cell[], header: boolean): string => {
    const parts = cells.map((c, i) => {
      const text = textOf(c);
      const padded = i === cells.length - 1 ? text : text + ' '.repeat((widths[i] as number) - width(text));
      const paint = header ? style.bold : typeof c === 'string' ? undefined : c.paint;
      if (!paint) return padded;
      // Paint the text only, so that padding never carries escape codes.
      return paint(text) + padded.slice(text.length);
    });
    return parts.join('  ').replace(/\s+$/, '');
  };
  return [render(headers, true), ...rows.map((r) => render(r, false))];
}

/** `key   value` lines with the keys aligned. */
export function keyValues(style: Style, pairs: [string, Cell][]): string[] {
  const w = Math.max(...pairs.map(([k]) => width(k)));
  return pairs.map(([k, v]) => {
    const text = textOf(v);
    const painted = typeof v === 'string' || !v.paint ? text : v.paint(text);
    return `${style.bold(k)}${' '.repeat(w - width(k))}  ${painted}`;
  });
}

export const dash = (v: string | number | null | undefined): string => (v === null || v === undefined || v === '' ? '-' : String(v));

export function healthPaint(style: Style, health: string): Paint | undefined {
  if (health === 'passing') return style.green;
  if (health === 'warning') return style.yellow;
  if (health === 'critical') return style.red;
  return undefined;
}

export function statusPaint(style: Style, status: string): Paint | undefined {
  if (status === 'draining') return style.yellow;
  if (status === 'out_of_service') return style.red;
  return undefined;
}

/** 3723000 -> "1h2m3s"; under a second -> "450ms". */
export function humanDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  const parts: string[] = [];
  if (d) parts.push(`${d}d`);
  if (h) parts.push(`${h}h`);
  if (m) parts.push(`${m}m`);
  if (s || parts.length === 0) parts.push(`${s}s`);
  return parts.slice(0, 2).join('');
}

/** Prints an ApiError or UnreachableError readably: code, detail, then hint and extras. */
/**
 * What to do about a refused token, said in the CLI's terms; undefined for other errors.
 * `tokenFrom` names where the token came from (--token, SWITCHBOARD_TOKEN), null when none was given.
 */
export function authHint(err: ApiError, tokenFrom: string | null): string | undefined {
  if (err.code === 'UNAUTHENTICATED') {
    return tokenFrom === null
      ? 'this agent requires a token: give it with --token TOKEN or, better, SWITCHBOARD_TOKEN=TOKEN'
      : `the agent does not accept the token given with ${tokenFrom}: check it (a copy may have lost characters), or ask the agent's operator for one`;
  }
  if (err.code === 'FORBIDDEN') return `the token given with ${tokenFrom ?? '--token'} may only read; this command writes: use a token of scope write`;
  return undefined;
}

export function printFailure(out: Output, err: ApiError | UnreachableError, tokenFrom: string | null = null): void {
  const st = out.errStyle;
  if (err instanceof UnreachableError) {
    out.note(`${st.red('error:')} ${err.message}`);
    out.note(`  ${st.bold('hint:')} ${err.hint ?? 'start an agent with `switchboard agent`, or point --addr (or SWITCHBOARD_ADDR) at a running one'}`);
    return;
  }
  out.note(`${st.red('error:')} ${st.bold(err.code)} (HTTP ${err.status}): ${err.message}`);
  if (err.field !== undefined) out.note(`  ${st.bold('field:')} ${err.field}`);
  if (err.limit !== undefined) out.note(`  ${st.bold('limit:')} ${err.limit}`);
  if (err.retryAfterSec !== undefined) out.note(`  ${st.bold('retry after:')} ${err.retryAfterSec}s`);
  const hint = authHint(err, tokenFrom) ?? err.hint;
  if (hint !== undefined) out.note(`  ${st.bold('hint:')} ${hint}`);
}

/** HH:MM:SS.mmm in local time. */
export function clock(d = new Date()): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}
