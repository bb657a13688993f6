/**
 * Isolation: the decisions that keep one tenant's failing destination from holding the other tenants of its
 * partition (docs/isolation.md). Pure state and functions over it, driven by the caller's clock (milliseconds), so
 * that tests step them with TestClock; RouteBatch.ts and Divert.ts act on them.
 *
 * - `failing`: per distinct target, when its current run of failures began (cleared by a success, on either path);
 * - a tenant is *over threshold* once one of its targets has been failing for `isolateAfterMs`; a batch whose only
 *   undelivered records are of such tenants has those records written to the retry topic, then is committed;
 * - `diverted`: per tenant, the last retry-topic offset written for it, per retry partition. While a tenant is
 *   diverted, its records skip the direct path and go to the retry topic, so its order is kept. Once its targets
 *   are healthy again and the retry path has committed past its last diverted offset, it is delivered directly
 *   again. While the retry path has not caught up yet, the source partition is cut before the tenant's first
 *   record and read again shortly after (a *drain*), for at most `drainMaxMs` per diversion; past that the tenant
 *   stays diverted until the retry path catches up between two of its batches.
 *
 * Bounds: `diverted` holds tenants of the tenants file only (records of any other access key are dead letters, and
 * tenants removed from the file are forgotten: `prune`); `failing` holds at most `maxTargets` entries (the oldest
 * is forgotten first, which only restarts its threshold).
 */
import type { Target } from "../domain/Tenant.js"

/** A key per distinct target (not for display: http urls may carry tokens). */
export const targetKey = (t: Target): string =>
  "file" in t ? `file\u0000${t.file}` : "http" in t ? `http\u0000${t.http.url}` : JSON.stringify(t)

export interface IsolationOptions {
  /** A target failing this long (ms) diverts its tenants. */
  readonly isolateAfterMs: number
  /** Longest a source partition is held, per diversion, waiting for the retry path to catch up (ms). */
  readonly drainMaxMs: number
}

export interface Diversion {
  /** Per retry partition, the last offset written there for this tenant. */
  readonly last: Map<number, bigint>
  /** When the current drain began (the tenant's targets healthy, the retry path not caught up yet). */
  drainStartedAt: number | undefined
  /** The drain took longer than `drainMaxMs`: stay diverted until the retry path has caught up. */
  drainGaveUp: boolean
}

export interface IsolationState {
  readonly options: IsolationOptions
  readonly failing: Map<string, number>
  readonly diverted: Map<string, Diversion>
}

export const maxTargets = 4096

export const makeIsolationState = (options: IsolationOptions): IsolationState => ({
  options,
  failing: new Map(),
  diverted: new Map(),
})

/** A delivery to `target` failed at `now`: its run of failures starts now, unless one is running. */
export const noteFailure = (s: IsolationState, target: string, now: number): void => {
  if (s.failing.has(target)) return
  if (s.failing.size >= maxTargets) s.failing.delete(s.failing.keys().next().value!)
  s.failing.set(target, now)
}

/** A delivery to `target` succeeded: it is healthy again. */
export const noteSuccess = (s: IsolationState, target: string): void => {
  s.failing.delete(target)
}

/** Whether `target` has been failing for at least `isolateAfterMs`. */
export const overThreshold = (s: IsolationState, target: string, now: number): boolean => {
  const since = s.failing.get(target)
  return since !== undefined && now - since >= s.options.isolateAfterMs
}

/** Records `lastOffset` (retry partition `partition`) written for `tenant`; it is diverted from now on. */
export const noteDiverted = (s: IsolationState, tenant: string, partition: number, lastOffset: bigint): void => {
  let d = s.diverted.get(tenant)
  if (d === undefined) {
    d = { last: new Map(), drainStartedAt: undefined, drainGaveUp: false }
    s.diverted.set(tenant, d)
  }
  const before = d.last.get(partition)
  if (before === undefined || lastOffset > before) d.last.set(partition, lastOffset)
}

/** Forgets the diversions of tenants no longer in the tenants file. */
export const prune = (s: IsolationState, isTenant: (accessKey: string) => boolean): void => {
  for (const t of [...s.diverted.keys()]) if (!isTenant(t)) s.diverted.delete(t)
}

/** Whether the retry path committed past everything written for `d` (`committed`: next offset to read, per partition). */
export const caughtUp = (d: Diversion, committed: ReadonlyMap<number, bigint>): boolean => {
  for (const [partition, last] of d.last) {
    const c = committed.get(partition)
    if (c === undefined || c <= last) return false
  }
  return true
}

export type TenantRoute = "direct" | "divert" | "drain"

/**
 * The route of a diverted tenant's records in a batch of the source topic, and the state moved on: `direct` (caught
 * up: forgotten), `drain` (healthy, not caught up, within `drainMaxMs`) or `divert`.
 */
export const routeOf = (
  s: IsolationState,
  tenant: string,
  healthy: boolean,
  committed: ReadonlyMap<number, bigint> | undefined,
  now: number,
): TenantRoute => {
  const d = s.diverted.get(tenant)
  if (d === undefined) return "direct"
  if (!healthy) {
    d.drainStartedAt = undefined
    return "divert"
  }
  if (committed !== undefined && caughtUp(d, committed)) {
    s.diverted.delete(tenant)
    return "direct"
  }
  if (d.drainGaveUp) return "divert"
  if (d.drainStartedAt === undefined) d.drainStartedAt = now
  if (now - d.drainStartedAt > s.options.drainMaxMs) {
    d.drainGaveUp = true
    return "divert"
  }
  return "drain"
}

export interface Plan {
  /** 1 for the records to write to the retry topic instead of delivering them. */
  readonly divert: Uint8Array
  /** Records from this index on are left for a re-read (a drain); `n` when none. */
  readonly cut: number
  /** Tenants delivered directly again from this batch on. */
  readonly undiverted: ReadonlyArray<string>
}

/**
 * Pure but for the state: the plan of a source batch of `n` records, `tenantOf(i)` the tenant of record i (undefined
 * for a dead letter). Each diverted tenant's route is decided once per batch, at its first record.
 */
export const planBatch = (
  s: IsolationState,
  n: number,
  tenantOf: (i: number) => string | undefined,
  healthy: (tenant: string) => boolean,
  committed: ReadonlyMap<number, bigint> | undefined,
  now: number,
): Plan => {
  const divert = new Uint8Array(n)
  const undiverted: Array<string> = []
  if (s.diverted.size === 0) return { divert, cut: n, undiverted }
  const routes = new Map<string, TenantRoute>()
  for (let i = 0; i < n; i++) {
    const t = tenantOf(i)
    if (t === undefined) continue
    let r = routes.get(t)
    if (r === undefined) {
      const wasDiverted = s.diverted.has(t)
      r = routeOf(s, t, healthy(t), committed, now)
      if (wasDiverted && r === "direct") undiverted.push(t)
      routes.set(t, r)
    }
    if (r === "drain") return { divert, cut: i, undiverted }
    if (r === "divert") divert[i] = 1
  }
  return { divert, cut: n, undiverted }
}
