/**
 * The work on one record batch, as named functions over the router's context (`RouterContext`, built once by
 * `makeRouter` in Router.ts):
 * 1. `prepareRecords` (RouterLines.ts) decodes, decrypts and formats every record, synchronously for the batch;
 *    a record that fails in any way is that record's dead letter;
 * 2. `groupByTarget` (pure) puts the lines in record order per distinct target, the poison per reason;
 * 3. `publishLetters` retries until Kafka took the dead letters (a poison record is never skipped silently);
 * 4. `deliverGroup` delivers each destination's lines, concurrently, each on its own retry budget;
 * 5. `settle` commits the batch, or the prefix before the first event a destination did not take and rewinds the
 *    partition to it after a growing pause (Pauses.ts). The other partitions keep flowing.
 * With isolation (Divert.ts), set-aside tenants' records go to the retry topic before step 2, and a destination
 * failing past the threshold has its tenants' records set aside before step 5 instead of a rewind.
 */
import { Clock, Console, Duration, Effect, Either, type Schedule } from "effect"
import type { DestinationError } from "../domain/Errors.js"
import type { AccessKey } from "../domain/Event.js"
import { type Target, type TenantsFile, targetKind, targetName } from "../domain/Tenant.js"
import type { ConfigStore } from "../shared/ConfigStore.js"
import type { Crypto } from "../shared/Crypto.js"
import type { DeadLetter, DeadLetterReason, DeadLetters } from "../shared/DeadLetter.js"
import * as Metrics from "../shared/Metrics.js"
import type { Destinations } from "./Destinations.js"
import { divertFailed, type IsolationContext, planSource, writeDiverted } from "./Divert.js"
import type { LineFailure } from "./destinations/Delivery.js"
import type { RecordBatch, SourceRecord } from "./EventStream.js"
import { noteFailure, noteSuccess, overThreshold, type Plan, prune, targetKey } from "./Isolation.js"
import type { Pauses } from "./Pauses.js"
import { originOf } from "./RecordBatch.js"
import { type KeyEntry, type PreparedRecords, prepareRecords, reasonCodes } from "./RouterLines.js"
import * as M from "./RouterMetrics.js"

export interface RouterContext {
  readonly decrypt: boolean
  readonly printEvents: boolean
  readonly store: ConfigStore["Type"]
  readonly crypto: Crypto
  readonly destinations: Destinations["Type"]
  readonly deadLetters: DeadLetters["Type"]
  readonly pauses: Pauses
  readonly deliveryPolicy: Schedule.Schedule<unknown>
  readonly letterPolicy: Schedule.Schedule<unknown>
  /** `source`: the topic the ingesters write; `retry`: the retry topic (nothing is diverted from it). */
  readonly mode: "source" | "retry"
  /** Set when failing tenants are set aside in the retry topic (Divert.ts); shared by both modes. */
  readonly isolation: IsolationContext | undefined
  /** Mutable, owned by the router: set at shutdown (destinations and dead letters stop retrying). */
  readonly state: { stopping: boolean; keys: TenantKeys | undefined }
}

/** The tenants' keys as `prepareRecords` takes them, with the tenants file they were parsed from. */
export interface TenantKeys {
  readonly tenants: TenantsFile
  readonly entries: ReadonlyMap<string, KeyEntry>
}

/** The lines of one distinct target in a batch; `labels` name it in metrics and logs (kind and position). */
export interface Group {
  readonly target: Target
  readonly labels: { readonly destination: ReturnType<typeof targetKind>; readonly position: string }
  readonly lines: Array<string>
  readonly records: Array<SourceRecord>
}

export type Outcome =
  /** `refused`: lines the target refused one by one (indexes into the group's lines), for the dead-letter topic. */
  | { readonly _tag: "Delivered"; readonly group: Group; readonly refused: ReadonlyArray<LineFailure> }
  | { readonly _tag: "Refused"; readonly group: Group; readonly error: DestinationError }
  | { readonly _tag: "Exhausted"; readonly group: Group; readonly error: DestinationError }

/** What became of a batch: all committed, rewound (a prefix committed), or left as it was (stale, shutting down). */
export type Settled = "committed" | "rewound" | "left"

/** The keys of the current tenants file, parsed once per version of the file (not per batch or event). */
export const tenantKeys = (ctx: RouterContext, tenants: TenantsFile): Effect.Effect<TenantKeys> =>
  Effect.gen(function* () {
    if (ctx.state.keys?.tenants === tenants) return ctx.state.keys
    const entries = new Map<string, KeyEntry>()
    for (const [accessKey, tenant] of Object.entries(tenants)) {
      if (!ctx.decrypt) {
        entries.set(accessKey, null)
        continue
      }
      const key = yield* Effect.either(ctx.crypto.key(tenant.EncryptionKey))
      entries.set(accessKey, Either.isLeft(key) ? "the tenant's EncryptionKey is unusable" : (key.right.bytes ?? null))
    }
    ctx.state.keys = { tenants, entries }
    if (ctx.isolation !== undefined) prune(ctx.isolation.state, (k) => entries.has(k))
    return ctx.state.keys
  })

/** A dead letter of a record of `batch`. */
export const letterOf = (
  batch: RecordBatch,
  r: SourceRecord,
  reason: DeadLetterReason,
  detail: string,
  target?: string,
): DeadLetter => ({
  reason,
  detail,
  topic: batch.topic,
  partition: batch.partition,
  offset: r.offset,
  key: r.key,
  value: r.value,
  ...(target === undefined ? {} : { target }),
})

/** Pure: the prepared records of a batch as lines per distinct target, dead letters, printed lines, targetless count. */
export const groupByTarget = (
  batch: RecordBatch,
  tenants: TenantsFile,
  prepared: PreparedRecords,
  print: boolean,
  /** Records from `cut` on, and those marked in `skip`, are left out (a drain; diverted). */
  plan?: { readonly divert: Uint8Array; readonly cut: number },
) => {
  const groups = new Map<string, Group>()
  const routes = prepared.tenants.map((accessKey) =>
    (tenants[accessKey as AccessKey]?.targets ?? []).map((target, position) => {
      const k = targetKey(target)
      let g = groups.get(k)
      if (g === undefined) {
        g = { target, labels: { destination: targetKind(target), position: String(position) }, lines: [], records: [] }
        groups.set(k, g)
      }
      return g
    }),
  )
  const letters: Array<DeadLetter> = []
  const printed: Array<string> = []
  let targetless = 0
  batch.records.forEach((r, i) => {
    if (plan !== undefined && (i >= plan.cut || plan.divert[i] === 1)) return
    const code = prepared.reasons[i]!
    const text = prepared.texts[i]!
    if (code !== 0) {
      letters.push(letterOf(batch, r, reasonCodes[code] as DeadLetterReason, text))
      return
    }
    const own = routes[prepared.tenantIndex[i]!]!
    if (print) printed.push(text)
    if (own.length === 0) targetless++
    for (const g of own) {
      g.lines.push(text)
      g.records.push(r)
    }
  })
  return { groups: [...groups.values()].filter((g) => g.lines.length > 0), letters, printed, targetless }
}

/** Publishes dead letters, retrying until Kafka took them; false only when the router is stopping meanwhile. */
export const publishLetters = (ctx: RouterContext, letters: ReadonlyArray<DeadLetter>): Effect.Effect<boolean> =>
  letters.length === 0
    ? Effect.succeed(true)
    : Effect.gen(function* () {
        const sent = yield* ctx.deadLetters.publish(letters).pipe(
          Effect.tapError((e) => Effect.logWarning("dead-letter topic unavailable, retrying", e.detail)),
          Effect.retry({ schedule: ctx.letterPolicy, while: () => !ctx.state.stopping }),
          Effect.as(true),
          Effect.catchAll(() => Effect.succeed(false)),
        )
        if (!sent) return false
        for (const l of letters) {
          yield* Metrics.inc(M.deadLetters, 1, { reason: l.reason })
          yield* Effect.logWarning("record sent to the dead-letter topic").pipe(
            Effect.annotateLogs({ reason: l.reason, detail: l.detail, partition: l.partition, offset: l.offset }),
          )
        }
        return true
      })

/** Delivers one target's lines, retrying what is retryable within the budget (not once the router is stopping). */
export const deliverGroup = (ctx: RouterContext, batch: RecordBatch, group: Group): Effect.Effect<Outcome> => {
  let attempts = 0
  const origin = originOf(batch, group.records)
  const key = targetKey(group.target)
  const iso = ctx.isolation
  // On the source path with isolation, a target failing past the threshold stops retrying: its tenants are diverted.
  const pastThreshold =
    iso === undefined || ctx.mode === "retry"
      ? Effect.succeed(false)
      : Effect.map(Clock.currentTimeMillis, (now) => overThreshold(iso.state, key, now))
  return Effect.suspend(() => {
    attempts++
    return ctx.destinations.deliver(group.target, group.lines, origin)
  }).pipe(
    Effect.tapError((e) =>
      Effect.all([
        iso === undefined || !e.retryable
          ? Effect.void
          : Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => noteFailure(iso.state, key, now))),
        Metrics.inc(M.destinationErrors, 1, group.labels),
        Effect.logWarning("destination failed").pipe(
          Effect.annotateLogs({ ...group.labels, retryable: e.retryable, detail: e.detail, attempt: attempts }),
        ),
      ]),
    ),
    Effect.retry({
      schedule: ctx.deliveryPolicy,
      while: (e) =>
        e.retryable && !ctx.state.stopping ? Effect.map(pastThreshold, (past) => !past) : Effect.succeed(false),
    }),
    Effect.ensuring(
      Effect.suspend(() =>
        attempts > 1 ? Metrics.inc(M.destinationRetries, attempts - 1, group.labels) : Effect.void,
      ),
    ),
    Effect.matchEffect({
      onSuccess: (refused) =>
        Effect.gen(function* () {
          if (iso !== undefined) noteSuccess(iso.state, key)
          yield* Metrics.inc(M.eventsOut, group.lines.length - refused.length, group.labels)
          if (ctx.mode === "retry") yield* Metrics.inc(M.retryEventsOut, group.lines.length - refused.length)
          return { _tag: "Delivered", group, refused } as Outcome
        }),
      onFailure: (error) =>
        Effect.succeed<Outcome>(
          error.retryable ? { _tag: "Exhausted", group, error } : { _tag: "Refused", group, error },
        ),
    }),
  )
}

/** Commits the batch, or its delivered prefix and rewinds to the first event an exhausted destination did not take. */
export const settle = (
  ctx: RouterContext,
  batch: RecordBatch,
  outcomes: ReadonlyArray<Outcome>,
  drainCut: number = batch.records.length,
): Effect.Effect<Settled> =>
  Effect.gen(function* () {
    const { records } = batch
    if (yield* batch.isStale) return "left"
    const exhausted = outcomes.filter((o) => o._tag === "Exhausted")
    if (exhausted.length === 0 && drainCut >= records.length) {
      yield* batch.commit(records.at(-1)!.offset)
      return "committed"
    }
    if (exhausted.length === 0) {
      // A drain: everything before the cut is delivered or diverted; read again from it shortly.
      if (drainCut > 0) yield* batch.commit(records[drainCut - 1]!.offset)
      yield* batch.retryFrom(records[drainCut]!.offset, ctx.isolation?.drainPause ?? "200 millis")
      return "rewound"
    }
    // Records are in offset order, and so is each group's: everything before the first record some exhausted
    // destination did not take is delivered.
    const firsts = new Set(exhausted.map((o) => o.group.records[0]!.offset))
    const cutIndex = Math.min(
      drainCut,
      records.findIndex((r) => firsts.has(r.offset)),
    )
    const cut = records[cutIndex]!.offset
    if (cutIndex > 0) yield* batch.commit(records[cutIndex - 1]!.offset)
    const pause = yield* ctx.pauses.next(partitionKey(batch))
    yield* Effect.logWarning("destination out of retry budget; pausing the partition").pipe(
      Effect.annotateLogs({
        destinations: exhausted.map((o) => `${o.group.labels.destination}#${o.group.labels.position}`),
        detail: exhausted.map((o) => o.error.detail),
        from: cut,
      }),
    )
    yield* batch.retryFrom(cut, pause)
    return "rewound"
  })

export const partitionKey = (batch: { readonly topic: string; readonly partition: number }): string =>
  `${batch.topic}\u0000${batch.partition}`

const noPlan = (n: number): Plan => ({ divert: new Uint8Array(n), cut: n, undiverted: [] })

const writePolicy = (ctx: RouterContext) => ({ schedule: ctx.deliveryPolicy, stopping: () => ctx.state.stopping })

/**
 * The source path's plan (Divert.planSource), its diverted records written to the retry topic first. When the retry
 * topic does not take them, the batch is cut before the first of them (read again later; nothing skipped).
 */
const planAndDivert = (ctx: RouterContext, batch: RecordBatch, prepared: PreparedRecords, tenants: TenantsFile) =>
  Effect.gen(function* () {
    const n = batch.records.length
    const iso = ctx.isolation
    if (iso === undefined || ctx.mode === "retry") return noPlan(n)
    const plan = yield* planSource(iso, batch, prepared, tenants)
    const indexes: Array<number> = []
    for (let i = 0; i < plan.cut; i++) if (plan.divert[i] === 1) indexes.push(i)
    if (yield* writeDiverted(iso, batch, prepared, indexes, writePolicy(ctx))) return plan
    return { divert: new Uint8Array(n), cut: indexes[0]!, undiverted: plan.undiverted }
  })

/**
 * The source path with isolation: when every tenant a destination did not take has a target failing past the
 * threshold, those tenants' records of the batch go to the retry topic and the outcomes no longer hold the batch.
 */
const divertExhausted = (
  ctx: RouterContext,
  batch: RecordBatch,
  prepared: PreparedRecords,
  tenants: TenantsFile,
  plan: Plan,
  outcomes: ReadonlyArray<Outcome>,
): Effect.Effect<ReadonlyArray<Outcome>> =>
  Effect.gen(function* () {
    const iso = ctx.isolation
    const exhausted = outcomes.filter((o) => o._tag === "Exhausted")
    if (iso === undefined || ctx.mode === "retry" || exhausted.length === 0) return outcomes
    const keys = exhausted.map((o) => targetKey(o.group.target))
    const indexes = yield* divertFailed(iso, prepared, tenants, keys, plan, plan.cut)
    if (indexes === undefined || !(yield* writeDiverted(iso, batch, prepared, indexes, writePolicy(ctx))))
      return outcomes
    return outcomes.filter((o) => o._tag !== "Exhausted")
  })

/**
 * Routes the records of a (non-empty) batch; see the module's doc. No tracing span: the router installs no tracer,
 * and `Effect.withSpan` cost about 70 µs a batch (its captured call site and span objects; docs/benchmarks.md,
 * "Round 2 session 11").
 */
export const processBatch = (ctx: RouterContext, batch: RecordBatch): Effect.Effect<Settled> =>
  Effect.gen(function* () {
    const tenants = yield* ctx.store.current
    const keys = yield* tenantKeys(ctx, tenants)
    const prepared = prepareRecords(
      batch.records.map((r) => r.value),
      ctx.decrypt,
      keys.entries,
    )
    const plan = yield* planAndDivert(ctx, batch, prepared, tenants)
    const { groups, letters, printed, targetless } = groupByTarget(batch, tenants, prepared, ctx.printEvents, plan)
    if (printed.length > 0) yield* Console.log(printed.join("\n"))
    if (targetless > 0) yield* Metrics.inc(M.withoutTargets, targetless)

    if (!(yield* publishLetters(ctx, letters))) return "left"
    // One group (the usual batch of one tenant) without Effect.forEach's forks.
    const delivered =
      groups.length === 1
        ? [yield* deliverGroup(ctx, batch, groups[0]!)]
        : yield* Effect.forEach(groups, (g) => deliverGroup(ctx, batch, g), { concurrency: 4 })
    const refused = delivered.flatMap((o) =>
      o._tag === "Refused"
        ? o.group.records.map((r) =>
            letterOf(batch, r, "destination_rejected", o.error.detail, targetName(o.group.target)),
          )
        : o._tag === "Delivered"
          ? o.refused.map((f) =>
              letterOf(batch, o.group.records[f.index]!, "destination_rejected", f.reason, targetName(o.group.target)),
            )
          : [],
    )
    if (!(yield* publishLetters(ctx, refused))) return "left"
    const outcomes = yield* divertExhausted(ctx, batch, prepared, tenants, plan, delivered)
    return yield* settle(ctx, batch, outcomes, plan.cut)
  })

export const durationMillis = (d: Duration.Duration): number => Math.round(Duration.toMillis(d))
