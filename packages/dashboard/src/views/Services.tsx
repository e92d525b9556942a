import { useDeferredValue, useEffect, useRef, useState } from 'react';
import type { State } from '../store';
import { Link, href } from '../router';
import { Empty, ErrorNote, MAX_ROWS, PageTitle, Ratio, TooMany } from './parts';

type Sort = 'name' | 'problems';

/** In words, from the counts alone (a warning and a critical instance both count as not passing). */
function stateOf(healthy: number, total: number): string {
  if (total === 0) return 'no instances';
  if (healthy === total) return 'all passing';
  if (healthy === 0) return 'none passing';
  return 'degraded';
}

/** Every service of the namespace with healthy/total counts; search and sort. */
export function ServicesView({ state }: { state: State }) {
  const [query, setQuery] = useState(() => new URLSearchParams(location.search).get('q') ?? '');
  const [sort, setSort] = useState<Sort>('name');
  const deferred = useDeferredValue(query.trim().toLowerCase());
  const search = useRef<HTMLInputElement>(null);

  // "/" jumps to the search field, as in most consoles.
  useEffect(() => {
    const onKey = (e: KeyboardEvent): void => {
      const t = e.target as HTMLElement;
      if (e.key === '/' && !(t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement)) {
        e.preventDefault();
        search.current?.focus();
      }
    };
    addEventListener('keydown', onKey);
    return () => removeEventListener('keydown', onKey);
  }, []);

  const all = state.services;
  let rows = all ?? [];
  if (deferred) rows = rows.filter((s) => s.name.includes(deferred));
  if (sort === 'problems') rows = [...rows].sort((a, b) => a.passing / Math.max(1, a.instances) - b.passing / Math.max(1, b.instances) || a.name.localeCompare(b.name));
  const totals = (all ?? []).reduce((t, s) => ({ instances: t.instances + s.instances, passing: t.passing + s.passing }), { instances: 0, passing: 0 });

  return (
    <section aria-labelledby="page-title">
      <div className="page-head">
        <PageTitle>Services</PageTitle>
        {all && (
          <p className="muted summary">
            {all.length} {all.length === 1 ? 'service' : 'services'} · {totals.passing} of {totals.instances} instances healthy · namespace {state.namespace}
          </p>
        )}
      </div>
      <div className="toolbar">
        <div className="field grow">
          <label htmlFor="svc-search">Search services</label>
          <input id="svc-search" ref={search} type="search" value={query} onChange={(e) => setQuery(e.target.value)} placeholder="name contains… (press /)" autoComplete="off" spellCheck={false} aria-controls="services-table" />
        </div>
        <div className="field">
          <label htmlFor="svc-sort">Sort</label>
          <select id="svc-sort" value={sort} onChange={(e) => setSort(e.target.value as Sort)}>
            <option value="name">by name</option>
            <option value="problems">least healthy first</option>
          </select>
        </div>
      </div>
      {state.servicesError && <ErrorNote error={state.servicesError} what="the services" />}
      {all === null ? (
        state.connection === 'unreachable' ? <Empty title="No data yet">The list appears as soon as the registry answers.</Empty> : <p className="loading" role="status">Loading services…</p>
      ) : all.length === 0 ? (
        <Empty title={`No services are registered in namespace ${state.namespace}`}>
          <p>Register an instance and it appears here at once, for example:</p>
          <pre>
            <code>{`curl -XPUT ${location.origin}/v1/services/orders/instances/orders-1${state.namespace === 'default' ? '' : `?namespace=${state.namespace}`} \\\n  -H 'content-type: application/json' -d '{"address": "10.0.0.5", "port": 8080}'`}</code>
          </pre>
        </Empty>
      ) : rows.length === 0 ? (
        <Empty title={`No service matches “${query.trim()}”`}>
          <button type="button" className="link" onClick={() => setQuery('')}>
            Clear the search
          </button>
        </Empty>
      ) : (
        <table id="services-table" className="grid services">
          <caption className="sr-only">Services, {rows.length} shown, with healthy and total instances</caption>
          <thead>
            <tr>
              <th scope="col">Service</th>
              <th scope="col">Healthy / total</th>
              <th scope="col">State</th>
            </tr>
          </thead>
          <tbody>
            {rows.slice(0, MAX_ROWS).map((s) => {
              const st = stateOf(s.passing, s.instances);
              return (
                <tr key={s.name} data-service={s.name}>
                  <th scope="row" data-label="Service">
                    <Link href={href.service(s.name)}>{s.name}</Link>
                  </th>
                  <td data-label="Healthy / total">
                    <Ratio healthy={s.passing} total={s.instances} />
                  </td>
                  <td data-label="State">
                    <span className={`state st-${st.replace(' ', '-')}`}>{st}</span>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <TooMany shown={Math.min(rows.length, MAX_ROWS)} total={rows.length} />
    </section>
  );
}
