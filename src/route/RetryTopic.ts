/**
 * RetryTopic: where the records of a tenant whose destination keeps failing are set aside (docs/isolation.md).
 * One topic per router group, `<topic>-retry-<group>` unless named, created by the router when missing with the
 * source topic's partition count and replication factor. A record goes to the retry partition of its source
 * partition's number (modulo the retry topic's partitions), unchanged: same key and value (still encrypted), with
 * headers `source-topic`, `source-partition`, `source-offset`. `write` succeeds only once Kafka acknowledged every
 * record (acks=all, idempotent producer), in produce requests of at most 512 KiB; a request refused as too large is
 * split in halves, a single record refused as too large fails (the caller keeps today's pause and rewind for it).
 * `committed` is what the retry consumer group (`<group>-retry`) committed, per retry partition.
 */
import { Context, Effect, Layer } from "effect"
import { type Admin, CompressionTypes, Partitioners, type Producer } from "kafkajs"
import { SinkUnavailable } from "../domain/Errors.js"
import { asBuffer, isTooLarge, runsByBytes } from "../shared/DeadLetter.js"
import { KafkaClient, lastOffsetsOfKeys } from "../shared/Kafka.js"
import { backoff } from "../shared/Retry.js"
import type { SourceRecord } from "./RecordBatch.js"

export interface Written {
  readonly partition: number
  /** The offset of the last record written. */
  readonly lastOffset: bigint
}

export class RetryTopic extends Context.Tag("spillway/RetryTopic")<
  RetryTopic,
  {
    readonly topic: string
    /** The consumer group of the retry path. */
    readonly groupId: string
    /** Writes `records` (in offset order, all of source partition `partition`), in order; fails if Kafka refused. */
    readonly write: (
      sourceTopic: string,
      partition: number,
      records: ReadonlyArray<SourceRecord>,
    ) => Effect.Effect<Written, SinkUnavailable>
    /** The retry group's committed offsets (the next offset to read), per retry partition. */
    readonly committed: Effect.Effect<ReadonlyMap<number, bigint>, SinkUnavailable>
    /**
     * What is set aside and not delivered yet for the records of source partition `sourcePartition`: per key kept by
     * `keep` (a tenant's access key), the offset of its last record in the retry partition past the retry group's
     * committed offset. Read from Kafka (`scanMaxBytes` at most), so a router that takes a partition over learns what
     * another one set aside.
     */
    readonly pending: (
      sourcePartition: number,
      keep: (key: string) => boolean,
    ) => Effect.Effect<Pending, SinkUnavailable>
  }
>() {
  static readonly layerKafka = (options: RetryTopicOptions): Layer.Layer<RetryTopic, never, KafkaClient> =>
    Layer.scoped(RetryTopic, makeKafka(options))

  /** Keeps what was written in `log`; `committed` reads `log.committed` (set by the test). */
  static readonly layerMemory = (log: RetryMemoryLog, options: { readonly fail?: () => boolean } = {}) =>
    Layer.succeed(RetryTopic, {
      topic: "memory-retry",
      groupId: "memory-retry-group",
      write: (_sourceTopic, partition, records) =>
        Effect.suspend(() => {
          if (options.fail?.() === true) return Effect.fail(new SinkUnavailable({ detail: "retry topic down" }))
          for (const r of records) log.written.push({ partition, record: r })
          const count = log.written.filter((w) => w.partition === partition).length
          return Effect.succeed({ partition, lastOffset: BigInt(count - 1) })
        }),
      committed: Effect.sync(() => new Map(log.committed)),
      pending: (sourcePartition, keep) =>
        Effect.sync(() => {
          const from = log.committed.get(sourcePartition) ?? 0n
          const last = new Map<string, bigint>()
          let offset = 0n
          for (const w of log.written) {
            if (w.partition !== sourcePartition) continue
            const key = w.record.key === null ? undefined : Buffer.from(w.record.key).toString("latin1")
            if (offset >= from && key !== undefined && keep(key)) last.set(key, offset)
            offset++
          }
          return { partition: sourcePartition, last, complete: true }
        }),
    })
}

export interface Pending {
  /** The retry partition read. */
  readonly partition: number
  /** Per key, the offset of its last record not delivered yet. */
  readonly last: ReadonlyMap<string, bigint>
  /** False when the scan stopped at `scanMaxBytes` before the end. */
  readonly complete: boolean
}

/** The most a `pending` scan reads of one retry partition: 256 MiB. */
export const scanMaxBytes = 256 * 1_048_576

export interface RetryMemoryLog {
  readonly written: Array<{ readonly partition: number; readonly record: SourceRecord }>
  readonly committed: Map<number, bigint>
}

export const retryMemoryLog = (): RetryMemoryLog => ({ written: [], committed: new Map() })

export interface RetryTopicOptions {
  readonly sourceTopic: string
  readonly topic: string
  readonly groupId: string
  /** Largest produce request, in bytes of keys, values and headers (default 512 KiB). */
  readonly maxBatchBytes?: number
}

/** `<topic>-retry-<group>`, the group's characters a topic cannot hold replaced by `_`, at most 249 characters. */
export const retryTopicName = (topic: string, group: string): string =>
  `${topic}-retry-${group.replace(/[^A-Za-z0-9._-]/g, "_")}`.slice(0, 249)

export const retryGroupId = (group: string): string => `${group}-retry`

const headersOf = (topic: string, partition: number, r: SourceRecord) => ({
  "source-topic": topic,
  "source-partition": String(partition),
  "source-offset": r.offset,
})

/** Pure: the records in order, in runs of at most `maxBytes` (a record larger than that is a run alone). */
export const runsOf = (
  records: ReadonlyArray<SourceRecord>,
  maxBytes: number,
): ReadonlyArray<ReadonlyArray<SourceRecord>> =>
  runsByBytes(records, (r) => 160 + (r.key?.length ?? 0) + (r.value?.length ?? 0), maxBytes)

const unavailable = (detail: string) => (cause: unknown) => new SinkUnavailable({ detail, cause })

/**
 * Until every partition of a topic just created has a leader: its metadata polled from 10 ms on, at most 200 ms
 * apart, for 10 s at most (then SinkUnavailable, and `ensureTopic` is tried again). kafkajs' own `waitForLeaders`
 * sleeps 100 ms before it first looks, which was a fifth of a new router group's start (the leaders are there after
 * a few milliseconds).
 */
const awaitLeaders = (admin: Admin, topic: string, count: number) =>
  Effect.tryPromise({
    try: () => admin.fetchTopicMetadata({ topics: [topic] }),
    catch: unavailable("cannot describe the retry topic"),
  }).pipe(
    Effect.filterOrFail(
      (md) => {
        const partitions = md.topics[0]?.partitions ?? []
        return partitions.length === count && partitions.every((p) => p.leader >= 0)
      },
      () => new SinkUnavailable({ detail: "the retry topic has no leader yet" }),
    ),
    Effect.retry(backoff({ base: "10 millis", cap: "200 millis", budget: "10 seconds" })),
  )

/** Creates the retry topic when missing, like the source topic (partitions, replication); its partition count. */
const ensureTopic = (admin: Admin, options: RetryTopicOptions) =>
  Effect.gen(function* () {
    const topics = yield* Effect.tryPromise({ try: () => admin.listTopics(), catch: unavailable("cannot list") })
    const described = topics.includes(options.topic) ? options.topic : options.sourceTopic
    if (!topics.includes(described)) return yield* new SinkUnavailable({ detail: "the source topic is missing" })
    const md = yield* Effect.tryPromise({
      try: () => admin.fetchTopicMetadata({ topics: [described] }),
      catch: unavailable("cannot describe"),
    })
    const partitions = md.topics[0]?.partitions ?? []
    if (described === options.topic) return partitions.length
    const replicationFactor = Math.max(1, partitions[0]?.replicas.length ?? 1)
    yield* Effect.tryPromise({
      try: () =>
        admin.createTopics({
          waitForLeaders: false,
          topics: [{ topic: options.topic, numPartitions: partitions.length, replicationFactor }],
        }),
      catch: unavailable("cannot create the retry topic"),
    })
    yield* awaitLeaders(admin, options.topic, partitions.length)
    yield* Effect.logInfo("retry topic created").pipe(
      Effect.annotateLogs({ topic: options.topic, partitions: partitions.length, replicationFactor }),
    )
    return partitions.length
  })

interface Source {
  readonly topic: string
  readonly partition: number
}

/** One produce of `run` to `partition` of the retry topic: the offset of its last record once Kafka has them all. */
const send = (producer: Producer, topic: string, source: Source, partition: number, run: ReadonlyArray<SourceRecord>) =>
  Effect.tryPromise({
    try: () =>
      producer.send({
        topic,
        acks: -1,
        compression: CompressionTypes.None,
        messages: run.map((r) => ({
          partition,
          key: asBuffer(r.key),
          value: asBuffer(r.value),
          headers: headersOf(source.topic, source.partition, r),
        })),
      }),
    catch: unavailable("the retry topic refused the records"),
  }).pipe(
    Effect.flatMap((meta) => {
      const base = meta.find((m) => m.partition === partition)?.baseOffset
      return base === undefined
        ? Effect.fail(new SinkUnavailable({ detail: "no offset in the retry topic's answer" }))
        : Effect.succeed(BigInt(base) + BigInt(run.length - 1))
    }),
  )

/** `send`, with a run refused as too large split in halves; a single record refused so fails. */
const sendRun = (
  producer: Producer,
  topic: string,
  source: Source,
  partition: number,
  run: ReadonlyArray<SourceRecord>,
): Effect.Effect<bigint, SinkUnavailable> =>
  send(producer, topic, source, partition, run).pipe(
    Effect.catchIf(
      (e) => run.length > 1 && isTooLarge(e.cause),
      () => {
        const half = Math.ceil(run.length / 2)
        return Effect.zipRight(
          sendRun(producer, topic, source, partition, run.slice(0, half)),
          sendRun(producer, topic, source, partition, run.slice(half)),
        )
      },
    ),
  )

const makeKafka = (options: RetryTopicOptions) =>
  Effect.gen(function* () {
    const kafka = yield* KafkaClient
    const maxBatchBytes = options.maxBatchBytes ?? 512 * 1024
    const admin = kafka.admin()
    // kafkajs' own default partitioner, named so that kafkajs does not warn about its v2 change at every start.
    const producer: Producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      createPartitioner: Partitioners.DefaultPartitioner,
    })
    const release = (p: () => Promise<void>) =>
      Effect.promise(() => p().catch(() => undefined)).pipe(
        Effect.interruptible,
        Effect.timeout("10 seconds"),
        Effect.ignore,
      )
    const connect = (p: () => Promise<void>) =>
      Effect.tryPromise(p).pipe(Effect.retry(backoff({ base: "200 millis", cap: "5 seconds" })), Effect.orDie)
    yield* Effect.acquireRelease(
      connect(() => admin.connect()),
      () => release(() => admin.disconnect()),
    )
    yield* Effect.acquireRelease(
      connect(() => producer.connect()),
      () => release(() => producer.disconnect()),
    )
    // The source topic may not exist yet (the ingester or the consumer's subscription creates it).
    const partitions = yield* ensureTopic(admin, options).pipe(
      Effect.tapError((e) => Effect.logWarning(`retry topic not ready, retrying: ${e.detail}`)),
      Effect.retry(backoff({ base: "500 millis", cap: "5 seconds", budget: "2 minutes" })),
      Effect.orDie,
    )
    const committed = Effect.tryPromise({
      try: () => admin.fetchOffsets({ groupId: options.groupId, topics: [options.topic] }),
      catch: unavailable("cannot fetch the retry group's offsets"),
    }).pipe(
      Effect.map((topics) => {
        const out = new Map<number, bigint>()
        for (const p of topics[0]?.partitions ?? []) if (Number(p.offset) >= 0) out.set(p.partition, BigInt(p.offset))
        return out
      }),
    )

    return {
      topic: options.topic,
      groupId: options.groupId,
      write: (sourceTopic: string, sourcePartition: number, records: ReadonlyArray<SourceRecord>) =>
        Effect.gen(function* () {
          const partition = sourcePartition % Math.max(1, partitions)
          let lastOffset = -1n
          for (const run of runsOf(records, maxBatchBytes))
            lastOffset = yield* sendRun(
              producer,
              options.topic,
              { topic: sourceTopic, partition: sourcePartition },
              partition,
              run,
            )
          return { partition, lastOffset }
        }),
      committed,
      pending: (sourcePartition: number, keep: (key: string) => boolean) =>
        Effect.gen(function* () {
          const partition = sourcePartition % Math.max(1, partitions)
          const [done, ends] = yield* Effect.all([committed, watermarks(admin, options.topic)])
          const end = ends.get(partition)
          if (end === undefined) return { partition, last: new Map(), complete: true }
          // Not before the earliest offset the partition still holds (retention may have deleted past a commit).
          const committedAt = done.get(partition)
          const from = committedAt !== undefined && committedAt > end.low ? committedAt : end.low
          if (from >= end.high) return { partition, last: new Map(), complete: true }
          const scan = { topic: options.topic, partition, from, to: end.high, keep, maxBytes: scanMaxBytes }
          const found = yield* Effect.tryPromise({
            try: () => lastOffsetsOfKeys(kafka, scan),
            catch: unavailable("cannot read the retry topic"),
          })
          return { partition, ...found }
        }),
    }
  })

/** The earliest and the next offset (high watermark) of each partition of `topic`. */
const watermarks = (admin: Admin, topic: string) =>
  Effect.tryPromise({
    try: () => admin.fetchTopicOffsets(topic),
    catch: unavailable("cannot read the retry topic's offsets"),
  }).pipe(
    Effect.map((ps) => new Map(ps.map((p) => [p.partition, { low: BigInt(p.low), high: BigInt(p.high) }] as const))),
  )
