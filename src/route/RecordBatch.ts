/**
 * What the EventStream hands out: a batch of records of one partition, with what moves its offsets. Types (and one
 * pure header reader), so that the stream (EventStream.ts), its Kafka side (KafkaConsumer.ts) and the router share
 * them without a cycle.
 */
import type { Duration, Effect } from "effect"

/** Where a record set aside in the retry topic came from (its `source-*` headers, RetryTopic.ts). */
export interface RecordSource {
  readonly topic: string
  readonly partition: number
  readonly offset: string
}

export interface SourceRecord {
  readonly offset: string
  readonly key: Uint8Array | null
  readonly value: Uint8Array | null
  readonly timestamp: string
  /** Only on the retry path: the record's place in the source topic. */
  readonly source?: RecordSource
}

const header = (h: unknown): string | undefined =>
  Buffer.isBuffer(h) && h.length <= 256
    ? h.toString("latin1")
    : typeof h === "string" && h.length <= 256
      ? h
      : undefined

/**
 * Pure: the `source-topic`, `source-partition` and `source-offset` headers of a record, checked (a topic name, a
 * partition number, an offset in digits), or undefined when any is missing or malformed. Destinations name objects
 * and documents by this place, so a record delivered directly and again from the retry topic is written under the
 * same key or id.
 */
export const sourceOf = (headers: Readonly<Record<string, unknown>> | undefined): RecordSource | undefined => {
  if (headers === undefined) return undefined
  const topic = header(headers["source-topic"])
  const partition = header(headers["source-partition"])
  const offset = header(headers["source-offset"])
  if (topic === undefined || partition === undefined || offset === undefined) return undefined
  if (!/^[A-Za-z0-9._-]{1,249}$/.test(topic) || !/^\d{1,9}$/.test(partition) || !/^\d{1,19}$/.test(offset))
    return undefined
  return { topic, partition: Number(partition), offset }
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
  /**
   * Which of the consumer's assignments handed the batch out (it counts the group joins; 0 in memory): a new one
   * means another router may have owned the partition in between.
   */
  readonly assignment?: number
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

/**
 * Pure: where a group's records come from, for the destinations' keys and ids. On the retry path, the source topic's
 * place (`source-*` headers) when every record has one from the same partition: a record delivered directly and again
 * after being set aside gets the same object key or document id. Otherwise the batch's own place.
 */
export const originOf = (
  batch: { readonly topic: string; readonly partition: number },
  records: ReadonlyArray<SourceRecord>,
) => {
  const s = records[0]?.source
  if (s !== undefined && records.every((r) => r.source?.topic === s.topic && r.source.partition === s.partition))
    return { topic: s.topic, partition: s.partition, offsets: records.map((r) => r.source!.offset) }
  return { topic: batch.topic, partition: batch.partition, offsets: records.map((r) => r.offset) }
}
