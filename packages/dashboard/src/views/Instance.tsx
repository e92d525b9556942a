import { useEffect, useState } from 'react';
import { ApiError, api, type InstanceHistory } from '../api';
import type { LiveRegistry, State } from '../store';
import { Link, href } from '../router';
import { dateTime, reason } from '../format';
import { Empty, ErrorNote, Facts, HealthBadge, PageTitle, StatusBadge } from './parts';

/** One instance: every field, its checks, and its history of state changes. */
export function InstanceView({ service, id, state, live }: { service: string; id: string; state: State; live: LiveRegistry }) {
  useEffect(() => {
    live.openService(service);
    return () => live.closeService();
  }, [live, service]);
  const view = state.service?.name === service ? state.service : null;
  const inst = view?.instances.get(id) ?? null;
  const goneEv = view?.gone.get(id) ?? null;
  const shown = inst ?? goneEv?.instance ?? null;
  // History is read again whenever the stream reports a change of this instance.
  const changed = `${view?.changedAt.get(id) ?? 0}:${view?.listedRevision ?? 0}`;
  const [history, setHistory] = useState<InstanceHistory | null>(null);
  const [historyError, setHistoryError] = useState<ApiError | null>(null);
  useEffect(() => {
    const ac = new AbortController();
    api.history(state.namespace, service, id, ac.signal).then(
      (h) => {
        setHistory(h);
        setHistoryError(null);
      },
      (err) => {
        if (ac.signal.aborted) return;
        if (err instanceof ApiError && err.status === 404) setHistory(null);
        if (err instanceof ApiError && !err.unreachable && err.status !== 404) setHistoryError(err);
      },
    );
    return () => ac.abort();
  }, [state.namespace, service, id, changed]);

  const loading = !view || view.loading;
  return (
    <section aria-labelledby="page-title">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link href={href.services()}>Services</Link> <span aria-hidden="true">/</span> <Link href={href.service(service)}>{service}</Link> <span aria-hidden="true">/</span>
      </nav>
      <div className="page-head">
        <PageTitle>{id}</PageTitle>
        {inst && (
          <p className="summary">
            <HealthBadge health={inst.health} /> <StatusBadge status={inst.status} />
          </p>
        )}
      </div>
      {view?.error && <ErrorNote error={view.error} what={`service ${service}`} />}
      {!inst && goneEv && (
        <div className="notice" role="status">
          This instance is gone: {reason(goneEv.reason)} at revision {goneEv.revision}. Its last state is shown below.
        </div>
      )}
      {!inst && !goneEv && !loading && history?.exists === false && (
        <div className="notice" role="status">
          This instance is gone; only its history is kept.
        </div>
      )}
      {!shown && loading && <p className="loading" role="status">Loading {id}…</p>}
      {!shown && !loading && !history && (
        <Empty title={`No instance ${id} in service ${service}`}>
          <p>
            It may never have registered, or it left long enough ago that its history was dropped. <Link href={href.service(service)}>See the instances of {service}</Link>.
          </p>
        </Empty>
      )}
      {shown && (
        <div className="cards">
          <section className="card" aria-labelledby="inst-details">
            <h2 id="inst-details">Details</h2>
            <Facts
              items={[
                ['Address', <span className="mono">{shown.address}:{shown.port}</span>],
                ['Protocol', shown.protocol],
                ['Zone', shown.zone ?? '—'],
                ['Version', shown.version ?? '—'],
                ['Weight', String(shown.weight)],
                ['Lease', shown.leaseId ? <span className="mono">{shown.leaseId}</span> : 'none (persistent)'],
                ['Tags', shown.tags.length ? shown.tags.map((t) => <span key={t} className="tag">{t}</span>) : '—'],
                ['Revisions', `created ${shown.createRevision}, changed ${shown.modRevision}`],
              ]}
            />
            {Object.keys(shown.metadata).length > 0 && (
              <>
                <h3>Metadata</h3>
                <Facts items={Object.entries(shown.metadata).map(([k, v]) => [k, <span className="mono">{v}</span>])} />
              </>
            )}
          </section>
          <section className="card" aria-labelledby="inst-checks">
            <h2 id="inst-checks">Checks</h2>
            {shown.checks.length === 0 ? (
              <p className="muted">No checks: the instance counts as passing while its lease (if any) is kept alive.</p>
            ) : (
              <table className="grid checks">
                <caption className="sr-only">Checks of {id}</caption>
                <thead>
                  <tr>
                    <th scope="col">Check</th>
                    <th scope="col">Type</th>
                    <th scope="col">Status</th>
                    <th scope="col">Output</th>
                  </tr>
                </thead>
                <tbody>
                  {shown.checks.map((c) => (
                    <tr key={c.id}>
                      <th scope="row" data-label="Check">{c.id}</th>
                      <td data-label="Type">{c.type}</td>
                      <td data-label="Status">
                        <HealthBadge health={c.status} />
                      </td>
                      <td data-label="Output" className="output">
                        {c.output || '—'}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </section>
        </div>
      )}
      <section className="card history" aria-labelledby="inst-history">
        <h2 id="inst-history">History</h2>
        {historyError && <ErrorNote error={historyError} what="the history" />}
        {!history ? (
          <p className="muted">{loading ? 'Loading…' : 'No history is kept for this instance.'}</p>
        ) : (
          <table className="grid history-table">
            <caption className="sr-only">State changes of {id}, newest first</caption>
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col" className="num">Revision</th>
                <th scope="col">Change</th>
                <th scope="col">Health</th>
                <th scope="col">Status</th>
                <th scope="col">Detail</th>
              </tr>
            </thead>
            <tbody>
              {[...history.history].reverse().map((h) => (
                <tr key={`${h.revision}-${h.reason}`} data-type={h.type}>
                  <td data-label="When">{dateTime(h.at)}</td>
                  <td data-label="Revision" className="num">{h.revision}</td>
                  <th scope="row" data-label="Change">
                    <span className={`change c-${h.type}`}>{reason(h.reason)}</span>
                  </th>
                  <td data-label="Health">
                    <HealthBadge health={h.health} />
                  </td>
                  <td data-label="Status">
                    <StatusBadge status={h.status} />
                  </td>
                  <td data-label="Detail" className="output">{h.detail ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </section>
  );
}
