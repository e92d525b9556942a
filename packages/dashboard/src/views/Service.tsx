import { useEffect, useMemo, useState } from 'react';
import type { Instance } from '../api';
import { MAX_GONE, type LiveRegistry, type State } from '../store';
import { Link, href } from '../router';
import { reason } from '../format';
import { Empty, ErrorNote, HealthBadge, MAX_ROWS, PageTitle, Ratio, StatusBadge, TooMany } from './parts';

type HealthFilter = 'all' | 'passing' | 'warning' | 'critical' | 'not-up';
type Sort = 'id' | 'worst';

const HEALTH_RANK: Record<string, number> = { critical: 0, warning: 1, passing: 2 };
const worstFirst = (a: Instance, b: Instance): number =>
  (HEALTH_RANK[a.health] ?? 0) - (HEALTH_RANK[b.health] ?? 0) || Number(a.status === 'up') - Number(b.status === 'up') || a.id.localeCompare(b.id);

/** `eu-1 ×2, eu-2 ×1`: how the instances spread over a field's values. */
function spread(instances: Instance[], field: 'zone' | 'version'): string {
  const counts = new Map<string, number>();
  for (const i of instances) {
    const v = i[field] ?? 'none';
    counts.set(v, (counts.get(v) ?? 0) + 1);
  }
  return [...counts].sort(([a], [b]) => a.localeCompare(b)).map(([v, n]) => `${v} ×${n}`).join(', ');
}

function matches(i: Instance, text: string, health: HealthFilter): boolean {
  if (health === 'not-up' ? i.status === 'up' : health !== 'all' && i.health !== health) return false;
  if (text === '') return true;
  const hay = [i.id, `${i.address}:${i.port}`, i.zone ?? '', i.version ?? '', ...i.tags].join(' ').toLowerCase();
  return hay.includes(text);
}

export function checksSummary(i: Instance): string {
  if (i.checks.length === 0) return 'none';
  const passing = i.checks.filter((c) => c.status === 'passing').length;
  return `${passing}/${i.checks.length} passing`;
}

/** One service: its instances with health, checks, zone, version and weight, kept live. */
export function ServiceView({ name, state, live }: { name: string; state: State; live: LiveRegistry }) {
  useEffect(() => {
    live.openService(name);
    return () => live.closeService();
  }, [live, name]);
  const [text, setText] = useState('');
  const [health, setHealth] = useState<HealthFilter>('all');
  const [sort, setSort] = useState<Sort>('id');
  const view = state.service?.name === name ? state.service : null;
  // Worked out again only when the instances or the filters change, not at every render
  // (the status read every 2 s renders the page too): a service may hold thousands.
  const all = view?.instances;
  const instances = useMemo(() => (all ? [...all.values()].sort((a, b) => a.id.localeCompare(b.id)) : []), [all]);
  const shown = useMemo(() => {
    const out = instances.filter((i) => matches(i, text.trim().toLowerCase(), health));
    return sort === 'worst' ? out.sort(worstFirst) : out;
  }, [instances, text, health, sort]);
  const healthy = useMemo(() => instances.filter((i) => i.status === 'up' && i.health === 'passing').length, [instances]);
  const spreads = useMemo(() => ({ zones: spread(instances, 'zone'), versions: spread(instances, 'version') }), [instances]);
  const goneMap = view?.gone;
  const gone = useMemo(() => (goneMap ? [...goneMap.values()].sort((a, b) => b.revision - a.revision) : []), [goneMap]);

  return (
    <section aria-labelledby="page-title">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link href={href.services()}>Services</Link> <span aria-hidden="true">/</span>
      </nav>
      <div className="page-head">
        <PageTitle>{name}</PageTitle>
        {view && !view.loading && (
          <p className="muted summary">
            <Ratio healthy={healthy} total={instances.length} /> healthy · revision {view.revision}
          </p>
        )}
      </div>
      {instances.length > 0 && (
        <p className="muted small spread">
          Zones: {spreads.zones} · Versions: {spreads.versions}
        </p>
      )}
      {view?.error && <ErrorNote error={view.error} what={`service ${name}`} />}
      {!view || (view.loading && instances.length === 0) ? (
        view?.error ? null : <p className="loading" role="status">Loading {name}…</p>
      ) : instances.length === 0 ? (
        <Empty title={`No instances of ${name} are registered`}>
          <p>Instances appear here as soon as they register.</p>
        </Empty>
      ) : (
        <>
          <div className="toolbar">
            <div className="field grow">
              <label htmlFor="inst-filter">Filter instances</label>
              <input id="inst-filter" type="search" value={text} onChange={(e) => setText(e.target.value)} placeholder="id, address, zone, version, tag" autoComplete="off" spellCheck={false} />
            </div>
            <div className="field">
              <label htmlFor="inst-health">Health</label>
              <select id="inst-health" value={health} onChange={(e) => setHealth(e.target.value as HealthFilter)}>
                <option value="all">all</option>
                <option value="passing">passing</option>
                <option value="warning">warning</option>
                <option value="critical">critical</option>
                <option value="not-up">not up (draining, out of service)</option>
              </select>
            </div>
            <div className="field">
              <label htmlFor="inst-sort">Sort</label>
              <select id="inst-sort" value={sort} onChange={(e) => setSort(e.target.value as Sort)}>
                <option value="id">by id</option>
                <option value="worst">least healthy first</option>
              </select>
            </div>
          </div>
          {shown.length === 0 ? (
            <Empty title="No instance matches the filter" />
          ) : (
            <table className="grid instances">
              <caption className="sr-only">
                Instances of {name}, {shown.length} of {instances.length} shown
              </caption>
              <thead>
                <tr>
                  <th scope="col">Instance</th>
                  <th scope="col">Address</th>
                  <th scope="col">Health</th>
                  <th scope="col">Status</th>
                  <th scope="col">Checks</th>
                  <th scope="col">Zone</th>
                  <th scope="col">Version</th>
                  <th scope="col" className="num">
                    Weight
                  </th>
                </tr>
              </thead>
              <tbody>
                {shown.slice(0, MAX_ROWS).map((i) => (
                  <tr key={i.id} data-instance={i.id}>
                    <th scope="row" data-label="Instance">
                      <Link href={href.instance(name, i.id)}>{i.id}</Link>
                    </th>
                    <td data-label="Address" className="mono">
                      {i.address}:{i.port}
                    </td>
                    <td data-label="Health">
                      <HealthBadge health={i.health} />
                    </td>
                    <td data-label="Status">
                      <StatusBadge status={i.status} />
                    </td>
                    <td data-label="Checks" title={i.checks.map((c) => `${c.id}: ${c.status} ${c.output}`).join('\n')}>
                      {checksSummary(i)}
                    </td>
                    <td data-label="Zone">{i.zone ?? '—'}</td>
                    <td data-label="Version">{i.version ?? '—'}</td>
                    <td data-label="Weight" className="num">
                      {i.weight}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          <TooMany shown={Math.min(shown.length, MAX_ROWS)} total={shown.length} />
        </>
      )}
      {gone.length > 0 && (
        <section className="gone" aria-labelledby="gone-title">
          <h2 id="gone-title">Removed while this page was open{gone.length >= MAX_GONE ? ` (the latest ${MAX_GONE})` : ''}</h2>
          <ul>
            {gone.map((ev) => (
              <li key={ev.instance.id} data-gone={ev.instance.id}>
                <Link href={href.instance(name, ev.instance.id)}>{ev.instance.id}</Link> <span className="mono muted">{ev.instance.address}:{ev.instance.port}</span> — {ev.reason ? reason(ev.reason) : 'removed'} at revision {ev.revision}
              </li>
            ))}
          </ul>
        </section>
      )}
    </section>
  );
}
