import { useEffect, useMemo, useState, useSyncExternalStore, type FormEvent } from 'react';
import { useNow } from './hooks';
import { PageTitle } from './views/parts';
import { LiveRegistry, type State } from './store';
import { UNREACHABLE, cleanToken, token } from './api';
import { Link, href, navigate, parseRoute, useLocation, type Route } from './router';
import { ago, clock } from './format';
import { ServicesView } from './views/Services';
import { ServiceView } from './views/Service';
import { InstanceView } from './views/Instance';
import { ClusterView, activeAlerts } from './views/Cluster';
import { EventsView } from './views/Events';

const NS_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function namespaceOf(search: string): string {
  const ns = new URLSearchParams(search).get('namespace');
  return ns && NS_PATTERN.test(ns) ? ns : 'default';
}

export function App() {
  const { path, search } = useLocation();
  const route = parseRoute(path);
  // From the URL at every render, so that Back and Forward across a change of namespace
  // show the namespace their URL names.
  const namespace = namespaceOf(search);
  const live = useMemo(() => new LiveRegistry(namespace), [namespace]);
  useEffect(() => {
    live.start();
    return () => live.stop();
  }, [live]);
  const state = useSyncExternalStore(live.subscribe, live.getState);

  useEffect(() => {
    document.title = `${titleOf(route)} · Switchboard`;
  }, [path]);

  const changeNamespace = (ns: string): void => {
    const params = new URLSearchParams(location.search);
    if (ns === 'default') params.delete('namespace');
    else params.set('namespace', ns);
    navigate(href.services(), params.size > 0 ? `?${params}` : '');
  };

  const stale = state.connection !== 'live';
  return (
    <>
      <a className="skip" href="#main">Skip to content</a>
      <Header state={state} route={route} onNamespace={changeNamespace} />
      <Banner state={state} onRetry={() => live.retryNow()} />
      <main id="main" className={stale && state.lastContact !== null ? 'stale' : undefined} aria-busy={state.connection === 'connecting'}>
        <Page route={route} state={state} live={live} />
      </main>
    </>
  );
}

function titleOf(route: Route): string {
  switch (route.view) {
    case 'services':
      return 'Services';
    case 'service':
      return route.service;
    case 'instance':
      return `${route.id} · ${route.service}`;
    case 'cluster':
      return 'Cluster';
    case 'events':
      return 'Events';
    default:
      return 'Not found';
  }
}

function Page({ route, state, live }: { route: Route; state: State; live: LiveRegistry }) {
  switch (route.view) {
    case 'services':
      return <ServicesView state={state} />;
    case 'service':
      return <ServiceView key={route.service} name={route.service} state={state} live={live} />;
    case 'instance':
      return <InstanceView key={`${route.service}/${route.id}`} service={route.service} id={route.id} state={state} live={live} />;
    case 'cluster':
      return <ClusterView state={state} />;
    case 'events':
      return <EventsView state={state} />;
    default:
      return (
        <section className="empty" aria-labelledby="page-title">
          <PageTitle>Page not found</PageTitle>
          <p>There is no view at /ui/{route.path}.</p>
          <p>
            <Link href={href.services()}>Back to the services</Link>
          </p>
        </section>
      );
  }
}

function Header({ state, route, onNamespace }: { state: State; route: Route; onNamespace: (ns: string) => void }) {
  const current = route.view === 'service' || route.view === 'instance' ? 'services' : route.view;
  const nav = [
    { view: 'services', label: 'Services', to: href.services() },
    { view: 'cluster', label: 'Cluster', to: href.cluster() },
    { view: 'events', label: 'Events', to: href.events() },
  ];
  return (
    <header className="top">
      <div className="brand">
        <Link href={href.services()}>
          <span className="logo" aria-hidden="true" />
          Switchboard
        </Link>
      </div>
      <nav aria-label="Views">
        <ul>
          {nav.map((n) => (
            <li key={n.view}>
              <Link href={n.to} aria-current={current === n.view ? 'page' : undefined}>
                {n.label}
              </Link>
            </li>
          ))}
        </ul>
      </nav>
      <div className="top-right">
        <NamespaceForm namespace={state.namespace} onNamespace={onNamespace} />
        <AlertsLink state={state} />
        <ConnectionBadge state={state} />
      </div>
    </header>
  );
}

function NamespaceForm({ namespace, onNamespace }: { namespace: string; onNamespace: (ns: string) => void }) {
  const [value, setValue] = useState(namespace);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => setValue(namespace), [namespace]);
  const submit = (e: FormEvent): void => {
    e.preventDefault();
    const ns = value.trim() || 'default';
    if (!NS_PATTERN.test(ns)) {
      setError('lowercase letters, digits and dashes');
      return;
    }
    setError(null);
    if (ns !== namespace) onNamespace(ns);
  };
  return (
    <form className="ns" onSubmit={submit}>
      <label htmlFor="ns-input">Namespace</label>
      <input id="ns-input" value={value} onChange={(e) => setValue(e.target.value)} spellCheck={false} autoCapitalize="off" size={10} aria-invalid={error !== null} aria-describedby={error ? 'ns-error' : undefined} />
      {error && (
        <span id="ns-error" className="field-error">
          {error}
        </span>
      )}
    </form>
  );
}

/** Active alerts of the node, when it reports any; a link to where they are listed. */
function AlertsLink({ state }: { state: State }) {
  const active = activeAlerts(state.status);
  if (!active || active.length === 0) return null;
  const critical = active.some((a) => a.severity === 'critical');
  return (
    <Link href={href.cluster()} className={`alerts-link ${critical ? 'h-critical' : 'h-warning'} badge`}>
      {active.length} {active.length === 1 ? 'alert' : 'alerts'}
    </Link>
  );
}

function ConnectionBadge({ state }: { state: State }) {
  const now = useNow();
  const s = state.status;
  const label = state.connection === 'live' ? 'Live' : state.connection === 'connecting' ? 'Connecting' : state.refused ? 'Not live' : 'Unreachable';
  return (
    <div className="conn" data-conn={state.connection}>
      <span className="dot" aria-hidden="true" />
      <span className="conn-text">
        <strong role="status" aria-label={`Registry connection: ${label}`}>{label}</strong>
        {s && (
          <span className="muted">
            {' '}
            {s.nodeId} · {s.mode} · rev {s.revision}
          </span>
        )}
        {state.connection !== 'live' && state.lastContact !== null && <span className="muted"> · data from {ago(state.lastContact, now)}</span>}
      </span>
    </div>
  );
}

/** A registry that requires a token (401): asks for one, keeps it for this tab and starts over. */
function TokenForm({ problem }: { problem: string | null }) {
  const [value, setValue] = useState('');
  const [unusable, setUnusable] = useState(false);
  const had = token.get() !== null;
  const submit = (e: FormEvent): void => {
    e.preventDefault();
    if (value.trim() === '') return;
    const t = cleanToken(value);
    if (t === null) return setUnusable(true);
    token.set(t);
    location.reload();
  };
  return (
    <form className="banner token-form" role="alert" onSubmit={submit}>
      <div>
        <strong>This registry needs a token.</strong> {had ? `The token given was not accepted${problem ? ` (${problem})` : ''}. ` : ''}
        {unusable ? 'That token holds a character a token cannot have (outside printable ASCII): check what was pasted. ' : ''}
        Enter a token of scope read (it is kept for this tab only).
      </div>
      <label>
        Token{' '}
        <input type="password" name="token" autoComplete="off" value={value} onChange={(e) => setValue(e.target.value)} />
      </label>
      <button type="submit">Use token</button>
    </form>
  );
}

function Banner({ state, onRetry }: { state: State; onRetry: () => void }) {
  const now = useNow(500);
  if (state.connection !== 'unreachable') return null;
  if (state.needsToken) return <TokenForm problem={state.problem} />;
  const inSec = state.retryAt ? Math.max(0, Math.ceil((state.retryAt - now) / 1000)) : 0;
  return (
    <div className="banner" role="alert">
      <div>
        {state.refused ? (
          <>
            <strong>Live updates are interrupted</strong>: {state.problem}.{' '}
          </>
        ) : (
          <>
            <strong>The registry cannot be reached</strong> at {location.host}
            {state.problem && state.problem !== UNREACHABLE ? ` (${state.problem})` : ''}.{' '}
          </>
        )}
        {state.lastContact !== null ? (
          <>The data below is from {clock(state.lastContact)} and may be out of date. </>
        ) : (
          <>No data has been received yet. </>
        )}
        <span>{inSec > 0 ? `Retrying in ${inSec} s.` : 'Retrying…'}</span>
      </div>
      <button type="button" onClick={onRetry}>
        Retry now
      </button>
    </div>
  );
}
