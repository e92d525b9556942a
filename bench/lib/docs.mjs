/** Generated parts of the docs: a block between two HTML comments, replaced whole by each run. */
import { readFileSync, writeFileSync } from 'node:fs';

/**
 * Replaces the block that starts with `begin` (matched up to its first " (", so that the
 * command named in the marker may change) and ends with `end` in `file`; appends it when
 * the file has none yet. `lines` go between the markers.
 */
export function replaceGenerated(file, begin, end, lines) {
  const block = [begin, '', ...lines, end].join('\n');
  const old = readFileSync(file, 'utf8');
  const cut = begin.indexOf(' (');
  const a = old.indexOf(cut > 0 ? begin.slice(0, cut) : begin);
  const b = old.indexOf(end);
  const text = a >= 0 && b > a ? old.slice(0, a) + block + old.slice(b + end.length) : `${old.trimEnd()}\n\n${block}\n`;
  writeFileSync(file, text);
  return file;
}
