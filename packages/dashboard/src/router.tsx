// Client routes under /ui/, with the History API (the agent answers index.html for them).
import { useEffect, useState, type AnchorHTMLAttributes, type MouseEvent } from 'react';

export const BASE = '/ui/';

export type Route =
  | { view: 'services' }
  | { view: 'service'; service: string }
  | { view: 'instance'; service: string; id: string }
  | { view: 'cluster' }
  | { view: 'events' }
  | { view: 'missing'; path: string };

export function parseRoute(pathname: string): Route {
  const rest = pathname.startsWith(BASE) ? pathname.slice(BASE.length) : pathname.replace(/^\/+/, '');
  const parts = rest.split('/').filter((p) => p !== '').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  if (parts.length === 0) return { view: 'services' };
  if (parts[0] === 'services' && parts.length === 2) return { view: 'service', service: parts[1] as string };
  if (parts[0] === 'services' && parts.length === 4 && parts[2] === 'instances') return { view: 'instance', service: parts[1] as string, id: parts[3] as string };
  if (parts[0] === 'cluster' && parts.length === 1) return { view: 'cluster' };
  if (parts[0] === 'events' && parts.length === 1) return { view: 'events' };
  return { view: 'missing', path: rest };
}

const enc = encodeURIComponent;
export const href = {
  services: (): string => BASE,
  service: (s: string): string => `${BASE}services/${enc(s)}`,
  instance: (s: string, id: string): string => `${BASE}services/${enc(s)}/instances/${enc(id)}`,
  cluster: (): string => `${BASE}cluster`,
  events: (): string => `${BASE}events`,
};

const listeners = new Set<() => void>();

export function navigate(to: string, search = location.search): void {
  const url = new URL(to, location.href);
  url.search = search; // the namespace travels with every link
  history.pushState(null, '', url);
  for (const l of listeners) l();
}

/**
 * The page's path and query, followed through links, Back and Forward: the query holds the
 * namespace, so a page must follow it as well as the path.
 */
export function useLocation(): { path: string; search: string } {
  const [at, setAt] = useState(() => ({ path: location.pathname, search: location.search }));
  useEffect(() => {
    const update = (): void => setAt((prev) => (prev.path === location.pathname && prev.search === location.search ? prev : { path: location.pathname, search: location.search }));
    listeners.add(update);
    addEventListener('popstate', update);
    return () => {
      listeners.delete(update);
      removeEventListener('popstate', update);
    };
  }, []);
  return at;
}

/** A real link (middle-click, copy, open in new tab work) that navigates in place. */
export function Link(props: AnchorHTMLAttributes<HTMLAnchorElement> & { href: string }) {
  const onClick = (e: MouseEvent<HTMLAnchorElement>): void => {
    props.onClick?.(e);
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(props.href);
  };
  const withSearch = props.href + location.search;
  return <a {...props} href={withSearch} onClick={onClick} />;
}
