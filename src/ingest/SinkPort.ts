/**
 * The shape of the design card's KafkaSink port, apart from its Tag and layers (KafkaSink.ts): what a sink takes
 * and what it promises. The Kafka implementation (KafkaSink, KafkaProducer, KafkaRecords) and the in-memory one
 * (MemorySink) both build on it, so none of them imports another for its types.
 */
import type { Effect } from "effect"
import type { SinkUnavailable } from "../domain/Errors.js"
import type { Event } from "../domain/Event.js"

/** Why the ingester dead-letters an event: it can never be accepted as it is. */
export type IngestDeadLetterReason = "invalid_event" | "event_too_large"

/**
 * One Kafka record as the ingester writes it. With `deadLetter` it goes to `<topic>-dlq` instead, with headers
 * `reason`, `detail` and `source: ingester` (the detail never holds a received value).
 */
export interface SinkRecord {
  readonly key: string
  readonly value: Buffer
  readonly deadLetter?: { readonly reason: IngestDeadLetterReason; readonly detail: string }
}

/** A sink: batches go in; each effect succeeds only once the sink durably has every event of its batch. */
export interface Sink {
  /** Succeeds once the sink durably has every event; fails (nothing or some of them written) otherwise. */
  readonly publish: (events: ReadonlyArray<Event>) => Effect.Effect<void, SinkUnavailable>
  /**
   * `publish` for records already in the Kafka record format (`encodeRecord`, or the bytes of a validated
   * event as received): the ingester's hot path, which does not build `Event`s.
   */
  readonly publishRecords: (records: ReadonlyArray<SinkRecord>) => Effect.Effect<void, SinkUnavailable>
  /** Whether the sink can take events now (readiness). */
  readonly ready: Effect.Effect<boolean>
}
