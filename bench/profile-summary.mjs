#!/usr/bin/env node
/**
 * Summarises a V8 CPU profile (`node --cpu-prof`, a .cpuprofile file): the functions with
 * the most self time, self time per package / part of Node, and the heaviest inclusive
 * (self + callees) functions. No dependencies; `npm run bench -- --profile` writes one
 * profile per workload and prints this summary for each.
 *
 *   node bench/profile-summary.mjs FILE.cpuprofile [--top 20] [--json]
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { pathToFileURL } from 'node:url';

const SPECIAL = new Set(['(garbage collector)', '(idle)', '(program)', '(root)']);

/** Where a function lives: a package, a part of Node, Switchboard's own code, or V8. */
export function categoryOf(frame) {
  const { url, functionName } = frame;
  if (SPECIAL.has(functionName)) return functionName;
  if (!url) return '(native / V8 builtins)';
  if (url.startsWith('node:')) {
    const parts = url.slice(5).split('/');
    return parts[0] === 'internal' ? `node:internal/${parts[1] ?? ''}`.replace(/\.js$/, '') : `node:${parts[0]}`;
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 14).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  const m = /\/packages\/([^/]+)\/(?:dist\/)?(?:src\/)?(.*)$/.exec(url);
  if (m) return `switchboard/${m[1]}`;
  return 'other';
}

function shortUrl(url) {
  if (!url) return '';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) return url.slice(nm + 14);
  const p = url.indexOf('/packages/');
  if (p >= 0) return url.slice(p + 1);
  return url.replace(/^file:\/\//, '');
}

const keyOf = (f) => `${f.functionName || '(anonymous)'}\u0000${f.url}\u0000${f.lineNumber}`;
const labelOf = (f) => {
  const name = f.functionName || '(anonymous)';
  const where = shortUrl(f.url);
  return where ? `${name}  ${where}:${f.lineNumber + 1}` : name;
};

/**
 * Self and inclusive time per function and self time per category, in ms and in % of the
 * busy time (all samples minus idle).
 */
export function summarize(profile, { top = 20 } = {}) {
  const byId = new Map();
  const parent = new Map();
  for (const n of profile.nodes) byId.set(n.id, n);
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  // DevTools' convention: sample i lasts until sample i+1.
  const { samples, timeDeltas } = profile;
  const selfByNode = new Map();
  for (let i = 0; i < samples.length; i++) {
    const dt = (timeDeltas[i + 1] ?? 0) / 1000;
    selfByNode.set(samples[i], (selfByNode.get(samples[i]) ?? 0) + dt);
  }
  let total = 0;
  let idle = 0;
  const self = new Map();
  const cats = new Map();
  for (const [id, ms] of selfByNode) {
    const f = byId.get(id).callFrame;
    total += ms;
    if (f.functionName === '(idle)') idle += ms;
    const k = keyOf(f);
    const e = self.get(k) ?? { label: labelOf(f), category: categoryOf(f), ms: 0 };
    e.ms += ms;
    self.set(k, e);
    const c = categoryOf(f);
    cats.set(c, (cats.get(c) ?? 0) + ms);
  }
  // Inclusive time: each sample counts once for every distinct function on its stack.
  const incl = new Map();
  for (const [id, ms] of selfByNode) {
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur).callFrame;
      if (SPECIAL.has(f.functionName)) continue;
      const k = keyOf(f);
      if (seen.has(k)) continue;
      seen.add(k);
      const e = incl.get(k) ?? { label: labelOf(f), category: categoryOf(f), ms: 0 };
      e.ms += ms;
      incl.set(k, e);
    }
  }
  // Inclusive per category: samples with at least one frame of that category on the stack.
  const catIncl = new Map();
  for (const [id, ms] of selfByNode) {
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur).callFrame;
      if (SPECIAL.has(f.functionName)) continue;
      seen.add(categoryOf(f));
    }
    for (const c of seen) catIncl.set(c, (catIncl.get(c) ?? 0) + ms);
  }
  const busy = total - idle;
  const pct = (ms) => Math.round((1000 * ms) / Math.max(busy, 1e-9)) / 10;
  const r1 = (ms) => Math.round(ms * 10) / 10;
  const rows = (m, n) =>
    [...m.values()]
      .filter((e) => e.label !== '(idle)')
      .sort((a, b) => b.ms - a.ms)
      .slice(0, n)
      .map((e) => ({ function: e.label, category: e.category, ms: r1(e.ms), pctOfBusy: pct(e.ms) }));
  return {
    totalMs: r1(total),
    idleMs: r1(idle),
    busyMs: r1(busy),
    topSelf: rows(self, top),
    byCategory: [...cats.entries()]
      .filter(([c]) => c !== '(idle)')
      .sort((a, b) => b[1] - a[1])
      .map(([category, ms]) => ({ category, ms: r1(ms), pctOfBusy: pct(ms) })),
    byCategoryInclusive: [...catIncl.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([category, ms]) => ({ category, ms: r1(ms), pctOfBusy: pct(ms) })),
    topInclusive: rows(incl, top)
      .filter((e) => !/^\(anonymous\)$/.test(e.function))
      .slice(0, top),
  };
}

/** The summary as text. */
export function formatSummary(s, title = 'profile') {
  const out = [];
  out.push(`${title}: ${s.busyMs.toFixed(0)} ms busy of ${s.totalMs.toFixed(0)} ms sampled (idle ${s.idleMs.toFixed(0)} ms)`);
  out.push('  self time by package / part of Node:');
  for (const c of s.byCategory.slice(0, 12)) out.push(`    ${c.pctOfBusy.toFixed(1).padStart(5)}%  ${c.ms.toFixed(0).padStart(7)} ms  ${c.category}`);
  out.push('  time with the package on the stack (inclusive; a framework that calls the handler counts all below it):');
  for (const c of s.byCategoryInclusive.filter((c) => !c.category.startsWith('node:') && !c.category.startsWith('(')).slice(0, 8)) out.push(`    ${c.pctOfBusy.toFixed(1).padStart(5)}%  ${c.ms.toFixed(0).padStart(7)} ms  ${c.category}`);
  out.push('  top functions by self time:');
  for (const e of s.topSelf) out.push(`    ${e.pctOfBusy.toFixed(1).padStart(5)}%  ${e.ms.toFixed(0).padStart(7)} ms  ${e.function}`);
  out.push('  top functions by inclusive time (self + callees):');
  for (const e of s.topInclusive.slice(0, 15)) out.push(`    ${e.pctOfBusy.toFixed(1).padStart(5)}%  ${e.ms.toFixed(0).padStart(7)} ms  ${e.function}`);
  return out.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const files = args.filter((a) => !a.startsWith('--') && !/^\d+$/.test(a));
  const ti = args.indexOf('--top');
  const top = ti >= 0 ? Number(args[ti + 1]) : 20;
  if (files.length === 0) {
    process.stderr.write('usage: node bench/profile-summary.mjs FILE.cpuprofile [...] [--top N] [--json]\n');
    process.exit(2);
  }
  for (const f of files) {
    const s = summarize(JSON.parse(readFileSync(f, 'utf8')), { top });
    process.stdout.write(args.includes('--json') ? JSON.stringify(s, null, 2) + '\n' : formatSummary(s, basename(f)) + '\n\n');
  }
}
