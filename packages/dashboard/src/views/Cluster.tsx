import type { ReactNode } from 'react';
import type { ClusterMember, ClusterStatus, NodeStatus, StoreStatus } from '../api';
import type { State } from '../store';
import { useNow } from '../hooks';
import { ago, clock, duration } from '../format';
import { Empty, Facts, PageTitle } from './parts';

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
  const members: ClusterMember[] = s.cluster?.members ?? [{ id: s.nodeId, address: location.host, self: true, reachable: state.connection !== 'unreachable', lastSeenMs: 0, revision: s.revision }];
  const reachable = members.filter((m) => m.reachable).length;
  const alerts = (s as unknown as { alerts?: unknown }).alerts;
  // Every node reports `alerts`; the section shows when something is active or a webhook is set.
  const showAlerts = alerts !== undefined && alerts !== null && (!isObject(alerts) || listLength(alerts.active) > 0 || listLength(alerts.webhooks) > 0);
  return (
    <section aria-labelledby="page-title">
      <div className="page-head">
        <PageTitle>Cluster</PageTitle>
        <p className="muted summary">
          {s.mode === 'standalone' ? 'Standalone: one node, no peers' : `${s.mode} mode · ${reachable} of ${members.length} nodes reachable`}
          {s.cluster && ` · ${s.cluster.ready ? 'ready' : 'catching up'}`}
          {s.cluster && typeof s.cluster.readyReason === 'string' && s.cluster.readyReason && ` (${s.cluster.readyReason})`}
        </p>
      </div>
      {showAlerts && <Alerts alerts={alerts} />}
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
                <td data-label="Address" className="mono">{m.address || (m.self ? location.host : '—')}</td>
                <td data-label="Reachable">
                  <span className={`badge ${m.reachable ? 'h-passing' : 'h-critical'}`}>
                    <span className="shape" aria-hidden="true" />
                    {m.reachable ? 'yes' : 'no'}
                  </span>
                </td>
                <td data-label="Last heard">{m.self ? 'now' : m.lastSeenMs === null ? (m.reachable ? '—' : 'never') : `${duration(m.lastSeenMs)} ago`}</td>
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
        {s.cluster && <ModeFacts cluster={s.cluster} mode={s.mode} />}
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
              ['Last live event', ago(state.lastEventAt, now)],
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
          ['Active checks', `${s.checks.scheduled} scheduled, ${s.checks.running} running, ${s.checks.queued} queued${s.checks.denied !== undefined ? `, ${s.checks.denied} probes refused by the check networks` : ''}`],
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

/** Most figures shown from what a mode adds to its cluster status. */
const MAX_MODE_FACTS = 40;
const SHOWN_ELSEWHERE = new Set(['members', 'ready', 'readyReason', 'store']);

function factValue(v: unknown): string {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/**
 * Whatever else the mode reports in `cluster` (replication counters, sync state, key
 * prefix, ...), flattened one level: the dashboard shows new figures without a release.
 */
function ModeFacts({ cluster, mode }: { cluster: ClusterStatus; mode: string }) {
  const items: [string, ReactNode][] = [];
  for (const [k, v] of Object.entries(cluster)) {
    if (SHOWN_ELSEWHERE.has(k)) continue;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v as Record<string, unknown>)) items.push([`${k}.${k2}`, <span className="mono">{factValue(v2)}</span>]);
    } else {
      items.push([k, <span className="mono">{factValue(v)}</span>]);
    }
  }
  if (items.length === 0) return null;
  return (
    <section className="card" aria-labelledby="mode-title">
      <h2 id="mode-title">{mode} details</h2>
      <Facts items={items.slice(0, MAX_MODE_FACTS)} />
      {items.length > MAX_MODE_FACTS && <p className="muted small">and {items.length - MAX_MODE_FACTS} more in GET /v1/status</p>}
    </section>
  );
}

/** An alert episode as a node with alerting reports it (read loosely: absent on other nodes). */
export interface AlertLike {
  alert?: string;
  severity?: string;
  subject?: string;
  summary?: string;
  startedAt?: string;
  episodeId?: string;
}

interface WebhookLike {
  url?: string;
  pending?: number;
  delivered?: number;
  failed?: number;
  dropped?: number;
  lastError?: string | null;
}

/** `alerts.active` of /v1/status, or null when the node reports no alerts. */
export function activeAlerts(status: unknown): AlertLike[] | null {
  const alerts = (status as { alerts?: { active?: unknown } } | null)?.alerts;
  if (!alerts || typeof alerts !== 'object') return null;
  return Array.isArray(alerts.active) ? (alerts.active as AlertLike[]) : [];
}

/** Alerts now active and the state of each webhook, when the node reports them. */
function Alerts({ alerts }: { alerts: unknown }) {
  const active = activeAlerts({ alerts }) ?? [];
  const hooks = (alerts as { webhooks?: unknown }).webhooks;
  const webhooks: WebhookLike[] = Array.isArray(hooks) ? hooks : [];
  return (
    <section className="card alerts" aria-labelledby="alerts-title">
      <h2 id="alerts-title">Alerts</h2>
      {active.length === 0 ? (
        <p className="muted">No alert is active.</p>
      ) : (
        <ul>
          {active.map((a, i) => (
            <li key={a.episodeId ?? i} className={`alert sev-${a.severity ?? 'warning'}`} data-alert={a.alert}>
              <span className={`badge ${a.severity === 'critical' ? 'h-critical' : 'h-warning'}`}>
                <span className="shape" aria-hidden="true" />
                {a.severity ?? 'warning'}
              </span>{' '}
              <strong>{(a.alert ?? 'alert').replace(/_/g, ' ')}</strong> {a.subject && <span className="mono">{a.subject}</span>}
              {a.summary && <div>{a.summary}</div>}
              {a.startedAt && <div className="muted small">since {clock(a.startedAt)}</div>}
            </li>
          ))}
        </ul>
      )}
      {webhooks.length > 0 && (
        <>
          <h3>Webhooks</h3>
          <ul>
            {webhooks.map((w, i) => (
              <li key={w.url ?? i} className="alert">
                <span className="mono">{w.url}</span>: {w.delivered ?? 0} delivered, {w.pending ?? 0} pending, {w.failed ?? 0} failed
                {w.dropped ? `, ${w.dropped} dropped` : ''}
                {w.lastError && <div className="muted small">last error: {w.lastError}</div>}
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function listLength(v: unknown): number {
  return Array.isArray(v) ? v.length : 0;
}
