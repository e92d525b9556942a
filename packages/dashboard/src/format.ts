// Small formatting helpers shared by the views.
export function ago(ms: number | null | undefined, now: number): string {
  if (ms === null || ms === undefined) return 'never';
  const d = Math.max(0, now - ms);
  return d < 1000 ? 'just now' : duration(d) + ' ago';
}

export function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

export function clock(ms: number | string | null): string {
  if (ms === null) return '—';
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? '—' : d.toLocaleTimeString(undefined, { hour12: false });
}

export function dateTime(ms: number | string | null): string {
  if (ms === null) return '—';
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? '—' : d.toLocaleString(undefined, { hour12: false });
}

export const reasonText: Record<string, string> = {
  registered: 'registered',
  updated: 'updated',
  status_changed: 'status changed',
  drained: 'drained',
  check_failed: 'check failed',
  check_passed: 'check passed',
  reported: 'reported by consumers',
  eviction_blocked: 'eviction blocked',
  deregistered: 'deregistered',
  lease_expired: 'lease expired',
  lease_revoked: 'lease revoked',
  critical_timeout: 'critical too long',
  connection_lost: 'connection lost',
};

export const reason = (r: string | undefined | null): string => (r ? reasonText[r] ?? r.replace(/_/g, ' ') : '—');
