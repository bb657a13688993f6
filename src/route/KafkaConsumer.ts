/**
 * The Kafka side of the EventStream: the kafkajs consumer's settings, its events (joined, crashed), connecting and
 * subscribing on the one backoff Schedule (src/shared/Retry.ts), the RecordBatch handed out for each kafkajs batch
 * (commit, rewind, heartbeat), and a drain bounded in time.
 */
import { Data, Deferred, Duration, Effect, FiberSet, Ref } from "effect"
import type { Consumer, ConsumerConfig, EachBatchPayload, Kafka } from "kafkajs"
import { commitAs, type GroupMember } from "../shared/Kafka.js"
import * as Metrics from "../shared/Metrics.js"
import { backoff } from "../shared/Retry.js"
import { undecodableReason } from "./BatchGuard.js"
import { type RecordBatch, type SourceRecord, sourceOf, type Undecodable } from "./RecordBatch.js"
import { consumerLag, partitionPauses } from "./RouterMetrics.js"

/** The consumer stopped and will not restart (a non-retriable Kafka error): the program should exit. */
export class ConsumerCrashed extends Data.TaggedError("ConsumerCrashed")<{ readonly detail: string }> {
  override get message() {
    return `the Kafka consumer crashed: ${this.detail}`
  }
}

export interface KafkaStreamOptions {
  readonly topic: string
  readonly groupId: string
  /** Batches of different partitions processed at once (default 4). */
  readonly partitionsConcurrently?: number
  /** Largest fetch per partition in bytes (default 2 MiB): bounds a batch, hence memory and request sizes. */
  readonly maxBytesPerPartition?: number
  /** Consumer group session timeout in ms (default 30 s; a crashed router's partitions move after it). */
  readonly sessionTimeoutMs?: number
  /** How long `drain` waits for batches in flight (default 15 s). */
  readonly drainTimeout?: Duration.DurationInput
}

/**
 * 2 MiB, measured with `npm run bench` (route scenario, 100,000 records, two interleaved runs each): the router's
 * peak RSS grows by about 13 MiB per MiB of this (1 MiB: 210, 2 MiB: 226, 4 MiB: 249 MiB), its CPU per event was
 * the same at 2 and 4 MiB (2.2-2.4 CPU-s per 100k events) and a quarter higher at 1 MiB (2.8: more fetch rounds,
 * fsyncs and commits).
 */
export const defaultMaxBytesPerPartition = 2 * 1_048_576

/** Pure: the kafkajs consumer settings for these options. */
export const consumerConfig = (options: KafkaStreamOptions): ConsumerConfig => {
  const perPartition = options.maxBytesPerPartition ?? defaultMaxBytesPerPartition
  const session = options.sessionTimeoutMs ?? 30_000
  return {
    groupId: options.groupId,
    maxWaitTimeInMs: 500,
    maxBytesPerPartition: perPartition,
    // kafkajs' default (10 MiB) would cap a fetch of 4 partitions below their share.
    maxBytes: Math.max(10_485_760, 4 * perPartition),
    sessionTimeout: session,
    heartbeatInterval: Math.min(3_000, Math.floor(session / 3)),
    allowAutoTopicCreation: true,
  }
}

/**
 * Follows the consumer's events: `joined` while it is in the group, `fatal` once it crashed for good. Returns the
 * member's id and generation as last seen in a heartbeat or commit (undefined from a join until then).
 */
export const watchConsumer = (
  consumer: Consumer,
  ctx: {
    readonly groupId: string
    readonly joined: Ref.Ref<boolean>
    readonly fatal: Deferred.Deferred<ConsumerCrashed>
    /** Counts the joins. */
    readonly joins: { count: number }
    readonly runPromise: (effect: Effect.Effect<unknown>) => Promise<unknown>
  },
): (() => GroupMember | undefined) => {
  const run = (effect: Effect.Effect<unknown>) => {
    ctx.runPromise(effect).catch(() => undefined)
  }
  let generation: GroupMember | undefined
  const seen = (e: { payload: { memberId: string; groupGenerationId: number } }) => {
    generation = { groupId: ctx.groupId, memberId: e.payload.memberId, generationId: e.payload.groupGenerationId }
  }
  consumer.on(consumer.events.HEARTBEAT, seen)
  consumer.on(consumer.events.COMMIT_OFFSETS, seen)
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    ctx.joins.count++
    generation = undefined
    run(
      Effect.zipRight(
        Ref.set(ctx.joined, true),
        Effect.logInfo("joined the consumer group").pipe(
          Effect.annotateLogs({
            groupId: ctx.groupId,
            memberId: e.payload.memberId,
            assignment: e.payload.memberAssignment,
          }),
        ),
      ),
    )
  })
  consumer.on(consumer.events.CRASH, (e) => {
    if (e.payload.restart) {
      // kafkajs restarts the consumer itself; it rejoins as the same member (consumerKeepingMemberId).
      generation = undefined
      return
    }
    run(Deferred.succeed(ctx.fatal, new ConsumerCrashed({ detail: String(e.payload.error ?? "unknown error") })))
  })
  // A crash, or a stop or disconnect that carries an error, is a warning; a plain stop or disconnect is the router
  // stopping the consumer itself (SIGTERM, a rejoin), and is info.
  for (const ev of [consumer.events.CRASH, consumer.events.STOP, consumer.events.DISCONNECT]) {
    consumer.on(ev, (e: { payload?: { error?: unknown } }) => {
      const error = e.payload?.error
      const log =
        ev === consumer.events.CRASH || error !== undefined
          ? Effect.logWarning(`consumer ${ev}`).pipe(Effect.annotateLogs({ error: String(error ?? "") }))
          : Effect.logInfo(`consumer ${ev}`)
      run(Effect.zipRight(Ref.set(ctx.joined, false), log))
    })
  }
  return () => generation
}

const causeText = (e: { readonly cause?: unknown }) => (e.cause instanceof Error ? e.cause.message : String(e.cause))

/**
 * Connects (disconnecting when the scope closes, within 10 s) and subscribes, each retried on the backoff Schedule:
 * a broker still starting, or a topic not created yet (the broker's auto-creation or the ingester creates it).
 */
export const connectConsumer = (consumer: Consumer, topic: string) =>
  Effect.gen(function* () {
    yield* Effect.acquireRelease(
      Effect.tryPromise(() => consumer.connect()).pipe(
        Effect.tapError((e) => Effect.logWarning(`cannot connect the consumer, retrying: ${causeText(e)}`)),
        Effect.retry(backoff({ base: "500 millis", cap: "5 seconds", budget: "5 minutes" })),
        Effect.orDie,
      ),
      () =>
        // `interruptible`: a finalizer runs uninterruptibly, and a timeout cannot end what it cannot interrupt.
        Effect.promise(() => consumer.disconnect().catch(() => undefined)).pipe(
          Effect.interruptible,
          Effect.timeout("10 seconds"),
          Effect.ignore,
        ),
    )
    yield* Effect.tryPromise(() => consumer.subscribe({ topic, fromBeginning: true })).pipe(
      Effect.tapError((e) => Effect.logWarning(`cannot subscribe to ${topic} yet, retrying: ${causeText(e)}`)),
      Effect.retry(backoff({ base: "200 millis", cap: "2 seconds", budget: "2 minutes" })),
      Effect.orDie,
    )
  })

/**
 * Stops fetching and waits, at most `timeout`, for the batches in flight. It runs in a finalizer (uninterruptible):
 * `interruptible` lets the time limit end a `consumer.stop()` that waits for an eachBatch that does not return.
 */
export const drainConsumer = (consumer: Consumer, timeout: Duration.DurationInput): Effect.Effect<void> =>
  Effect.promise(() => consumer.stop().catch(() => undefined)).pipe(
    Effect.interruptible,
    Effect.timeoutTo({ duration: timeout, onSuccess: () => true, onTimeout: () => false }),
    Effect.tap((stopped) =>
      stopped ? Effect.void : Effect.logWarning("the batches in flight did not end in time; stopping anyway"),
    ),
    Effect.zipRight(Effect.logInfo("consumer stopped")),
  )

/** Pure: the records of a fetched batch up to the first stand-in of an undecodable batch, and that one's offset. */
export const splitUndecodable = (
  messages: ReadonlyArray<{
    readonly offset: string
    readonly key: Buffer | null
    readonly value: Buffer | null
    readonly timestamp: string
    readonly headers?: Readonly<Record<string, unknown>>
  }>,
): { readonly records: ReadonlyArray<SourceRecord>; readonly undecodable?: Undecodable } => {
  const records: Array<SourceRecord> = []
  for (const m of messages) {
    const reason = undecodableReason(m.value)
    if (reason !== undefined) return { records, undecodable: { offset: m.offset, reason } }
    const source = sourceOf(m.headers)
    const r = { offset: m.offset, key: m.key, value: m.value, timestamp: m.timestamp }
    records.push(source === undefined ? r : { ...r, source })
  }
  return { records }
}

export interface BatchContext {
  readonly consumer: Consumer
  readonly topic: string
  /** The client, and this consumer's member id and generation (`watchConsumer`), for commits kafkajs cannot make. */
  readonly kafka: Kafka
  readonly member: () => GroupMember | undefined
  /** How many times the consumer joined its group so far (`watchConsumer`). */
  readonly assignment?: () => number
  /** The fibers that resume paused partitions (they end with the stream's scope). */
  readonly resumers: FiberSet.FiberSet
}

/**
 * kafkajs' answers to a commit that say this member's generation is over: the group is rebalancing and the partition
 * may be someone else's already. Retrying cannot help (kafkajs rejoins only once eachBatch returns): the records
 * after the last commit are delivered again instead.
 */
const generationOver = new Set([
  "ILLEGAL_GENERATION",
  "UNKNOWN_MEMBER_ID",
  "REBALANCE_IN_PROGRESS",
  "FENCED_INSTANCE_ID",
])

/** The innermost cause kafkajs wraps (KafkaJSNumberOfRetriesExceeded, KafkaJSNonRetriableError hold one). */
const rootCause = (e: unknown, depth = 0): unknown => {
  const cause = typeof e === "object" && e !== null ? (e as { cause?: unknown }).cause : undefined
  return cause === undefined || depth > 4 ? e : rootCause(cause, depth + 1)
}

/**
 * Pure: whether a commit that failed with `error` is worth trying again: a retriable kafkajs error (NOT_COORDINATOR
 * while the coordinator moves, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, REQUEST_TIMED_OUT, a broken
 * connection) that does not end the generation.
 */
export const commitRetriable = (error: unknown): boolean => {
  const root = rootCause(error) as { readonly type?: unknown; readonly retriable?: unknown }
  if (typeof root !== "object" || root === null) return false
  if (typeof root.type === "string" && generationOver.has(root.type)) return false
  return root.retriable === true || (error as { name?: unknown }).name === "KafkaJSNumberOfRetriesExceeded"
}

/**
 * A commit refused for a passing reason is tried again on this Schedule unless the batch went stale (sought); 20 s
 * at most, inside the session timeout, as the partition waits meanwhile. A coordinator SIGKILLed in the three-broker
 * test cluster (`broker.session.timeout.ms` 4 s) took 7 to 10 s to be elected again; with Kafka's default 9 s, longer.
 */
export const commitRetryPolicy = backoff({ base: "200 millis", cap: "2 seconds", budget: "20 seconds" })

class CommitFailed extends Data.TaggedError("CommitFailed")<{ readonly error: unknown }> {}

/** Resolves and commits up to `offset` (the offset committed is the next one to read), and sets the lag. */
const commitUpTo = (ctx: BatchContext, payload: EachBatchPayload, offset: string) =>
  Effect.gen(function* () {
    const { batch } = payload
    payload.resolveOffset(offset)
    // Committed now, explicitly (with kafkajs' defaults `commitOffsetsIfNecessary()` alone would wait for the end
    // of eachBatch).
    const next = BigInt(offset) + 1n
    // While kafkajs stops (shutdown, or a crash it restarts from) the records are still delivered: commit them all
    // the same; the coordinator refuses a generation that is over.
    const current = Effect.sync(() => !payload.isStale())
    const commit = { topic: batch.topic, partition: batch.partition, offset: next.toString() }
    let tries = 0
    // Tried again, the commit goes to the coordinator as found now: kafkajs would send it to the one of its last join.
    const attempt = Effect.suspend(() => {
      const member = tries++ === 0 ? undefined : ctx.member()
      return Effect.tryPromise({
        try: () =>
          member === undefined
            ? payload.commitOffsetsIfNecessary({
                topics: [{ topic: commit.topic, partitions: [{ partition: commit.partition, offset: commit.offset }] }],
              })
            : commitAs(ctx.kafka, member, commit),
        catch: (error) => new CommitFailed({ error }),
      })
    })
    yield* attempt.pipe(
      Effect.tapError((e) =>
        Effect.logWarning("commit failed", e.error).pipe(Effect.annotateLogs({ partition: batch.partition, offset })),
      ),
      Effect.retry({
        schedule: commitRetryPolicy,
        while: (e) => (commitRetriable(e.error) ? current : Effect.succeed(false)),
      }),
      Effect.tapError(() =>
        Effect.logWarning("cannot commit; the records will be delivered again").pipe(
          Effect.annotateLogs({ partition: batch.partition, offset }),
        ),
      ),
      Effect.ignore,
    )
    const lag = BigInt(batch.highWatermark) - next
    yield* Metrics.set(consumerLag, Number(lag < 0n ? 0n : lag), { topic: ctx.topic, partition: batch.partition })
  })

/** Pauses the partition, rewinds it to `offset`, and resumes it after `delay` (in a fiber of `resumers`). */
const rewind = (ctx: BatchContext, payload: EachBatchPayload, offset: string, delay: Duration.DurationInput) =>
  Effect.gen(function* () {
    const { topic, partition } = payload.batch
    const tp = [{ topic, partitions: [partition] }]
    // kafkajs throws when the consumer is no longer running (shutdown): then nothing is committed past `offset`
    // anyway, and the next owner reads from the last commit.
    const paused = yield* Effect.try(() => {
      ctx.consumer.pause(tp)
      ctx.consumer.seek({ topic, partition, offset })
    }).pipe(
      Effect.as(true),
      Effect.catchAll((e) => Effect.logWarning(`cannot pause the partition: ${e.error}`).pipe(Effect.as(false))),
    )
    if (!paused) return
    yield* Metrics.inc(partitionPauses)
    yield* Effect.logWarning("partition paused").pipe(
      Effect.annotateLogs({ partition, from: offset, resumeInMs: Duration.toMillis(Duration.decode(delay)) }),
    )
    yield* FiberSet.run(
      ctx.resumers,
      Effect.sleep(delay).pipe(
        Effect.zipRight(Effect.try(() => ctx.consumer.resume(tp)).pipe(Effect.ignore)),
        Effect.zipRight(Effect.logInfo("partition resumed").pipe(Effect.annotateLogs({ partition }))),
      ),
    )
  })

/** The RecordBatch of a kafkajs batch; `released` completes when the router is done with it. */
export const recordBatchOf = (
  ctx: BatchContext,
  payload: EachBatchPayload,
  split: { readonly records: ReadonlyArray<SourceRecord>; readonly undecodable?: Undecodable },
  released: Deferred.Deferred<void>,
): RecordBatch => ({
  topic: payload.batch.topic,
  partition: payload.batch.partition,
  records: split.records,
  ...(split.undecodable === undefined ? {} : { undecodable: split.undecodable }),
  highWatermark: payload.batch.highWatermark,
  assignment: ctx.assignment?.() ?? 0,
  commit: (offset) => commitUpTo(ctx, payload, offset),
  retryFrom: (offset, delay) => rewind(ctx, payload, offset, delay),
  heartbeat: Effect.tryPromise(() => payload.heartbeat()).pipe(Effect.ignore),
  isStale: Effect.sync(() => payload.isStale() || !payload.isRunning()),
  done: Deferred.succeed(released, undefined).pipe(Effect.asVoid),
})
