/**
 * Which zones each lease has instances in, kept up to date as instances are put and
 * deleted, so that self-preservation can count leases per zone without scanning.
 */
export class LeaseZones {
  /** lease id -> zone -> instances of the lease in that zone */
  private readonly byLease = new Map<string, Map<string, number>>();
  /** zone -> leases with an instance in it */
  private readonly byZone = new Map<string, Set<string>>();

  bind(leaseId: string, zone: string): void {
    let zones = this.byLease.get(leaseId);
    if (!zones) this.byLease.set(leaseId, (zones = new Map()));
    const n = zones.get(zone) ?? 0;
    zones.set(zone, n + 1);
    if (n === 0) {
      let leases = this.byZone.get(zone);
      if (!leases) this.byZone.set(zone, (leases = new Set()));
      leases.add(leaseId);
    }
  }

  unbind(leaseId: string, zone: string): void {
    const zones = this.byLease.get(leaseId);
    const n = zones?.get(zone);
    if (!zones || n === undefined) return;
    if (n > 1) {
      zones.set(zone, n - 1);
      return;
    }
    zones.delete(zone);
    if (zones.size === 0) this.byLease.delete(leaseId);
    const leases = this.byZone.get(zone);
    leases?.delete(leaseId);
    if (leases?.size === 0) this.byZone.delete(zone);
  }

  zonesOf(leaseId: string): string[] {
    return [...(this.byLease.get(leaseId)?.keys() ?? [])];
  }

  leasesIn(zone: string): number {
    return this.byZone.get(zone)?.size ?? 0;
  }
}
