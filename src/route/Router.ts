/**
 * Router: takes record batches from the EventStream, decodes them as Events, optionally decrypts
 * their `message`, and delivers each tenant's events to its targets, one call per destination
 * per batch. Offsets move only after every destination of every event up to them succeeded.
 *
 * A batch, in order:
 * 1. decode every record (effect/Schema, RouterLines.ts), decrypt and format it, synchronously for the
 *    whole batch (no Effect per record; tenants' keys parsed once per tenants file); poison
 *    (undecodable, unknown tenant, undecryptable) becomes a dead letter;
 * 2. publish the dead letters (retrying until Kafka takes them: a poison record is never skipped silently);
 * 3. deliver each destination's lines concurrently, each on its own retry budget (exponential,
 *    jittered, capped Schedule; only retryable errors are retried);
 * 4. a destination that refuses permanently (4xx) sends its events to the dead-letter topic;
 * 5. if every destination succeeded, commit the batch's last offset; if one ran out of budget,
 *    commit the records before the first event it did not take, and pause only this partition,
 *    rewound to that event, for a backoff that grows while it keeps failing (capped). The other
 *    partitions keep flowing; the events after the cut are delivered again (at least once).
 */
import { Console, Duration, Effect, Either, Fiber, Metric, Ref, Schedule, type Scope, Stream } from "effect"
import type { DestinationError } from "../domain/Errors.js"
import type { AccessKey } from "../domain/Event.js"
import { type Target, type TenantsFile, targetName } from "../domain/Tenant.js"
import { ConfigStore } from "../shared/ConfigStore.js"
import { Crypto } from "../shared/Crypto.js"
import { type DeadLetter, type DeadLetterReason, DeadLetters, deadLettersTotal } from "../shared/DeadLetter.js"
import { Health } from "../shared/Health.js"
import { Destinations } from "./Destinations.js"
import { type ConsumerCrashed, EventStream, type RecordBatch, type SourceRecord } from "./EventStream.js"
import { type KeyEntry, prepareRecords, reasonCodes } from "./RouterLines.js"

export {
  decodeRecord,
  formatLine,
  openMessage,
  prepareRecords,
  type RoutedEvent,
  RouterWireEvent,
  timestampOf,
} from "./RouterLines.js"

export interface RouterOptions {
  readonly decrypt: boolean
  readonly printEvents: boolean
  /** Per destination and batch: first retry delay, longest delay, and total time before giving up (pausing). */
  readonly retryBase: Duration.DurationInput
  readonly retryCap: Duration.DurationInput
  readonly retryBudget: Duration.DurationInput
  /** Partition pause after a destination ran out of budget: first pause and longest pause. */
  readonly pauseBase: Duration.DurationInput
  readonly pauseMax: Duration.DurationInput
  /** Batches processed at once (one per partition). */
  readonly concurrency: number
}

export const defaultRouterOptions: RouterOptions = {
  decrypt: false,
  printEvents: false,
  retryBase: "200 millis",
  retryCap: "5 seconds",
  retryBudget: "20 seconds",
  pauseBase: "1 second",
  pauseMax: "1 minute",
  concurrency: 4,
}

// ---------------------------------------------------------------------------------------------
// Metrics

const eventsOut = Metric.counter("router_events_out_total", {
  description: "Events delivered, per destination",
  incremental: true,
})
const destinationErrors = Metric.counter("router_destination_errors_total", {
  description: "Failed delivery attempts, per destination",
  incremental: true,
})
const destinationRetries = Metric.counter("router_destination_retries_total", {
  description: "Delivery attempts that were retries, per destination",
  incremental: true,
})
const withoutTargets = Metric.counter("router_events_without_targets_total", {
  description: "Events of tenants that have no targets (dropped by configuration)",
  incremental: true,
})
const tagged = (
  m: Metric.Metric.Counter<number>,
  destination: string,
  key = "destination",
): Metric.Metric.Counter<number> => m.pipe(Metric.tagged(key, destination))

/** A key per distinct target (not for display: http urls may carry tokens). */
const targetKey = (t: Target): string => ("file" in t ? `file\u0000${t.file}` : `http\u0000${t.http.url}`)

interface Group {
  readonly target: Target
  readonly name: string
  readonly lines: Array<string>
  readonly records: Array<SourceRecord>
}

/** The tenants' keys as `prepareRecords` takes them, with the tenants file they were parsed from. */
interface TenantKeys {
  readonly tenants: TenantsFile
  readonly entries: ReadonlyMap<string, KeyEntry>
}

type Outcome =
  | { readonly _tag: "Delivered"; readonly group: Group }
  | { readonly _tag: "Refused"; readonly group: Group; readonly error: DestinationError }
  | { readonly _tag: "Exhausted"; readonly group: Group; readonly error: DestinationError }

// ---------------------------------------------------------------------------------------------
// The processor

export const makeRouter = (options: RouterOptions) =>
  Effect.gen(function* () {
    const store = yield* ConfigStore
    const crypto = yield* Crypto
    const destinations = yield* Destinations
    const deadLetters = yield* DeadLetters
    /** Set at shutdown: destinations stop retrying, so the batches in flight end (commit their prefix) quickly. */
    let stopping = false
    /** The keys of the current tenants file, parsed once per version of the file (not per batch or event). */
    let keysOf: TenantKeys | undefined
    const tenantKeys = (tenants: TenantsFile) =>
      Effect.gen(function* () {
        if (keysOf?.tenants === tenants) return keysOf
        const entries = new Map<string, KeyEntry>()
        for (const [accessKey, tenant] of Object.entries(tenants)) {
          if (!options.decrypt) {
            entries.set(accessKey, null)
            continue
          }
          const key = yield* Effect.either(crypto.key(tenant.EncryptionKey))
          entries.set(
            accessKey,
            Either.isLeft(key) ? "the tenant's EncryptionKey is unusable" : (key.right.bytes ?? null),
          )
        }
        keysOf = { tenants, entries }
        return keysOf
      })
    /** Consecutive pauses per partition, for the pause backoff. */
    const pauses = yield* Ref.make(new Map<string, number>())

    const retryPolicy = Schedule.exponential(options.retryBase).pipe(
      Schedule.union(Schedule.spaced(options.retryCap)),
      Schedule.jittered,
      Schedule.upTo(options.retryBudget),
    )
    const letterPolicy = Schedule.exponential("200 millis").pipe(
      Schedule.union(Schedule.spaced("10 seconds")),
      Schedule.jittered,
    )

    const publishLetters = (letters: ReadonlyArray<DeadLetter>) =>
      letters.length === 0
        ? Effect.void
        : Effect.gen(function* () {
            yield* deadLetters.publish(letters).pipe(
              Effect.tapError((e) => Effect.logWarning("dead-letter topic unavailable, retrying", e.detail)),
              Effect.retry(letterPolicy),
              Effect.orDie, // letterPolicy never ends
            )
            for (const l of letters) {
              yield* Metric.increment(tagged(deadLettersTotal, l.reason, "reason"))
              yield* Effect.logWarning("record sent to the dead-letter topic").pipe(
                Effect.annotateLogs({
                  reason: l.reason,
                  detail: l.detail,
                  partition: l.partition,
                  offset: l.offset,
                  ...(l.target === undefined ? {} : { target: l.target }),
                }),
              )
            }
          })

    const deliverGroup = (group: Group): Effect.Effect<Outcome> => {
      let attempts = 0
      return Effect.suspend(() => {
        attempts++
        return destinations.deliver(group.target, group.lines)
      }).pipe(
        Effect.tapError((e) =>
          Effect.zipRight(
            Metric.increment(tagged(destinationErrors, group.name)),
            Effect.logWarning("destination failed").pipe(
              Effect.annotateLogs({
                destination: group.name,
                retryable: e.retryable,
                detail: e.detail,
                attempt: attempts,
              }),
            ),
          ),
        ),
        Effect.retry({ schedule: retryPolicy, while: (e) => e.retryable && !stopping }),
        Effect.ensuring(
          Effect.suspend(() =>
            attempts > 1 ? Metric.incrementBy(tagged(destinationRetries, group.name), attempts - 1) : Effect.void,
          ),
        ),
        Effect.matchEffect({
          onSuccess: () =>
            Metric.incrementBy(tagged(eventsOut, group.name), group.lines.length).pipe(
              Effect.as<Outcome>({ _tag: "Delivered", group }),
            ),
          onFailure: (error) =>
            Effect.succeed<Outcome>(
              error.retryable ? { _tag: "Exhausted", group, error } : { _tag: "Refused", group, error },
            ),
        }),
      )
    }

    const processBatch = (batch: RecordBatch): Effect.Effect<void> =>
      Effect.gen(function* () {
        const { topic, partition, records } = batch
        const tenants = yield* store.current
        const letters: Array<DeadLetter> = []
        const letter = (
          r: SourceRecord,
          reason: DeadLetter["reason"],
          detail: string,
          target?: string,
        ): DeadLetter => ({
          reason,
          detail,
          topic,
          partition,
          offset: r.offset,
          key: r.key,
          value: r.value,
          ...(target === undefined ? {} : { target }),
        })

        // Decode, decrypt and format every record (effect/Schema at the edge), then group the lines
        // by target and the poison by reason, in record order.
        const keys = yield* tenantKeys(tenants)
        const prepared = prepareRecords(
          records.map((r) => r.value),
          options.decrypt,
          keys.entries,
        )
        const groups = new Map<string, Group>()
        const routes = prepared.tenants.map((accessKey) => {
          const tenant = tenants[accessKey as AccessKey]
          const own: Array<Group> = []
          for (const target of tenant?.targets ?? []) {
            const k = targetKey(target)
            let g = groups.get(k)
            if (g === undefined) {
              g = { target, name: targetName(target), lines: [], records: [] }
              groups.set(k, g)
            }
            own.push(g)
          }
          return own
        })
        const printed: Array<string> = []
        let targetless = 0
        for (let i = 0; i < records.length; i++) {
          const r = records[i]!
          const code = prepared.reasons[i]!
          if (code !== 0) {
            letters.push(letter(r, reasonCodes[code] as DeadLetterReason, prepared.texts[i]!))
            continue
          }
          const line = prepared.texts[i]!
          const own = routes[prepared.tenantIndex[i]!]!
          if (options.printEvents) printed.push(line)
          if (own.length === 0) targetless++
          for (const g of own) {
            g.lines.push(line)
            g.records.push(r)
          }
        }
        if (printed.length > 0) yield* Console.log(printed.join("\n"))
        if (targetless > 0) yield* Metric.incrementBy(withoutTargets, targetless)

        yield* publishLetters(letters)
        const outcomes = yield* Effect.forEach(
          Array.from(groups.values()).filter((g) => g.lines.length > 0),
          deliverGroup,
          { concurrency: 4 },
        )

        const refused = outcomes.filter((o) => o._tag === "Refused")
        yield* publishLetters(
          refused.flatMap((o) =>
            o.group.records.map((r) => letter(r, "destination_rejected", o.error.detail, o.group.name)),
          ),
        )

        const exhausted = outcomes.filter((o) => o._tag === "Exhausted")
        const pkey = `${topic}\u0000${partition}`
        if (yield* batch.isStale) return
        if (exhausted.length === 0) {
          yield* Ref.update(pauses, (m) => {
            if (!m.has(pkey)) return m
            const next = new Map(m)
            next.delete(pkey)
            return next
          })
          yield* batch.commit(records.at(-1)!.offset)
          return
        }
        // The first record some exhausted destination did not take: everything before it is delivered.
        // (Records are in offset order, and so is each group's.)
        const firsts = new Set(exhausted.map((o) => o.group.records[0]!.offset))
        const cutIndex = records.findIndex((r) => firsts.has(r.offset))
        const cut = records[cutIndex]!.offset
        if (cutIndex > 0) yield* batch.commit(records[cutIndex - 1]!.offset)
        const n = (yield* Ref.get(pauses)).get(pkey) ?? 0
        yield* Ref.update(pauses, (m) => new Map(m).set(pkey, n + 1))
        const base = Duration.toMillis(Duration.decode(options.pauseBase))
        const max = Duration.toMillis(Duration.decode(options.pauseMax))
        const delay = Math.min(max, base * 2 ** Math.min(n, 20)) * (0.8 + Math.random() * 0.4)
        yield* Effect.logWarning("destination out of retry budget; pausing the partition").pipe(
          Effect.annotateLogs({
            destinations: exhausted.map((o) => o.group.name),
            detail: exhausted.map((o) => o.error.detail),
            from: cut,
          }),
        )
        yield* batch.retryFrom(cut, Duration.millis(Math.round(delay)))
      }).pipe(
        Effect.annotateLogs({ topic: batch.topic, partition: batch.partition }),
        Effect.withSpan("Router.processBatch", {
          attributes: { partition: batch.partition, records: batch.records.length },
        }),
      )

    /** processBatch with a heartbeat while it runs; a defect rewinds the batch instead of skipping it. */
    const handle = (batch: RecordBatch): Effect.Effect<void> =>
      Effect.gen(function* () {
        const beat = yield* batch.heartbeat.pipe(Effect.delay("3 seconds"), Effect.forever, Effect.fork)
        yield* processBatch(batch).pipe(
          Effect.catchAllDefect((defect) =>
            Effect.logError("batch failed; it will be read again", defect).pipe(
              Effect.zipRight(batch.retryFrom(batch.records[0]!.offset, options.pauseBase)),
            ),
          ),
          Effect.ensuring(Fiber.interrupt(beat)),
        )
      }).pipe(Effect.ensuring(batch.done))

    const stop = Effect.sync(() => {
      stopping = true
    })

    return { processBatch, handle, stop } as const
  })

/**
 * The router as a program: runs the batches of the EventStream through the processor in the
 * background and registers the consumer's readiness, then waits; it fails only if the consumer
 * crashed for good. When its scope closes (SIGTERM), it first drains the consumer (the batches in
 * flight finish, destinations stop retrying, their offsets are committed), then stops processing.
 */
export const runRouter = (
  options: RouterOptions,
): Effect.Effect<
  never,
  ConsumerCrashed,
  Scope.Scope | EventStream | ConfigStore | Crypto | Destinations | DeadLetters | Health
> =>
  Effect.gen(function* () {
    const stream = yield* EventStream
    const health = yield* Health
    yield* health.register("kafka-consumer", stream.ready)
    const { handle, stop } = yield* makeRouter(options)
    yield* stream.batches.pipe(
      Stream.mapEffect(handle, { concurrency: options.concurrency, unordered: true }),
      Stream.runDrain,
      Effect.forkScoped,
    )
    // Added after the fork, so it runs before the processing fiber is interrupted.
    yield* Effect.addFinalizer(() => Effect.zipRight(stop, stream.drain))
    yield* Effect.logInfo("router started").pipe(
      Effect.annotateLogs({ decrypt: options.decrypt, printEvents: options.printEvents }),
    )
    return yield* stream.crashed
  })
