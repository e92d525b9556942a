import { useState } from 'react';
import type { FeedEntry, State } from '../store';
import { MAX_FEED_EVENTS } from '../store';
import { Link, href } from '../router';
import { useNow } from '../hooks';
import { ago, clock, reason } from '../format';
import { Empty, HealthBadge, PageTitle } from './parts';

/** The watch stream as it arrives: every put and delete of the namespace, newest first. */
export function EventsView({ state }: { state: State }) {
  const now = useNow();
  const [paused, setPaused] = useState<FeedEntry[] | null>(null);
  const [filter, setFilter] = useState('');
  const [type, setType] = useState<'all' | 'put' | 'delete'>('all');
  const source = paused ?? state.feed;
  const f = filter.trim().toLowerCase();
  const rows = source.filter((e) => (type === 'all' || e.ev.type === type) && (f === '' || e.ev.service.includes(f) || e.ev.instance.id.toLowerCase().includes(f)));
  // Events that arrived while paused: those above the first one shown.
  const at = paused && paused[0] ? state.feed.indexOf(paused[0]) : paused ? state.feed.length : 0;
  const newer = at < 0 ? state.feed.length : at;

  return (
    <section aria-labelledby="page-title">
      <div className="page-head">
        <PageTitle>Events</PageTitle>
        <p className="muted summary">
          {state.eventsReceived} received (with the recent changes from before this page opened) · {state.lastEventAt === null ? 'no live event yet' : `last ${ago(state.lastEventAt, now)}`} · the latest {MAX_FEED_EVENTS} are kept
        </p>
      </div>
      <div className="toolbar">
        <div className="field grow">
          <label htmlFor="ev-filter">Service or instance</label>
          <input id="ev-filter" type="search" value={filter} onChange={(e) => setFilter(e.target.value)} autoComplete="off" spellCheck={false} />
        </div>
        <div className="field">
          <label htmlFor="ev-type">Type</label>
          <select id="ev-type" value={type} onChange={(e) => setType(e.target.value as typeof type)}>
            <option value="all">all</option>
            <option value="put">put</option>
            <option value="delete">delete</option>
          </select>
        </div>
        <div className="field">
          <span className="label" aria-hidden="true">
            &nbsp;
          </span>
          <button type="button" aria-pressed={paused !== null} onClick={() => setPaused(paused ? null : state.feed)}>
            {paused ? `Resume${newer > 0 ? ` (${newer} new)` : ''}` : 'Pause'}
          </button>
        </div>
      </div>
      {rows.length === 0 ? (
        <Empty title={source.length === 0 ? 'No events yet' : 'No event matches the filter'}>
          {source.length === 0 && <p>Registrations, health changes and removals appear here as they happen.</p>}
        </Empty>
      ) : (
        <table className="grid events">
          <caption className="sr-only">Watch events, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Received</th>
              <th scope="col" className="num">Revision</th>
              <th scope="col">Change</th>
              <th scope="col">Service</th>
              <th scope="col">Instance</th>
              <th scope="col">Health</th>
            </tr>
          </thead>
          <tbody>
            {rows.map(({ key, receivedAt, earlier, ev }) => (
              <tr key={key} data-type={ev.type} data-earlier={earlier || undefined}>
                <td data-label="Received">{earlier ? <span className="muted" title="replayed when the page opened; the time of the change is in the instance's history">before opening</span> : clock(receivedAt)}</td>
                <td data-label="Revision" className="num">{ev.revision}</td>
                <th scope="row" data-label="Change">
                  <span className={`change c-${ev.type}`}>
                    {ev.type} · {reason(ev.reason)}
                  </span>
                </th>
                <td data-label="Service">
                  <Link href={href.service(ev.service)}>{ev.service}</Link>
                </td>
                <td data-label="Instance">
                  <Link href={href.instance(ev.service, ev.instance.id)}>{ev.instance.id}</Link>
                </td>
                <td data-label="Health">{ev.type === 'put' ? <HealthBadge health={ev.instance.health} /> : <span className="muted">removed</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
