import type { ReactNode } from 'react';
import type { ClusterMember, NodeStatus, StoreStatus } from '../api';
import type { State } from '../store';
import { PageTitle, useNow } from '../App';
import { ago, clock, duration } from '../format';
import { Empty, Facts } from './parts';

/** The nodes as the answering node sees them: mode, reachability, revisions and lag. */
export function ClusterView({ state }: { state: State }) {
  const now = useNow();
  const s = state.status;
  if (!s) {
    return (
      <section aria-labelledby="page-title">
        <PageTitle>Cluster</PageTitle>
        {state.connection === 'unreachable' ? <Empty title="No data yet">The node's status appears as soon as the registry answers.</Empty> : <p className="loading" role="status">Loading status…</p>}
      </section>
    );
  }
  const members: ClusterMember[] = s.cluster?.members ?? [{ id: s.nodeId, address: location.host, self: true, reachable: state.connection === 'live', lastSeenMs: 0, revision: s.revision }];
  const reachable = members.filter((m) => m.reachable).length;
  const alerts = (s as unknown as { alerts?: unknown }).alerts;
  return (
    <section aria-labelledby="page-title">
      <div className="page-head">
        <PageTitle>Cluster</PageTitle>
        <p className="muted summary">
          {s.mode === 'standalone' ? 'Standalone: one node, no peers' : `${s.mode} mode · ${reachable} of ${members.length} nodes reachable`}
          {s.cluster && ` · ${s.cluster.ready ? 'ready' : 'catching up'}`}
        </p>
      </div>
      {alerts !== undefined && <Alerts alerts={alerts} />}
      <section className="card" aria-labelledby="members-title">
        <h2 id="members-title">Nodes</h2>
        <table className="grid members">
          <caption className="sr-only">Nodes of the cluster as seen from {s.nodeId}</caption>
          <thead>
            <tr>
              <th scope="col">Node</th>
              <th scope="col">Address</th>
              <th scope="col">Reachable</th>
              <th scope="col">Last heard</th>
              <th scope="col" className="num">Revision</th>
              <th scope="col" className="num">Lag</th>
            </tr>
          </thead>
          <tbody>
            {members.map((m) => (
              <tr key={m.id} data-member={m.id}>
                <th scope="row" data-label="Node">
                  {m.id}
                  {m.self && <span className="tag">this node</span>}
                </th>
                <td data-label="Address" className="mono">{m.address}</td>
                <td data-label="Reachable">
                  <span className={`badge ${m.reachable ? 'h-passing' : 'h-critical'}`}>
                    <span className="shape" aria-hidden="true" />
                    {m.reachable ? 'yes' : 'no'}
                  </span>
                </td>
                <td data-label="Last heard">{m.self ? 'now' : m.lastSeenMs === null ? 'never' : `${duration(m.lastSeenMs)} ago`}</td>
                <td data-label="Revision" className="num">{m.revision ?? '—'}</td>
                <td data-label="Lag" className="num">{m.lagMs === undefined ? '—' : duration(m.lagMs)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <div className="cards">
        <NodeCard s={s} />
        {s.cluster?.store && <StoreCard store={s.cluster.store} />}
        <section className="card" aria-labelledby="sp-title">
          <h2 id="sp-title">Self-preservation</h2>
          <Facts
            items={[
              ['State', <span className={`badge ${s.selfPreservation.engaged ? 'h-warning' : 'h-passing'}`}><span className="shape" aria-hidden="true" />{s.selfPreservation.state}</span>],
              ['Lapsed in window', `${s.selfPreservation.expiredInWindow} of ${s.selfPreservation.leases} leases (engages above ${Math.round(s.selfPreservation.threshold * 100)} %)`],
              ['Held leases', String(s.selfPreservation.blockedLeases)],
              ...(s.selfPreservation.reason ? ([['Reason', s.selfPreservation.reason]] as [string, ReactNode][]) : []),
              ...(s.selfPreservation.since ? ([['Since', clock(s.selfPreservation.since)]] as [string, ReactNode][]) : []),
              ...s.selfPreservation.zones.map((z) => [`Zone ${z.zone ?? '—'}`, z.engaged ? 'protecting' : 'normal'] as [string, ReactNode]),
            ]}
          />
        </section>
        <section className="card" aria-labelledby="stream-title">
          <h2 id="stream-title">This dashboard's stream</h2>
          <Facts
            items={[
              ['Connection', state.connection],
              ['Last contact', ago(state.lastContact, now)],
              ['Events received', String(state.eventsReceived)],
              ['Last event', ago(state.lastEventAt, now)],
            ]}
          />
        </section>
      </div>
    </section>
  );
}

function NodeCard({ s }: { s: NodeStatus }) {
  return (
    <section className="card" aria-labelledby="node-title">
      <h2 id="node-title">Node {s.nodeId}</h2>
      <Facts
        items={[
          ['Mode', s.mode],
          ['Version', s.version],
          ['Epoch', <span className="mono">{s.epoch}</span>],
          ['Revision', String(s.revision)],
          ['Up since', `${clock(s.startedAt)} (${duration(s.uptimeMs)})`],
          ['Services', String(s.services)],
          ['Instances', String(s.instances)],
          ['Leases', String(s.leases)],
          ['Watch streams', String(s.watchers)],
          ['Sessions', String(s.sessions)],
          ['Active checks', `${s.checks.scheduled} scheduled, ${s.checks.running} running, ${s.checks.queued} queued`],
          ['Storage', s.storage.durable ? `durable${s.storage.dataDir ? ` (${s.storage.dataDir})` : ''}` : 'memory only'],
        ]}
      />
    </section>
  );
}

function StoreCard({ store }: { store: StoreStatus }) {
  return (
    <section className="card" aria-labelledby="store-title">
      <h2 id="store-title">Store ({store.kind})</h2>
      <Facts
        items={[
          ['Reachable', store.reachable ? 'yes' : 'no'],
          ['Leader', store.leader ?? 'unknown'],
          ['Revision', `${store.revision} (view ${store.viewRevision})`],
          ['View lag', duration(store.lagMs)],
          ['Last contact', store.lastContactMs === null ? 'never' : `${duration(store.lastContactMs)} ago`],
          ['Endpoints', store.endpoints.join(', ')],
        ]}
      />
    </section>
  );
}

interface AlertLike {
  name?: string;
  id?: string;
  severity?: string;
  state?: string;
  message?: string;
  summary?: string;
  since?: string;
}

/** Alerts, when the node reports them (their shape is read loosely). */
function Alerts({ alerts }: { alerts: unknown }) {
  const list: AlertLike[] = Array.isArray(alerts) ? (alerts as AlertLike[]) : alerts && typeof alerts === 'object' && Array.isArray((alerts as { active?: unknown }).active) ? ((alerts as { active: AlertLike[] }).active) : [];
  return (
    <section className="card alerts" aria-labelledby="alerts-title">
      <h2 id="alerts-title">Alerts</h2>
      {list.length === 0 ? (
        <p className="muted">No alert is firing.</p>
      ) : (
        <ul>
          {list.map((a, i) => (
            <li key={a.id ?? a.name ?? i} className={`alert sev-${a.severity ?? 'warning'}`}>
              <strong>{a.name ?? a.id ?? 'alert'}</strong> {a.severity && <span className="tag">{a.severity}</span>} {a.message ?? a.summary ?? (typeof a === 'object' ? '' : String(a))}
              {a.since && <span className="muted"> since {clock(a.since)}</span>}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
