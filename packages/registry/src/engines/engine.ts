/** What the API needs from an engine, whatever the mode. */
import type { AdminStatus, LeaseGrant, Mode } from '@switchboard/protocol';
import type { Registry, RegistrationItem } from '../core/registry.js';
import type { Hub } from './hub.js';

export interface Engine {
  readonly mode: Mode;
  readonly nodeId: string;
  /** The read model: reads are served from it without waiting. */
  readonly registry: Registry;
  readonly hub: Hub;
  readonly durable: boolean;
  readonly dataDir: string | null;

  grantLease(ttlMs: number): Promise<LeaseGrant>;
  keepAlive(leaseId: string): Promise<LeaseGrant>;
  revokeLease(leaseId: string): Promise<number>;
  /** The lease's session closed without a hand-over: end it after `graceMs`. */
  detachLease(leaseId: string, graceMs: number): void;
  /** Called with each lease that ends (expired or revoked), after it is durable. */
  onLeaseEnded(listener: (leaseId: string, reason: 'lease_expired' | 'lease_revoked') => void): () => void;
  register(item: RegistrationItem): Promise<number>;
  registerBatch(items: RegistrationItem[]): Promise<number>;
  deregister(namespace: string, service: string, id: string): Promise<number>;
  setStatus(namespace: string, service: string, id: string, status: AdminStatus): Promise<number>;
  close(): Promise<void>;
}
