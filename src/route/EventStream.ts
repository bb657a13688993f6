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
import { Context, Deferred, Duration, Effect, FiberSet, Layer, Queue, Ref, Stream } from "effect"
import type { Consumer, EachBatchPayload } from "kafkajs"
import { KafkaClient } from "../shared/Kafka.js"
import * as Metrics from "../shared/Metrics.js"
import { installBatchGuard } from "./BatchGuard.js"
import {
  type BatchContext,
  type ConsumerCrashed,
  connectConsumer,
  consumerConfig,
  drainConsumer,
  type KafkaStreamOptions,
  recordBatchOf,
  splitUndecodable,
  watchConsumer,
} from "./KafkaConsumer.js"
import type { RecordBatch, SourceRecord, Undecodable } from "./RecordBatch.js"
import { RetryTopic } from "./RetryTopic.js"
import { recordsIn } from "./RouterMetrics.js"
import { consumerKeepingMemberId } from "./SameMember.js"

export {
  ConsumerCrashed,
  defaultMaxBytesPerPartition,
  type KafkaStreamOptions,
  splitUndecodable,
} from "./KafkaConsumer.js"
export type { RecordBatch, SourceRecord, Undecodable } from "./RecordBatch.js"

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

    // Restarted by kafkajs after a crash, the consumer rejoins as the member it was (see SameMember.ts).
    const consumer: Consumer = consumerKeepingMemberId(kafka, consumerConfig(options), { id: undefined })
    const joins = { count: 0 }
    const member = watchConsumer(consumer, { groupId, joined, fatal, joins, runPromise })
    yield* connectConsumer(consumer, topic)

    const ctx: BatchContext = { consumer, topic, resumers, kafka, member, assignment: () => joins.count }
    const eachBatch = async (payload: EachBatchPayload): Promise<void> => {
      const { batch, isRunning, isStale } = payload
      if (!isRunning() || isStale() || batch.isEmpty()) return
      await runPromise(
        Effect.gen(function* () {
          const released = yield* Deferred.make<void>()
          const item = recordBatchOf(ctx, payload, splitUndecodable(batch.messages), released)
          yield* Metrics.inc(recordsIn, item.records.length)
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
      drain: drainConsumer(consumer, options.drainTimeout ?? "15 seconds").pipe(
        Effect.zipRight(Ref.set(joined, false)),
      ),
    }
  })

/**
 * The consumer of the retry topic (RetryTopic.ts, docs/isolation.md): an EventStream of its own consumer group,
 * built once the retry topic exists.
 */
export class RetryStream extends Context.Tag("spillway/RetryStream")<RetryStream, EventStream["Type"]>() {
  static readonly layerKafka = (
    options: KafkaStreamOptions,
  ): Layer.Layer<RetryStream, never, KafkaClient | RetryTopic> =>
    Layer.scoped(RetryStream, Effect.zipRight(RetryTopic, makeKafka(options)))

  static readonly layerMemory = (batches: ReadonlyArray<MemoryBatch>, log: MemoryLog): Layer.Layer<RetryStream> =>
    Layer.succeed(RetryStream, makeMemory(batches, log))
}

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
