#!/usr/bin/env node
/**
 * Tables of a comparison run (bench/results/<timestamp>.json, written by
 * bench/compare/runner.mjs): a plain-text table for the terminal, and the comparison
 * section of docs/benchmarks.md, regenerated from the JSON alone (nothing typed by hand).
 *
 *   node bench/compare/report.mjs bench/results/<file>.json              markdown to stdout
 *   node bench/compare/report.mjs bench/results/<file>.json --write-docs rewrite the
 *        generated section of docs/benchmarks.md (between its markers; the rest of the file,
 *        written by people, is kept as it is); refused for a run with start failures, failed
 *        runs or a part of its suite only (docsRefusals), unless --force-docs is given
 *   node bench/compare/report.mjs bench/results/<file>.json --text       the terminal table
 *   node bench/compare/report.mjs --refresh-method    only the method and workload text of
 *        the generated section, from the runner as it is now (the figures are kept)
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { stat } from '../lib/harness.mjs';

const ROOT = resolve(new URL('../..', import.meta.url).pathname);
export const DOCS = join(ROOT, 'docs/benchmarks.md');
export const BEGIN = '<!-- BEGIN GENERATED: comparison (node bench/compare/report.mjs RESULTS.json --write-docs) -->';
export const END = '<!-- END GENERATED: comparison -->';
// The full suite's figures have a section of their own after the quick suite's (markers()).

// ---------------------------------------------------------------- formatting

const int = (n) => (n === null || n === undefined || Number.isNaN(n) ? '-' : Math.round(n).toLocaleString('en-US'));
const ms = (v) => {
  if (v === null || v === undefined || Number.isNaN(v)) return '-';
  if (v < 1) return `${v.toFixed(2)} ms`;
  if (v < 10) return `${v.toFixed(1)} ms`;
  return `${int(v)} ms`;
};
const mib = (b) => (b === null || b === undefined ? '-' : `${int(b / 1048576)} MiB`);
const pct = (v) => (v === null || v === undefined ? '-' : `${int(v)}%`);
const ratio = (v) => (v === null || v === undefined || !Number.isFinite(v) ? '-' : `${v >= 10 ? v.toFixed(0) : v.toFixed(2)}x`);
/** a / b, or null when either is missing (a failed row has no ratio). */
const div = (a, b) => (a === null || a === undefined || b === null || b === undefined || b === 0 ? null : a / b);

/** median [min-max] of a summary entry, formatted with f. */
export const mm = (s, f) => (!s ? '-' : s.n > 1 ? `${f(s.median)} [${f(s.min)}–${f(s.max)}]` : f(s.median));
const med = (s) => s?.median ?? null;

function rowName(r) {
  return r.variant ? `${r.label} (${r.variant})` : r.label;
}

/**
 * Switchboard's row that ratios are taken against: where a workload has Switchboard
 * variants (REST and session), the session's: a Switchboard client process talks to the
 * registry over its session, as a ZooKeeper client does over its own (docs/api.md).
 */
export function switchboardRow(c, extra = () => true) {
  const rows = c.rows.filter((r) => r.system === 'switchboard' && extra(r));
  return rows.find((r) => r.variant === 'session') ?? rows[0];
}

/**
 * `; per round 1.14x, 1.07x, 1.21x`: the ratio of a's throughput to b's in each round of
 * the interleaved runs (run i of every system, one after another), or '' with fewer than
 * two rounds. Each round's runs are minutes apart at most, so these show how much the
 * ratio itself moves with the machine; the target is still judged on the ratio of the medians.
 */
function perRound(a, b) {
  const byRun = new Map((b?.runs ?? []).filter((r) => !r.error && r.figures?.throughput > 0).map((r) => [r.run, r.figures.throughput]));
  const rs = (a?.runs ?? []).filter((r) => !r.error && byRun.has(r.run)).map((r) => ratio(r.figures.throughput / byRun.get(r.run)));
  return rs.length < 2 ? '' : `; per round ${rs.join(', ')}`;
}

/** ` (REST 12,345/s)`: the other Switchboard variant of a case, for the targets' text. */
function restAside(c) {
  const rest = c.rows.find((r) => r.system === 'switchboard' && r.variant === 'REST');
  const v = med(rest?.summary?.throughput);
  return v === null || v === undefined ? '' : ` (REST ${int(v)}/s)`;
}

/**
 * The rows of the table for one case: [system, main figure, more figures..., ratio].
 * Ratios are always "how many times better Switchboard is" (> 1: Switchboard better):
 * throughput Switchboard / peer; latency, CPU and memory peer / Switchboard.
 */
function caseTable(c) {
  const sb = switchboardRow(c);
  const S = (r) => r.summary ?? {};
  const failed = (r) => (r.runs.length > 0 && r.failedRuns === r.runs.length ? 'FAILED' : null);
  switch (c.workload) {
    case 'register':
    case 'read': {
      const unit = c.workload === 'register' ? 'registrations/s' : 'reads/s';
      const head = ['system', `${unit} (median [min–max])`, 'p50', 'p99', 'per server CPU-s', 'server CPU', 'load gen. CPU', 'errors', 'Switchboard ÷ this'];
      const rows = c.rows.map((r) => {
        const s = S(r);
        const ratioV = r === sb ? null : div(med(S(sb ?? {}).throughput), med(s.throughput));
        const genBound = (med(s.generatorCpuPct) ?? 0) >= 90 ? ' (client-bound)' : '';
        return [rowName(r), failed(r) ?? mm(s.throughput, int), ms(med(s.p50Ms)), ms(med(s.p99Ms)), int(med(s.perServerCpuSec)), pct(med(s.serverCpuPct)), pct(med(s.generatorCpuPct)) + genBound, int(med(s.errors)), r === sb ? '' : ratio(ratioV)];
      });
      return { head, rows };
    }
    case 'watch': {
      const head = ['system', 'p99 (median [min–max])', 'p50', 'max', 'first watcher p50 / p99', 'write ack p50 / p99', 'deliveries missed', 'server CPU', 'this p99 ÷ Switchboard p99'];
      const rows = c.rows.map((r) => {
        const s = S(r);
        return [rowName(r), failed(r) ?? mm(s.p99Ms, ms), ms(med(s.p50Ms)), ms(med(s.maxMs)), `${ms(med(s.firstP50Ms))} / ${ms(med(s.firstP99Ms))}`, `${ms(med(s.ackP50Ms))} / ${ms(med(s.ackP99Ms))}`, int(med(s.missed)), pct(med(s.serverCpuPct)), r === sb ? '' : ratio(div(med(s.p99Ms), med(S(sb ?? {}).p99Ms)))];
      });
      return { head, rows };
    }
    case 'renew': {
      const head = ['system', 'server CPU, % of a core (median [min–max])', 'CPU ms per 1,000 keep-alives', 'server RSS', 'leases lost in the window / not kept through setup', 'setup', 'this CPU ÷ Switchboard CPU'];
      const rows = c.rows.map((r) => {
        const s = S(r);
        return [rowName(r), failed(r) ?? mm(s.serverCpuPct, pct), int(med(s.cpuMsPerThousandKeepalives)), mib(med(s.serverRssBytes)), `${int(med(s.leasesLost))} / ${int(med(s.leasesLostInSetup))}`, med(s.setupMs) === null ? '-' : `${(med(s.setupMs) / 1000).toFixed(0)} s`, r === sb ? '' : ratio(div(med(s.serverCpuPct), med(S(sb ?? {}).serverCpuPct)))];
      });
      return { head, rows };
    }
    case 'failure': {
      const head = ['system', 'how it leaves', 'last watcher (median [min–max])', 'first watcher', 'this ÷ Switchboard'];
      const rows = c.rows.map((r) => {
        const s = S(r);
        const sbRow = c.rows.find((x) => x.system === 'switchboard' && x.signal === r.signal);
        return [r.label, r.signal, failed(r) ?? mm(s.lastMs, ms), ms(med(s.firstMs)), r.system === 'switchboard' ? '' : ratio(div(med(s.lastMs), med(S(sbRow ?? {}).lastMs)))];
      });
      return { head, rows };
    }
    case 'checks': {
      const head = ['system', 'probes/s (median [min–max])', 'expected', 'agent CPU-s per s', 'probes per agent CPU-s', 'agent RSS', 'passing at the end', 'errors'];
      const rows = c.rows.map((r) => {
        const s = S(r);
        return [rowName(r), failed(r) ?? mm(s.checksPerSec, int), int(med(s.expectedPerSec)), med(s.cpuSecPerSec) === null ? '-' : med(s.cpuSecPerSec).toFixed(3), int(med(s.checksPerCpuSec)), mib(med(s.serverRssBytes)), int(med(s.passing)), int(med(s.errors))];
      });
      return { head, rows };
    }
    case 'memory': {
      const head = ['system', 'bytes per instance (median [min–max])', 'RSS idle', `RSS with ${int(c.level)}`, 'this ÷ Switchboard'];
      const rows = c.rows.map((r) => {
        const s = S(r);
        return [rowName(r), failed(r) ?? mm(s.bytesPerInstance, int), mib(med(s.rssBeforeBytes)), mib(med(s.rssAfterBytes)), r === sb ? '' : ratio(div(med(s.bytesPerInstance), med(S(sb ?? {}).bytesPerInstance)))];
      });
      return { head, rows };
    }
    default:
      return { head: [], rows: [] };
  }
}

function caseTitle(c, out) {
  const w = out.workloads?.[c.workload];
  const lvl = { register: `${int(c.level)} client${c.level === 1 ? '' : 's'}`, read: `${int(c.level)} readers`, watch: `${int(c.level)} watcher${c.level === 1 ? '' : 's'}`, renew: `${int(c.level)} leases`, failure: `${c.level} watchers`, checks: `${int(c.level)} checks`, memory: `${int(c.level)} instances` }[c.workload];
  return `${(w?.title ?? c.workload).replace(/ \(100,000\)$/, '')}, ${lvl}`;
}

function textTable(head, rows) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i] ?? '').length)));
  const line = (cells) => cells.map((x, i) => (i === 0 ? String(x ?? '').padEnd(widths[i]) : String(x ?? '').padStart(widths[i]))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function mdTable(head, rows, { numeric = true } = {}) {
  const esc = (s) => String(s ?? '').replace(/\|/g, '\\|');
  return [`| ${head.map(esc).join(' | ')} |`, `|${head.map((_, i) => (i === 0 || !numeric ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
}

// ---------------------------------------------------------------- targets

/**
 * The peers of the run's suite (its systems other than Switchboard, before --systems); for
 * a results file written before the suite's systems were saved, the run's own.
 */
function suitePeers(out) {
  const systems = out.settings?.suiteSystems ?? out.settings?.systems ?? [...new Set(out.cases.flatMap((c) => c.rows.map((r) => r.system)))];
  return systems.filter((s) => s !== 'switchboard');
}

/** Why a peer has no figure in a case: it did not start, its runs failed, or it was not run. */
function whyMissing(out, c, system) {
  if (out.startFailures?.some((f) => f.system === system)) return `${system} did not start`;
  if (c.rows.some((r) => r.system === system)) return `${system} has no figure (its runs failed)`;
  return `${system} was not in this run`;
}

/**
 * The issue's targets, judged from the figures (null when the run lacks the figures). A
 * target against the best peer is judged only when every peer of the suite it names has a
 * figure: otherwise it is `met: null, notJudged: <why>` (the best of the others is not the
 * best peer).
 */
export function targets(out) {
  const found = (w, level) => out.cases.find((c) => c.workload === w && (level === undefined || c.level === level));
  const peers = suitePeers(out);
  // The best peer row (by `key`) among `systems` (rows passing `filter`), and the peers of
  // those without a figure.
  const peerBest = (c, key, { systems = peers, filter = () => true } = {}) => {
    let best = null;
    const have = new Set();
    for (const r of c.rows) {
      if (r.system === 'switchboard' || !systems.includes(r.system) || !filter(r)) continue;
      const v = med(r.summary?.[key]);
      if (v === null || v === undefined) continue;
      have.add(r.system);
      if (best === null || v > best.v) best = { v, name: rowName(r), row: r };
    }
    const missing = systems.filter((s) => !have.has(s)).map((s) => whyMissing(out, c, s));
    return best && { ...best, missing };
  };
  const judged = (target, value, met, best) => (best.missing.length === 0 ? { target, value, met } : { target, value: `${value}; not judged: ${best.missing.join(', ')}`, met: null, notJudged: best.missing.join(', ') });
  const res = [];
  const reg = found('register', 64) ?? found('register');
  if (reg) {
    const row = switchboardRow(reg);
    const sb = med(row?.summary?.throughput);
    const best = peerBest(reg, 'throughput');
    if (sb !== null && best) res.push(judged(`registrations at ${reg.level} clients ≥ 1.5x the best peer`, `${rowName(row)} ${int(sb)}/s${restAside(reg)} vs ${best.name} ${int(best.v)}/s = ${ratio(sb / best.v)}${perRound(row, best.row)}`, sb / best.v >= 1.5, best));
  }
  const rd = found('read');
  if (rd) {
    const row = switchboardRow(rd);
    const sb = med(row?.summary?.throughput);
    // Against ZooKeeper's bare listings (the issue's rule) and etcd's serializable reads.
    const listings = (r) => r.readMode !== 'curator' && r.readMode !== 'linearizable';
    const best = peerBest(rd, 'throughput', { filter: listings });
    if (sb !== null && best) res.push(judged('reads ≥ 1.5x the best peer (ZooKeeper bare listings, etcd serializable)', `${rowName(row)} ${int(sb)}/s${restAside(rd)} vs ${best.name} ${int(best.v)}/s = ${ratio(sb / best.v)}${perRound(row, best.row)}`, sb / best.v >= 1.5, best));
    // The issue's reference figures for reads were measured on 3-member clusters: judged
    // against those too when the run has them (when it has the single-member peers as
    // well, the line above is the stricter one).
    const clusters = peerBest(rd, 'throughput', { systems: peers.filter((s) => s === 'etcd3' || s === 'zookeeper3'), filter: listings });
    if (sb !== null && clusters) res.push(judged("reads ≥ 1.5x the best 3-member cluster (the issue's reference figures: ZooKeeper ensemble bare listings, etcd cluster serializable)", `${rowName(row)} ${int(sb)}/s${restAside(rd)} vs ${clusters.name} ${int(clusters.v)}/s = ${ratio(sb / clusters.v)}${perRound(row, clusters.row)}`, sb / clusters.v >= 1.5, clusters));
    // Like for like: a bare listing tells the client which instances there are and no more;
    // Switchboard's endpoints-only read (the `fields` projection) tells it that and where
    // each one listens. Judged separately, never instead of the full answer's lines above.
    const ep = rd.rows.find((r) => r.system === 'switchboard' && r.readMode === 'session-endpoints');
    const epv = med(ep?.summary?.throughput);
    for (const sys of ['zookeeper', 'zookeeper3']) {
      const bare = rd.rows.find((r) => r.system === sys && r.readMode === 'bare');
      const bv = med(bare?.summary?.throughput);
      if (epv !== null && epv !== undefined && bv !== null && bv !== undefined) res.push({ target: `reads like for like ≥ 1.5x ${rowName(bare)} (Switchboard answering the endpoints only, a bare listing the names only)`, value: `${rowName(ep)} ${int(epv)}/s vs ${int(bv)}/s = ${ratio(epv / bv)}${perRound(ep, bare)}`, met: epv / bv >= 1.5 });
      else if (epv !== null && epv !== undefined && peers.includes(sys)) res.push({ target: `reads like for like ≥ 1.5x ${sys} (bare getChildren) (Switchboard answering the endpoints only, a bare listing the names only)`, value: `${rowName(ep)} ${int(epv)}/s; not judged: ${whyMissing(out, rd, sys)}`, met: null, notJudged: whyMissing(out, rd, sys) });
    }
  }
  const wa = found('watch', 200);
  if (wa) {
    const sb = med(wa.rows.find((r) => r.system === 'switchboard')?.summary?.p99Ms);
    if (sb !== null) res.push({ target: 'watch p99 to 200 watchers < 10 ms', value: ms(sb), met: sb < 10 });
  }
  const fd = found('failure');
  if (fd) {
    // Issue 6: detection by the last watcher, with the TTL the run used.
    const ttl = fd.ttlMs ?? out.settings?.failureTtlMs ?? 4000;
    const limits = { SIGKILL: [1000, 'a SIGKILLed provider seen gone within 1 s'], SIGSTOP: [ttl + 1000, `a SIGSTOPped provider seen gone within the TTL + 1 s (${(ttl + 1000) / 1000} s)`], drain: [100, 'a drained provider seen gone within 100 ms'] };
    for (const [mode, [limit, text]] of Object.entries(limits)) {
      const sb = med(fd.rows.find((r) => r.system === 'switchboard' && r.signal === mode)?.summary?.lastMs);
      if (sb !== null && sb !== undefined) res.push({ target: text, value: `last watcher ${ms(sb)} (median)`, met: sb <= limit });
    }
  }
  const ck = found('checks');
  if (ck) {
    const s = ck.rows.find((r) => r.system === 'switchboard')?.summary ?? {};
    if (med(s.checksPerSec) !== null) res.push({ target: `${int(ck.level)} active HTTP checks at a 10 s interval: the agent's cost (no target; for sizing)`, value: `${int(med(s.checksPerSec))} checks/s on ${pct(med(s.serverCpuPct))} of a core = ${int(med(s.checksPerCpuSec))} checks per CPU-second, RSS ${mib(med(s.serverRssBytes))}`, met: null });
  }
  return res;
}

/**
 * The issue's own figures for the peers (measured with the same npm clients on a machine
 * like this one), next to this run's: a peer measured far from them would point at the
 * suite (its set-up, its clients) rather than at the peer. One row per figure the run has.
 */
export const PEER_REFERENCES = [
  { workload: 'register', level: 64, system: 'etcd', key: 'throughput', value: 3600, what: 'etcd, one member: lease-bound puts, 64 clients' },
  { workload: 'register', level: 64, system: 'zookeeper', key: 'throughput', value: 9200, what: 'ZooKeeper, standalone: ephemeral creates, 64 clients' },
  { workload: 'read', system: 'etcd3', readMode: 'serializable', key: 'throughput', value: 3200, what: 'etcd, 3 members: serializable prefix reads' },
  { workload: 'read', system: 'zookeeper3', readMode: 'bare', key: 'throughput', value: 12000, what: 'ZooKeeper, 3 nodes: bare child listings' },
  { workload: 'read', system: 'zookeeper3', readMode: 'curator', key: 'throughput', value: 800, what: "ZooKeeper, 3 nodes: listings with each child's data" },
  { workload: 'watch', level: 200, system: 'etcd', key: 'p99Ms', value: 19, what: 'etcd: watch p99, 200 watchers' },
  { workload: 'watch', level: 200, system: 'zookeeper', key: 'p99Ms', value: 140, what: 'ZooKeeper: watch p99, 200 watchers' },
];

/** [what, the issue's figure, this run's, this run ÷ the issue's] for each reference the run has. */
export function peerReferences(out) {
  const rows = [];
  for (const ref of PEER_REFERENCES) {
    const c = out.cases.find((x) => x.workload === ref.workload && (ref.level === undefined || x.level === ref.level));
    const r = c?.rows.find((x) => x.system === ref.system && (ref.readMode === undefined || x.readMode === ref.readMode));
    const v = med(r?.summary?.[ref.key]);
    if (v === null || v === undefined) continue;
    const f = ref.key === 'p99Ms' ? ms : (n) => `${int(n)}/s`;
    rows.push([ref.what, f(ref.value), f(v), ratio(v / ref.value)]);
  }
  return rows;
}

// ---------------------------------------------------------------- renderers

export function renderTable(out, { format = 'text' } = {}) {
  const parts = [];
  for (const c of out.cases) {
    const { head, rows } = caseTable(c);
    const title = caseTitle(c, out);
    if (format === 'md') parts.push(`#### ${title}\n\n${mdTable(head, rows)}`);
    else parts.push(`${title}\n${textTable(head, rows)}`);
  }
  const t = targets(out);
  if (t.length > 0) {
    const met = (x, no) => (x.notJudged ? 'not judged' : x.met === null ? '-' : x.met ? 'yes' : no);
    if (format === 'md') parts.push(`#### Targets (issues 4 and 6)\n\n${mdTable(['target', 'measured', 'met'], t.map((x) => [x.target, x.value, met(x, '**no**')]), { numeric: false })}`);
    else parts.push(`targets (issues 4 and 6)\n${textTable(['target', 'measured', 'met'], t.map((x) => [x.target, x.value, met(x, 'NO')]))}`);
  }
  const refs = peerReferences(out);
  if (refs.length > 0) {
    const head = ['peer figure', "the issue's", 'this run', 'this run ÷ the issue\'s'];
    if (format === 'md') parts.push(`#### The peers against the issue's reference figures\n\n${mdTable(head, refs)}`);
    else parts.push(`the peers against the issue's reference figures\n${textTable(head, refs)}`);
  }
  const disturbed = [];
  for (const c of out.cases) for (const r of c.rows) for (const run of r.runs) if ((run.cpu?.othersCpuPct ?? 0) > 25) disturbed.push(`${c.workload}@${c.level} ${rowName(r)} run ${run.run} (${pct(run.cpu.othersCpuPct)} of a core)`);
  if (disturbed.length > 0) parts.push(`${format === 'md' ? '**Disturbed runs**' : 'WARNING'}: other processes on the machine used CPU during ${disturbed.length} run(s): ${disturbed.slice(0, 8).join(', ')}${disturbed.length > 8 ? ', ...' : ''}.`);
  const speed = speedSpread(out);
  if (speed) parts.push(`${format === 'md' ? '**The machine\'s own speed**' : 'machine speed'}: a fixed CPU task (1,000 times 20 instances to JSON and back) timed by the runner before each of the ${speed.n} runs took ${ms(speed.median)} (median) [${ms(speed.min)}–${ms(speed.max)}]; the slowest check took ${pct(speed.spreadPct)} longer than the fastest (the machine ran up to ${pct(100 - (100 * speed.min) / speed.max)} slower at that moment).${speed.spreadPct > 25 ? ' A check is a short sample of one thread\'s CPU, taken between runs: it shows that the machine\'s speed moved during this run, not by how much during any one run; read differences between runs with that in mind.' : ''}`);
  if (out.startFailures?.length) parts.push(`${format === 'md' ? '**Peers that failed to start**' : 'FAILED TO START'}: ${out.startFailures.map((f) => `${f.system}: ${f.error.split('\n')[0]}`).join('; ')}`);
  return parts.join('\n\n');
}

/** The runner's speed checks over a run (none in results written before they were taken). */
function speedSpread(out) {
  const s = stat(out.cases.flatMap((c) => c.rows.flatMap((r) => r.runs.map((run) => run.speedCheckMs))));
  return s && { ...s, spreadPct: (100 * (s.max - s.min)) / s.min };
}

function profileSection(out) {
  if (!out.profiles?.length) return '';
  const lines = ['### Where Switchboard\'s CPU time goes (node --cpu-prof on the agent)', ''];
  if (out.profilesFrom) {
    const figs = [];
    for (const c of out.profilesFrom.cases ?? []) for (const r of c.rows) if (r.system === 'switchboard') figs.push(`${c.workload}@${c.level}${r.variant ? ` (${r.variant})` : ''}: ${c.workload === 'watch' ? `p99 ${ms(med(r.summary?.p99Ms))}` : `${int(med(r.summary?.throughput))}/s, server CPU ${pct(med(r.summary?.serverCpuPct))}`}`);
    lines.push(`From a separate profiled run, \`${out.profilesFrom.file}\` (\`${out.profilesFrom.command}\`, ${out.profilesFrom.startedAt}; Switchboard at commit ${out.profilesFrom.source?.commit?.slice(0, 12) ?? '-'}${out.profilesFrom.source?.uncommittedFilesInPackages ? ` with ${out.profilesFrom.source.uncommittedFilesInPackages} uncommitted files in packages/` : ''}; ${figs.join('; ')}). Self time as a share of the agent's busy time; each profile covers the agent's whole life, start-up included.`, '');
  }
  for (const p of out.profiles.slice(0, 6)) {
    if (!p.summary) continue;
    const s = p.summary;
    const name = p.file.split('/').pop();
    const cats = (s.byCategory ?? []).slice(0, 8);
    const top = (s.topSelf ?? []).slice(0, 8);
    lines.push(`**${name}**${s.busyMs !== undefined ? ` (busy ${int(s.busyMs)} ms)` : ''}`, '');
    if (cats.length) lines.push(mdTable(['where (self time)', 'ms', '% of busy'], cats.map((x) => [x.category, int(x.ms), `${x.pctOfBusy.toFixed(1)}%`])), '');
    if (top.length) lines.push(mdTable(['hottest functions (self time)', 'ms', '% of busy'], top.map((x) => [x.function, int(x.ms), `${x.pctOfBusy.toFixed(1)}%`])), '');
  }
  return lines.join('\n');
}

/**
 * The name of a results file's section in the docs: `quick`, `full`, or, for a full-suite
 * run of some workloads only (`--only`), `full-<workloads>` (its own section).
 */
function sectionOf(out) {
  if (out.suite !== 'full') return 'quick';
  const w = [...new Set(out.cases.map((c) => c.workload))];
  return w.length >= Object.keys(out.workloads ?? {}).length ? 'full' : `full-${w.join('-')}`;
}
const markers = (name) =>
  name === 'quick' ? [BEGIN, END] : [`<!-- BEGIN GENERATED: comparison-${name} (node bench/compare/report.mjs RESULTS.json --write-docs) -->`, `<!-- END GENERATED: comparison-${name} -->`];

/** A full-suite section: provenance and tables (the method is in the quick section). */
function renderFullDocs(out, resultsFile) {
  const rel = resultsFile ? relative(ROOT, resolve(resultsFile)) : '(results file)';
  const name = sectionOf(out);
  const L = [markers(name)[0], ''];
  if (name === 'full') L.push('### Full suite: every workload and level, 3-member clusters', '');
  else L.push(`### Full suite, ${name.slice(5).split('-').map((w) => out.workloads?.[w]?.title ?? w).join(', ')} (a run of its own)`, '');
  L.push(`*Generated* from \`${rel}\` (\`${out.command}\`, ${out.startedAt}; ${out.settings.runs} run${out.settings.runs > 1 ? 's' : ''} per figure${out.settings.runs > 1 ? ', median [min–max]' : ''}; ${out.settings.warmupMs / 1000} s warm-up + ${out.settings.durationMs / 1000} s measured; same machine, versions, method and rules as above) by \`node bench/compare/report.mjs ${rel} --write-docs\`.`, '');
  L.push(renderTable(out, { format: 'md' }).replace(/^#### /gm, '#### Full: '), '');
  L.push(markers(name)[1]);
  return L.join('\n');
}

/**
 * The method part of the generated section (rules, how peers and clients are run, the
 * workloads). With `all`, every workload the runner knows is listed, not only the run's.
 */
function methodText(out, { all }) {
  const L = [];
  L.push('### Method and fairness rules', '');
  for (const r of out.fairnessRules ?? []) L.push(`- ${r}`);
  L.push('');
  L.push('Peers as the suite starts them: etcd one member or three on loopback, each with its own data directory and ports, all flags default except names and URLs; ZooKeeper standalone or a 3-node ensemble from a generated `zoo.cfg` (tickTime 2000, `forceSync=yes`, `maxClientCnxns=0`), started as `java -cp <Debian jars> org.apache.zookeeper.server.quorum.QuorumPeerMain zoo.cfg` with the JVM\'s default heap; Switchboard `agent --data-dir DIR --config FILE` with `limits.maxWatchStreamsPerClient` raised (all watchers come from 127.0.0.1). Missing Debian packages are installed with apt-get by the suite itself.', '');
  L.push('Clients: `etcd3` with cockatiel `noop` for its per-host circuit breaker and its global retry policy (by default it retries 3 times and opens a breaker after 3 failures, which would hide slow calls), and `grpc.use_local_subchannel_pool` so that each simulated process really has its own connection; `node-zookeeper-client` with sessionTimeout = the TTL and no retries; Switchboard through undici (one keep-alive connection per process), `ws` for the session stream and `eventsource-parser` for SSE.', '');
  L.push('Ratios are always "how many times better Switchboard is": throughput Switchboard ÷ peer, latency, CPU and memory peer ÷ Switchboard; above 1 Switchboard is ahead, below 1 behind. A target is judged on the ratio of the medians; its line also gives the ratio in each round (run i of every system, one after another), which shows how much the ratio itself moves on this machine.', '');
  L.push('### Workloads', '');
  const seen = new Set((out.cases ?? []).map((c) => c.workload));
  for (const [k, w] of Object.entries(out.workloads ?? {})) {
    if (!all && !seen.has(k)) continue;
    const where = all && out.quickWorkloads && !out.quickWorkloads.includes(k) ? ' *Full suite only.*' : '';
    L.push(`- **${w.title}** (${w.unit}). ${w.measures} *Why:* ${w.why}${where}`);
  }
  L.push('');
  return L.join('\n');
}

/**
 * Rewrites only the method part of the quick suite's generated section (from "### Method"
 * to "### Results") from the runner as it is now, keeping every figure: for when the
 * workloads or rules change and the figures are to be regenerated later on a quiet machine.
 */
export async function refreshMethodText(docsFile = DOCS) {
  const { FAIRNESS_RULES, WORKLOADS, QUICK_WORKLOADS } = await import('./runner.mjs');
  const old = readFileSync(docsFile, 'utf8');
  const a = old.indexOf(BEGIN);
  const m = old.indexOf('### Method and fairness rules', a);
  const r = old.indexOf('### Results', m);
  if (a < 0 || m < 0 || r < 0 || r > old.indexOf(END, a)) throw new Error(`${docsFile} has no generated method part between its markers`);
  const text = methodText({ fairnessRules: FAIRNESS_RULES, workloads: WORKLOADS, quickWorkloads: QUICK_WORKLOADS }, { all: true });
  writeFileSync(docsFile, old.slice(0, m) + text + '\n' + old.slice(r));
  return docsFile;
}

/** The generated section of docs/benchmarks.md. */
export function renderDocs(out, resultsFile) {
  if (out.suite === 'full') return renderFullDocs(out, resultsFile);
  const m = out.machine;
  const v = out.versions ?? {};
  const rel = resultsFile ? relative(ROOT, resolve(resultsFile)) : '(results file)';
  const L = [];
  L.push(BEGIN, '');
  L.push(`*This part is generated:* from \`${rel}\` (suite \`${out.suite}\`, ${out.startedAt}) by \`node bench/compare/report.mjs ${rel}${out.profilesFrom ? ` --profiles-from ${out.profilesFrom.file}` : ''} --write-docs\`; to reproduce: \`npm run bench\` (quick) or \`npm run bench -- --suite full\`, then that command on the new results file (or add \`--write-docs\` to the bench command).`, '');
  L.push('### Machine and versions', '');
  L.push(
    mdTable(
      ['what', 'value'],
      [
        ['CPU', `${m.cpus} cores, ${m.cpuModel}`],
        ['memory', mib(m.memoryBytes)],
        ['OS', m.os],
        ['disk of the data directories', m.tmpDisk ?? '-'],
        ['load average at start', (m.loadAverageAtStart ?? []).join(', ')],
        ['Node.js (agent and load generator)', m.node],
        ['Switchboard', `${v.switchboard ?? '-'} (commit ${out.source?.commit?.slice(0, 12) ?? '-'}${out.source?.uncommittedFilesInPackages ? `, ${out.source.uncommittedFilesInPackages} uncommitted files in packages/` : ''})`],
        ['etcd', `${v.etcdBinary ?? '-'} (Debian etcd-server ${v['etcd-server'] ?? '-'})`],
        ['ZooKeeper', `Debian zookeeper ${v.zookeeper ?? '-'} on ${v.java ?? 'Java'}`],
        ['clients', `etcd3 ${v.etcd3Client ?? '-'}, node-zookeeper-client ${v.zookeeperClient ?? '-'}, undici (Switchboard)`],
        ['runs', `${out.settings.runs} per figure, ${out.settings.warmupMs / 1000} s warm-up + ${out.settings.durationMs / 1000} s measured`],
      ],
      { numeric: false },
    ),
    '',
  );
  L.push(methodText(out, { all: false }));
  L.push('### Results', '');
  L.push(renderTable(out, { format: 'md' }), '');
  const prof = profileSection(out);
  // (the profile run's own commands are in its results file)
  if (prof) L.push(prof, '');
  L.push(END);
  return L.join('\n');
}

/**
 * Why a run must not replace the generated figures of docs/benchmarks.md ([] when it may):
 * a system that did not start, failed runs, or other workloads, levels or systems than its
 * suite's (--only, --level, --systems): the tables and the text written about them would
 * lose what the run lacks. (A results file written before the suite's systems and
 * workloads were saved is checked for failures only.) --force-docs writes it anyway.
 */
export function docsRefusals(out) {
  const why = [];
  if (out.startFailures?.length) why.push(`${out.startFailures.map((f) => f.system).join(', ')} did not start`);
  const failed = [];
  for (const c of out.cases) for (const r of c.rows) if (r.failedRuns > 0) failed.push(`${c.workload}@${c.level} ${rowName(r)} (${r.failedRuns} of ${r.runs.length})`);
  if (failed.length > 0) why.push(`failed runs: ${failed.slice(0, 6).join(', ')}${failed.length > 6 ? ', ...' : ''}`);
  const s = out.settings ?? {};
  const same = (a, b) => a.length === b.length && a.every((x) => b.includes(x));
  if (s.suiteSystems && !same(s.systems ?? [], s.suiteSystems)) why.push(`its systems (${(s.systems ?? []).join(', ')}) are not the ${out.suite} suite's (${s.suiteSystems.join(', ')})`);
  const cases = out.cases.map((c) => `${c.workload}@${c.level}`);
  if (s.suiteCases && !same(cases, s.suiteCases)) why.push(`its workloads (${cases.join(', ')}) are not the ${out.suite} suite's (${s.suiteCases.join(', ')})`);
  return why;
}

/** Rewrites the generated section of docs/benchmarks.md, keeping everything else. */
export function writeDocs(out, resultsFile, docsFile = DOCS) {
  const section = renderDocs(out, resultsFile);
  const full = out.suite === 'full';
  const [begin, end] = markers(sectionOf(out));
  let text;
  if (!existsSync(docsFile)) {
    text = `# Benchmarks\n\n${section}\n`;
  } else {
      const old = readFileSync(docsFile, 'utf8');
      const a = old.indexOf(begin.slice(0, begin.indexOf(' (') + 2));
      const b = old.indexOf(end);
      if (a >= 0 && b > a) text = old.slice(0, a) + section + old.slice(b + end.length);
      else if (full && old.lastIndexOf('<!-- END GENERATED: comparison') >= 0) {
        // First time: right after the last generated comparison section.
        const last = old.lastIndexOf('<!-- END GENERATED: comparison');
        const at = old.indexOf('-->', last) + 3;
        text = `${old.slice(0, at)}\n\n${section}${old.slice(at)}`;
      } else text = `${old.trimEnd()}\n\n${section}\n`;
    }
    writeFileSync(docsFile, text);
    return docsFile;
  }

  if (import.meta.url === `file://${process.argv[1]}`) {
    const args = process.argv.slice(2);
    if (args[0] === '--refresh-method') {
      // No results file: the method text only, from the runner's current workloads and rules.
      // (Not awaited at the top level: the runner imports this module back.)
      refreshMethodText().then(
        (f) => process.stdout.write(`${f}: method and workloads regenerated, figures kept\n`),
        (err) => {
          process.stderr.write(`${err.message}\n`);
          process.exitCode = 1;
        },
      );
    } else {
    const file = args.find((a, i) => !a.startsWith('--') && args[i - 1] !== '--profiles-from');
    if (!file) {
      process.stderr.write('usage: node bench/compare/report.mjs bench/results/<file>.json [--write-docs [--force-docs] | --text] [--profiles-from bench/results/<profiled run>.json]\n');
      process.exit(2);
    }
    const out = JSON.parse(readFileSync(file, 'utf8'));
    const pi = args.indexOf('--profiles-from');
    if (pi >= 0) {
      // The CPU profiles of another run (npm run bench -- --profile ...), for the docs.
      const pf = args[pi + 1];
      const p = JSON.parse(readFileSync(pf, 'utf8'));
      out.profiles = p.profiles ?? [];
      out.profilesFrom = { file: relative(ROOT, resolve(pf)), command: p.command, startedAt: p.startedAt, cases: p.cases, source: p.source };
    }
    if (out.kind !== 'comparison') {
      process.stderr.write(`${file} is not a comparison run (written by bench/run.mjs --suite standalone?)\n`);
      process.exit(2);
    }
    const refusals = args.includes('--write-docs') ? docsRefusals(out) : [];
    if (refusals.length > 0 && !args.includes('--force-docs')) {
      process.stderr.write(`${file}: docs/benchmarks.md not written: ${refusals.join('; ')}. Add --force-docs to write it anyway.\n`);
      process.exit(2);
    }
    if (args.includes('--write-docs')) {
      const docs = writeDocs(out, file);
      // The method lists every workload (the full suite's too), not only the ones this run had.
      const method = out.suite === 'full' ? Promise.resolve() : refreshMethodText(docs);
      method.then(() => process.stdout.write(`${docs} regenerated from ${file}\n`), (err) => {
        process.stderr.write(`${err?.stack ?? err}\n`);
        process.exitCode = 1;
      });
    }
    else if (args.includes('--text')) process.stdout.write(renderTable(out, { format: 'text' }) + '\n');
    else process.stdout.write(renderDocs(out, file) + '\n');
  }
}
