/**
 * What the EventStream hands out: a batch of records of one partition, with what moves its offsets. Types only, so
 * that the stream (EventStream.ts), its Kafka side (KafkaConsumer.ts) and the router share them without a cycle.
 */
import type { Duration, Effect } from "effect"

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
