/**
 * EventStream: the consumer side of the Kafka record contract (DESIGN.md), as an Effect Stream
 * of record batches. Each batch carries what is needed to move its offsets once it is written:
 *
 * - `commit(offset)` resolves every record up to and including `offset` and commits it;
 * - `retryFrom(offset, delay)` pauses only this partition, rewinds it to `offset` (the first
 *   record not yet delivered) and resumes it after `delay`;
 * - `done` releases the batch: kafkajs' `eachBatch` for it returns, so the next batch of the
 *   same partition can come. Whoever takes a batch from the stream must run `done` (the router
 *   runs it in `Effect.ensuring`).
 *
 * `layerKafka` runs a kafkajs consumer group with `eachBatch` and `eachBatchAutoResolve: false`:
 * nothing is resolved that the consumer of the stream did not resolve, so shutdowns and
 * rebalances commit what was written and nothing more. kafkajs hands out one batch per
 * partition at a time, so order within a partition is kept; several partitions can be in
 * flight at once (`partitionsConcurrently`), so a slow destination on one partition does not
 * hold the others.
 *
 * `layerMemory` serves fixed batches and records commits and rewinds, for tests.
 */
import { Context, Data, Deferred, Duration, Effect, FiberSet, Layer, Queue, Ref, Schedule, Stream } from "effect"
import type { Consumer, EachBatchPayload } from "kafkajs"
import { KafkaClient } from "../shared/Kafka.js"
import * as Metrics from "../shared/Metrics.js"
import { installBatchGuard, undecodableReason } from "./BatchGuard.js"
import { consumerLag, partitionPauses, recordsIn } from "./RouterMetrics.js"

/** The consumer stopped and will not restart (a non-retriable Kafka error): the program should exit. */
export class ConsumerCrashed extends Data.TaggedError("ConsumerCrashed")<{ readonly detail: string }> {
  override get message() {
    return `the Kafka consumer crashed: ${this.detail}`
  }
}

export interface SourceRecord {
  readonly offset: string
  readonly key: Uint8Array | null
  readonly value: Uint8Array | null
  readonly timestamp: string
}

/** A record batch in the fetch that could not be decoded (BatchGuard.ts): where, and why. */
export interface Undecodable {
  readonly offset: string
  readonly reason: string
}

export interface RecordBatch {
  readonly topic: string
  readonly partition: number
  /** In offset order. Never empty, unless `undecodable` is set (the batch that could not be decoded came first). */
  readonly records: ReadonlyArray<SourceRecord>
  /** The fetch held a batch that cannot be decoded after `records`: retry the partition from its offset. */
  readonly undecodable?: Undecodable
  readonly highWatermark: string
  /** Resolves every record up to and including `offset` and commits it. Call only once they are delivered. */
  readonly commit: (offset: string) => Effect.Effect<void>
  /** Pauses this partition, rewinds it to `offset`, and resumes it after `delay`. */
  readonly retryFrom: (offset: string, delay: Duration.DurationInput) => Effect.Effect<void>
  /** Tells the group coordinator the consumer is alive (long deliveries). */
  readonly heartbeat: Effect.Effect<void>
  /** True once the partition was rewound or revoked: the batch must not be delivered. */
  readonly isStale: Effect.Effect<boolean>
  /** Releases the batch (must run once, whatever happened). */
  readonly done: Effect.Effect<void>
}

export class EventStream extends Context.Tag("spillway/EventStream")<
  EventStream,
  {
    readonly batches: Stream.Stream<RecordBatch>
    /** Fails once the consumer stopped for good (kafkajs will not restart it); never succeeds. */
    readonly crashed: Effect.Effect<never, ConsumerCrashed>
    /** True once the consumer joined its group and is fetching. */
    readonly ready: Effect.Effect<boolean>
    /** Stops fetching and waits (bounded) for the batches in flight to finish, then commits what they resolved. */
    readonly drain: Effect.Effect<void>
  }
>() {
  static readonly layerKafka = (options: KafkaStreamOptions): Layer.Layer<EventStream, never, KafkaClient> =>
    Layer.scoped(EventStream, makeKafka(options))

  static readonly layerMemory = (batches: ReadonlyArray<MemoryBatch>, log: MemoryLog): Layer.Layer<EventStream> =>
    Layer.succeed(EventStream, makeMemory(batches, log))
}

export interface KafkaStreamOptions {
  readonly topic: string
  readonly groupId: string
  /** Batches of different partitions processed at once (default 4). */
  readonly partitionsConcurrently?: number
  /** Largest fetch per partition in bytes (default 4 MiB): bounds a batch, hence memory and request sizes. */
  readonly maxBytesPerPartition?: number
  /** Consumer group session timeout in ms (default 30 s; a crashed router's partitions move after it). */
  readonly sessionTimeoutMs?: number
  /** How long `drain` waits for batches in flight (default 15 s). */
  readonly drainTimeout?: Duration.DurationInput
}

/**
 * 4 MiB: measured with `npm run bench` (route scenario), fewer and larger batches (fetch rounds,
 * fsyncs, commits) than with kafkajs' 1 MiB routed about 10% more events/s, for little more memory.
 */
export const defaultMaxBytesPerPartition = 4 * 1_048_576

/** Pure: the records of a fetched batch up to the first stand-in of an undecodable batch, and that one's offset. */
export const splitUndecodable = (
  messages: ReadonlyArray<{
    readonly offset: string
    readonly key: Buffer | null
    readonly value: Buffer | null
    readonly timestamp: string
  }>,
): { readonly records: ReadonlyArray<SourceRecord>; readonly undecodable?: Undecodable } => {
  const records: Array<SourceRecord> = []
  for (const m of messages) {
    const reason = undecodableReason(m.value)
    if (reason !== undefined) return { records, undecodable: { offset: m.offset, reason } }
    records.push({ offset: m.offset, key: m.key, value: m.value, timestamp: m.timestamp })
  }
  return { records }
}

const makeKafka = (options: KafkaStreamOptions) =>
  Effect.gen(function* () {
    const kafka = yield* KafkaClient
    installBatchGuard()
    const { topic, groupId } = options
    const concurrency = options.partitionsConcurrently ?? 4
    const joined = yield* Ref.make(false)
    const fatal = yield* Deferred.make<ConsumerCrashed>()
    const queue = yield* Queue.bounded<RecordBatch>(1)
    const runPromise = yield* FiberSet.makeRuntimePromise<never>()
    const resumers = yield* FiberSet.make()

    const consumer: Consumer = kafka.consumer({
      groupId,
      maxWaitTimeInMs: 500,
      maxBytesPerPartition: options.maxBytesPerPartition ?? defaultMaxBytesPerPartition,
      // kafkajs' default (10 MiB) would cap a fetch of 4 partitions below their share.
      maxBytes: Math.max(10_485_760, 4 * (options.maxBytesPerPartition ?? defaultMaxBytesPerPartition)),
      sessionTimeout: options.sessionTimeoutMs ?? 30_000,
      heartbeatInterval: Math.min(3_000, Math.floor((options.sessionTimeoutMs ?? 30_000) / 3)),
      allowAutoTopicCreation: true,
    })
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      runPromise(
        Ref.set(joined, true).pipe(
          Effect.zipRight(
            Effect.logInfo("joined the consumer group").pipe(
              Effect.annotateLogs({ groupId, memberId: e.payload.memberId, assignment: e.payload.memberAssignment }),
            ),
          ),
        ),
      ).catch(() => undefined)
    })
    consumer.on(consumer.events.CRASH, (e) => {
      if (e.payload.restart) return // kafkajs restarts the consumer itself
      runPromise(
        Deferred.succeed(fatal, new ConsumerCrashed({ detail: String(e.payload.error ?? "unknown error") })),
      ).catch(() => undefined)
    })
    for (const ev of [consumer.events.CRASH, consumer.events.STOP, consumer.events.DISCONNECT]) {
      consumer.on(ev, (e: { payload?: { error?: unknown } }) => {
        runPromise(
          Ref.set(joined, false).pipe(
            Effect.zipRight(
              Effect.logWarning(`consumer ${ev}`).pipe(Effect.annotateLogs({ error: String(e.payload?.error ?? "") })),
            ),
          ),
        ).catch(() => undefined)
      })
    }

    yield* Effect.acquireRelease(
      Effect.tryPromise(() => consumer.connect()).pipe(
        Effect.tapError((e) =>
          Effect.logWarning(`cannot connect the consumer, retrying: ${e.cause instanceof Error ? e.cause.message : e}`),
        ),
        Effect.retry(Schedule.spaced("2 seconds").pipe(Schedule.upTo("5 minutes"))),
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
    // A topic that does not exist yet is created by the broker's auto-creation (or by the ingester) meanwhile.
    yield* Effect.tryPromise(() => consumer.subscribe({ topic, fromBeginning: true })).pipe(
      Effect.tapError((e) =>
        Effect.logWarning(
          `cannot subscribe to ${topic} yet, retrying: ${e.cause instanceof Error ? e.cause.message : e}`,
        ),
      ),
      Effect.retry(Schedule.spaced("1 second").pipe(Schedule.upTo("2 minutes"))),
      Effect.orDie,
    )

    const eachBatch = async (payload: EachBatchPayload): Promise<void> => {
      const { batch, isRunning, isStale } = payload
      if (!isRunning() || isStale() || batch.isEmpty()) return
      const { records, undecodable } = splitUndecodable(batch.messages)
      const tp = [{ topic: batch.topic, partitions: [batch.partition] }]
      const hw = BigInt(batch.highWatermark)
      await runPromise(
        Effect.gen(function* () {
          const released = yield* Deferred.make<void>()
          const item: RecordBatch = {
            topic: batch.topic,
            partition: batch.partition,
            records,
            ...(undecodable === undefined ? {} : { undecodable }),
            highWatermark: batch.highWatermark,
            commit: (offset) =>
              Effect.gen(function* () {
                payload.resolveOffset(offset)
                // Committed now, explicitly (with kafkajs' defaults `commitOffsetsIfNecessary()` alone would
                // wait for the end of eachBatch); the offset committed is the next one to read.
                const next = (BigInt(offset) + 1n).toString()
                yield* Effect.tryPromise(() =>
                  payload.commitOffsetsIfNecessary({
                    topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: next }] }],
                  }),
                ).pipe(
                  Effect.tapError((e) =>
                    Effect.logWarning("commit failed; the records will be delivered again", e).pipe(
                      Effect.annotateLogs({ partition: batch.partition, offset }),
                    ),
                  ),
                  Effect.ignore,
                )
                const lag = hw - (BigInt(offset) + 1n)
                yield* Metrics.set(consumerLag, Number(lag < 0n ? 0n : lag), { topic, partition: batch.partition })
              }),
            retryFrom: (offset, delay) =>
              Effect.gen(function* () {
                // kafkajs throws when the consumer is no longer running (shutdown): then nothing is
                // committed past `offset` anyway, and the next owner reads from the last commit.
                const paused = yield* Effect.try(() => {
                  consumer.pause(tp)
                  consumer.seek({ topic: batch.topic, partition: batch.partition, offset })
                }).pipe(
                  Effect.as(true),
                  Effect.catchAll((e) =>
                    Effect.logWarning(`cannot pause the partition: ${e.error}`).pipe(Effect.as(false)),
                  ),
                )
                if (!paused) return
                yield* Metrics.inc(partitionPauses)
                yield* Effect.logWarning("partition paused").pipe(
                  Effect.annotateLogs({
                    partition: batch.partition,
                    from: offset,
                    resumeInMs: Duration.toMillis(Duration.decode(delay)),
                  }),
                )
                yield* FiberSet.run(
                  resumers,
                  Effect.sleep(delay).pipe(
                    Effect.zipRight(Effect.try(() => consumer.resume(tp)).pipe(Effect.ignore)),
                    Effect.zipRight(
                      Effect.logInfo("partition resumed").pipe(Effect.annotateLogs({ partition: batch.partition })),
                    ),
                  ),
                )
              }),
            heartbeat: Effect.tryPromise(() => payload.heartbeat()).pipe(Effect.ignore),
            isStale: Effect.sync(() => isStale() || !isRunning()),
            done: Deferred.succeed(released, undefined).pipe(Effect.asVoid),
          }
          yield* Metrics.inc(recordsIn, records.length)
          yield* Queue.offer(queue, item)
          yield* Deferred.await(released)
        }),
      ).catch(() => undefined) // interrupted at shutdown: resolve nothing more
    }

    yield* Effect.tryPromise(() =>
      consumer.run({ eachBatchAutoResolve: false, partitionsConsumedConcurrently: concurrency, eachBatch }),
    ).pipe(Effect.orDie)
    yield* Effect.logInfo("consuming").pipe(
      Effect.annotateLogs({ topic, groupId, partitionsConcurrently: concurrency }),
    )

    return {
      batches: Stream.fromQueue(queue),
      ready: Ref.get(joined),
      crashed: Effect.flatMap(Deferred.await(fatal), Effect.fail),
      // Runs in a finalizer (uninterruptible): `interruptible` lets the time limit end a `consumer.stop()` that waits
      // for an eachBatch that does not return.
      drain: Effect.promise(() => consumer.stop().catch(() => undefined)).pipe(
        Effect.interruptible,
        Effect.timeoutTo({
          duration: options.drainTimeout ?? "15 seconds",
          onSuccess: () => true,
          onTimeout: () => false,
        }),
        Effect.tap((stopped) =>
          stopped ? Effect.void : Effect.logWarning("the batches in flight did not end in time; stopping anyway"),
        ),
        Effect.zipRight(Ref.set(joined, false)),
        Effect.zipRight(Effect.logInfo("consumer stopped")),
      ),
    }
  })

// ---------------------------------------------------------------------------------------------
// In memory

export interface MemoryBatch {
  readonly topic: string
  readonly partition: number
  readonly records: ReadonlyArray<SourceRecord>
  readonly undecodable?: Undecodable
}

/** What the memory stream's consumer did, in order. */
export interface MemoryLog {
  readonly commits: Array<{ readonly partition: number; readonly offset: string }>
  readonly rewinds: Array<{ readonly partition: number; readonly offset: string; readonly delayMs: number }>
  released: number
}

export const memoryLog = (): MemoryLog => ({ commits: [], rewinds: [], released: 0 })

const makeMemory = (batches: ReadonlyArray<MemoryBatch>, log: MemoryLog): EventStream["Type"] => ({
  batches: Stream.fromIterable(batches).pipe(
    Stream.map(
      (b): RecordBatch => ({
        ...b,
        highWatermark: String(Number(b.records.at(-1)?.offset ?? "-1") + 1),
        commit: (offset) => Effect.sync(() => log.commits.push({ partition: b.partition, offset })),
        retryFrom: (offset, delay) =>
          Effect.sync(() =>
            log.rewinds.push({ partition: b.partition, offset, delayMs: Duration.toMillis(Duration.decode(delay)) }),
          ),
        heartbeat: Effect.void,
        isStale: Effect.succeed(false),
        done: Effect.sync(() => {
          log.released++
        }),
      }),
    ),
  ),
  ready: Effect.succeed(true),
  crashed: Effect.never,
  drain: Effect.void,
})
