// Pieces shared by the views: state badges, empty and error states, key-value lists.
import { useEffect, useRef, type ReactNode } from 'react';
import type { ApiError } from '../api';

const HEALTH_LABEL: Record<string, string> = { passing: 'passing', warning: 'warning', critical: 'critical' };

export function HealthBadge({ health }: { health: string }) {
  return (
    <span className={`badge h-${health}`}>
      <span className="shape" aria-hidden="true" />
      {HEALTH_LABEL[health] ?? health}
    </span>
  );
}

export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge s-${status}`}>{status.replace(/_/g, ' ')}</span>;
}

export function Empty({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="empty" role="status">
      <p className="empty-title">{title}</p>
      {children}
    </div>
  );
}

export function ErrorNote({ error, what }: { error: ApiError; what: string }) {
  return (
    <div className="error-note" role="alert">
      <p>
        <strong>Could not load {what}:</strong> {error.message}
      </p>
      {error.problem?.hint && <p className="muted">{error.problem.hint}</p>}
    </div>
  );
}

export function Facts({ items, label }: { items: [string, ReactNode][]; label?: string }) {
  return (
    <dl className="facts" aria-label={label}>
      {items.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

/** healthy/total as text and a bar (the text carries the meaning; the bar only helps). */
export function Ratio({ healthy, total }: { healthy: number; total: number }) {
  const pct = total === 0 ? 0 : Math.round((healthy / total) * 100);
  const tone = total === 0 ? 'none' : healthy === total ? 'ok' : healthy === 0 ? 'bad' : 'warn';
  return (
    <span className={`ratio r-${tone}`}>
      <span className="ratio-text">
        {healthy}/{total}
      </span>
      <span className="bar" aria-hidden="true">
        <span style={{ width: `${pct}%` }} />
      </span>
    </span>
  );
}

/** Rows drawn at most in one table; a longer list asks for a narrower search. */
export const MAX_ROWS = 500;

export function TooMany({ shown, total }: { shown: number; total: number }) {
  if (total <= shown) return null;
  return (
    <p className="muted small" role="status">
      Showing the first {shown} of {total}; narrow the search to see the others.
    </p>
  );
}

/** The page's h1; it takes focus after navigation so that screen readers announce the view. */
export function PageTitle({ children }: { children: ReactNode }) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    if (document.activeElement && document.activeElement !== document.body && !(document.activeElement instanceof HTMLAnchorElement)) return;
    ref.current?.focus({ preventScroll: true });
  }, []);
  return (
    <h1 id="page-title" tabIndex={-1} ref={ref}>
      {children}
    </h1>
  );
}
