/**
 * Divert: the effectful side of isolation (Isolation.ts holds the decisions; docs/isolation.md the design). For a
 * batch of the source topic: which records skip the direct path (`planSource`), writing them to the retry topic
 * (`writeDiverted`), and, after the deliveries, whether the records a destination did not take are set aside
 * instead of rewinding the partition (`divertFailed`). Nothing here commits: RouteBatch.ts commits a batch only after
 * the retry topic acknowledged what was diverted from it.
 */
import { Clock, type Duration, Effect, type Schedule } from "effect"
import type { SinkUnavailable } from "../domain/Errors.js"
import type { TenantsFile } from "../domain/Tenant.js"
import * as Metrics from "../shared/Metrics.js"
import type { RecordBatch } from "./EventStream.js"
import { type IsolationState, noteDiverted, overThreshold, type Plan, planBatch, targetKey } from "./Isolation.js"
import type { RetryTopic } from "./RetryTopic.js"
import type { PreparedRecords } from "./RouterLines.js"
import * as M from "./RouterMetrics.js"

export interface IsolationContext {
  readonly state: IsolationState
  readonly retry: RetryTopic["Type"]
  /** How long a source partition waits before it is read again while a tenant drains (short). */
  readonly drainPause: Duration.DurationInput
  /** The retry group's committed offsets, as last fetched (at most every `snapshotMs`). */
  readonly snapshot: { at: number; committed: ReadonlyMap<number, bigint> | undefined }
  /** Per source partition, the assignment (RecordBatch.assignment) at which the retry topic was last read for it. */
  readonly scanned: Map<number, number>
}

const snapshotMs = 200

/** Pure: the tenant of record i, or undefined when it is a dead letter. */
export const tenantAt = (prepared: PreparedRecords, i: number): string | undefined =>
  prepared.reasons[i] === 0 ? prepared.tenants[prepared.tenantIndex[i]!] : undefined

/** Pure: whether none of the tenant's targets is failing. */
const healthyIn = (state: IsolationState, tenants: TenantsFile) => (tenant: string) =>
  (tenants[tenant as keyof TenantsFile]?.targets ?? []).every((t) => !state.failing.has(targetKey(t)))

/** The plan of a source batch: records to divert, and where a drain cuts it (see Isolation.planBatch). */
export const planSource = (
  iso: IsolationContext,
  batch: RecordBatch,
  prepared: PreparedRecords,
  tenants: TenantsFile,
): Effect.Effect<Plan> =>
  Effect.gen(function* () {
    const { state } = iso
    yield* learnSetAside(iso, batch, tenants)
    const n = batch.records.length
    const healthy = healthyIn(state, tenants)
    const now = yield* Clock.currentTimeMillis
    // The retry group's offsets matter only when a diverted tenant of this batch may go back to the direct path.
    if (prepared.tenants.some((t) => state.diverted.has(t) && healthy(t)) && now - iso.snapshot.at >= snapshotMs) {
      iso.snapshot.committed = yield* iso.retry.committed.pipe(
        Effect.tapError((e) => Effect.logWarning("cannot read the retry path's progress", e.detail)),
        Effect.option,
        Effect.map((o) => (o._tag === "Some" ? o.value : undefined)),
      )
      iso.snapshot.at = now
    }
    const plan = planBatch(state, n, (i) => tenantAt(prepared, i), healthy, iso.snapshot.committed, now)
    for (const t of plan.undiverted) yield* Effect.logInfo("tenant delivered directly again").pipe(annotate(t, tenants))
    if (plan.cut < n) yield* Metrics.inc(M.drainPauses)
    yield* Metrics.set(M.divertedTenants, state.diverted.size)
    return plan
  })

/**
 * Once per source partition and assignment: which tenants are set aside in the retry topic and not delivered yet,
 * by this router before a restart or by another before a rebalance (RetryTopic.pending). Each becomes diverted here
 * too, so that its new records stay behind the set-aside ones. Without the retry topic's answer the router goes on
 * with what it knows (at worst such a tenant's new records overtake its set-aside ones; none is lost).
 */
const learnSetAside = (iso: IsolationContext, batch: RecordBatch, tenants: TenantsFile): Effect.Effect<void> => {
  const assignment = batch.assignment ?? 0
  if (iso.scanned.get(batch.partition) === assignment) return Effect.void
  iso.scanned.set(batch.partition, assignment)
  return iso.retry
    .pending(batch.partition, (key) => Object.hasOwn(tenants, key))
    .pipe(
      Effect.flatMap((p) =>
        Effect.gen(function* () {
          for (const [tenant, offset] of p.last) noteDiverted(iso.state, tenant, p.partition, offset)
          if (p.last.size > 0)
            yield* Effect.logInfo("tenants set aside before this assignment stay set aside").pipe(
              Effect.annotateLogs({ partition: batch.partition, tenants: p.last.size }),
            )
          if (!p.complete)
            yield* Effect.logWarning(
              "the retry backlog is larger than the scan reads; tenants past it may be reordered",
            )
          yield* Metrics.set(M.divertedTenants, iso.state.diverted.size)
        }),
      ),
      Effect.catchAll((e) => Effect.logWarning("cannot read what the retry topic holds", e.detail)),
    )
}

/** The tenant's UserID for logs (the access key is a credential). */
const annotate = (tenant: string, tenants: TenantsFile) =>
  Effect.annotateLogs({ user: tenants[tenant as keyof TenantsFile]?.UserID ?? "unknown" })

/**
 * Writes the records at `indexes` (in offset order) to the retry topic, retrying on `policy` while not stopping, and
 * marks their tenants diverted. False when the retry topic did not take them (the caller rewinds instead).
 */
export const writeDiverted = (
  iso: IsolationContext,
  batch: RecordBatch,
  prepared: PreparedRecords,
  indexes: ReadonlyArray<number>,
  policy: { readonly schedule: Schedule.Schedule<unknown>; readonly stopping: () => boolean },
): Effect.Effect<boolean> =>
  indexes.length === 0
    ? Effect.succeed(true)
    : Effect.gen(function* () {
        const records = indexes.map((i) => batch.records[i]!)
        const written = yield* iso.retry.write(batch.topic, batch.partition, records).pipe(
          Effect.tapError((e: SinkUnavailable) => Effect.logWarning("retry topic unavailable, retrying", e.detail)),
          Effect.retry({ schedule: policy.schedule, while: () => !policy.stopping() }),
          Effect.option,
        )
        if (written._tag === "None") return false
        const tenants = new Set(indexes.map((i) => tenantAt(prepared, i)!))
        for (const t of tenants) noteDiverted(iso.state, t, written.value.partition, written.value.lastOffset)
        yield* Metrics.inc(M.divertedRecords, records.length)
        yield* Metrics.set(M.divertedTenants, iso.state.diverted.size)
        return true
      })

/**
 * After the deliveries: the records (before `cut`, not diverted yet) of every tenant with a target among `exhausted`,
 * when each such tenant has a target failing for longer than the threshold; undefined otherwise (rewind as before).
 */
export const divertFailed = (
  iso: IsolationContext,
  prepared: PreparedRecords,
  tenants: TenantsFile,
  exhausted: ReadonlyArray<string>,
  plan: Plan,
  cut: number,
): Effect.Effect<ReadonlyArray<number> | undefined> =>
  Effect.gen(function* () {
    const now = yield* Clock.currentTimeMillis
    const failed = new Set(exhausted)
    const failedTenants = prepared.tenants.filter((t) =>
      (tenants[t as keyof TenantsFile]?.targets ?? []).some((target) => failed.has(targetKey(target))),
    )
    const over = (t: string) =>
      (tenants[t as keyof TenantsFile]?.targets ?? []).some((target) =>
        overThreshold(iso.state, targetKey(target), now),
      )
    if (failedTenants.length === 0 || !failedTenants.every(over)) return undefined
    const set = new Set(failedTenants)
    const indexes: Array<number> = []
    for (let i = 0; i < cut; i++) {
      const t = tenantAt(prepared, i)
      if (t !== undefined && set.has(t) && plan.divert[i] === 0) indexes.push(i)
    }
    for (const t of failedTenants)
      yield* Effect.logWarning(
        "destination failing past the threshold; the tenant's events go to the retry topic",
      ).pipe(annotate(t, tenants))
    return indexes
  })
