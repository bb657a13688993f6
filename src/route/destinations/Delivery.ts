/**
 * What the router hands a batching destination (s3, opensearch) and what it gets back: one call per
 * target per batch. A batch is one tenant's lines of one partition, in offset order; each line has
 * the event facts the destination derives names from (object key, index, document id).
 *
 * Outcomes:
 * - the Effect fails with `DestinationError` when the whole batch failed: `retryable` (429, 5xx,
 *   timeouts, network) → try the same batch again later on src/shared/Retry.ts `backoff`; not
 *   retryable (no such bucket, 403, 4xx on the request) → dead-letter every line with `detail`.
 * - it succeeds with `DeliveryResult`: `failures` lists the lines the server refused one by one
 *   (OpenSearch bulk items); every other line is written. `deliverRetrying` does the retry loop.
 */
import { Effect, Ref, type Schedule } from "effect"
import { DestinationError } from "../../domain/Errors.js"

/** The facts of one event a destination needs (one per line). */
export interface DeliveryEvent {
  /** The event's `event_id`, when it has one. */
  readonly eventId: string | undefined
  readonly userId: string
  /** The event's timestamp, Unix milliseconds (UTC). */
  readonly timestampMs: number
  /** Its Kafka offset (decimal string). */
  readonly offset: string
}

export interface DeliveryBatch {
  readonly topic: string
  readonly partition: number
  /** Offsets of the first and the last record of the batch (decimal strings). */
  readonly firstOffset: string
  readonly lastOffset: string
  /** The NDJSON line of each event (no newline), the same shape as file targets. */
  readonly lines: ReadonlyArray<string>
  /** One entry per line, same order. */
  readonly events: ReadonlyArray<DeliveryEvent>
}

/** One line the server refused. `reason` is the server's, bounded, never document content. */
export interface LineFailure {
  /** Index into the batch's `lines`. */
  readonly index: number
  readonly retryable: boolean
  readonly reason: string
}

export interface DeliveryResult {
  /** Lines not written (empty: all written). */
  readonly failures: ReadonlyArray<LineFailure>
}

/** A built target: resolved credentials, a client, its batch limits. */
export interface Destination {
  /** Secret-free, for logs and metric labels (`targetName`). */
  readonly name: string
  /** The largest run of lines one `deliver` call should get (the router cuts batches under both). */
  readonly limits: { readonly maxBytes: number; readonly maxEvents: number }
  readonly deliver: (batch: DeliveryBatch) => Effect.Effect<DeliveryResult, DestinationError>
}

export const allDelivered: DeliveryResult = { failures: [] }

/** Pure: the sub-batch of the given line indexes (ascending), with its first and last offsets. */
export const subBatch = (batch: DeliveryBatch, indexes: ReadonlyArray<number>): DeliveryBatch => ({
  topic: batch.topic,
  partition: batch.partition,
  firstOffset: batch.events[indexes[0]!]?.offset ?? batch.firstOffset,
  lastOffset: batch.events[indexes[indexes.length - 1]!]?.offset ?? batch.lastOffset,
  lines: indexes.map((i) => batch.lines[i]!),
  events: indexes.map((i) => batch.events[i]!),
})

/** Pure: a reason fit for a log line and a dead letter: control characters removed, at most `max` characters. */
export const boundedReason = (text: string, max = 300): string => {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: removing them is the point
  const clean = text.replace(/[\u0000-\u001f\u007f]+/g, " ").trim()
  return clean.length <= max ? clean : `${clean.slice(0, max - 1)}…`
}

/**
 * Delivers `batch`, then again only the lines that failed retryably, on `schedule`, until none is left.
 * Succeeds with the lines refused for good (index into `batch.lines`, ascending, for the dead-letter
 * topic): items the server refused, and, when a whole attempt failed permanently (no such bucket, 403),
 * every line still pending then, with that error's detail as the reason. Fails with the last retryable
 * `DestinationError` only when the schedule gives up (then nothing is known to be written or refused).
 */
export const deliverRetrying = (
  destination: Destination,
  batch: DeliveryBatch,
  schedule: Schedule.Schedule<unknown>,
): Effect.Effect<ReadonlyArray<LineFailure>, DestinationError> =>
  Effect.gen(function* () {
    const pending = yield* Ref.make<ReadonlyArray<number>>(batch.lines.map((_, i) => i))
    const refused: Array<LineFailure> = []
    const attempt = Effect.gen(function* () {
      const indexes = yield* Ref.get(pending)
      const result = yield* destination.deliver(
        indexes.length === batch.lines.length ? batch : subBatch(batch, indexes),
      )
      const again: Array<number> = []
      for (const f of result.failures) {
        const original = indexes[f.index]!
        if (f.retryable) again.push(original)
        else refused.push({ ...f, index: original })
      }
      if (again.length === 0) return
      yield* Ref.set(pending, again)
      return yield* new DestinationError({
        target: destination.name,
        retryable: true,
        detail: `${again.length} of ${indexes.length} lines to retry: ${result.failures.find((f) => f.retryable)?.reason ?? ""}`,
      })
    })
    yield* attempt.pipe(
      Effect.retry({ schedule, while: (e) => e.retryable }),
      Effect.catchIf(
        (e) => !e.retryable,
        (e) =>
          Effect.map(Ref.get(pending), (indexes) => {
            for (const index of indexes) refused.push({ index, retryable: false, reason: e.detail })
          }),
      ),
    )
    return refused.sort((a, b) => a.index - b.index)
  })

/**
 * Pure: the `DeliveryEvent` of a routed event (RouterLines' `RoutedEvent`: RFC 3339 timestamp, `eventId`
 * empty when absent) at `offset`. A timestamp that does not parse counts as 0 (1970-01-01).
 */
export const deliveryEvent = (
  event: { readonly eventId: string; readonly userId: string; readonly timestamp: string },
  offset: string,
): DeliveryEvent => {
  const ms = Date.parse(event.timestamp)
  return {
    eventId: event.eventId === "" ? undefined : event.eventId,
    userId: event.userId,
    timestampMs: Number.isFinite(ms) ? ms : 0,
    offset,
  }
}

/**
 * Pure: the batch's line indexes cut into runs of at most `maxEvents` lines and `maxBytes` bytes (UTF-8,
 * plus `overhead` per line); a line larger than `maxBytes` is a run of its own.
 */
export const splitIndexes = (
  lines: ReadonlyArray<string>,
  limits: { readonly maxBytes: number; readonly maxEvents: number },
  overhead = 0,
): Array<Array<number>> => {
  const runs: Array<Array<number>> = []
  let run: Array<number> = []
  let bytes = 0
  for (let i = 0; i < lines.length; i++) {
    const size = Buffer.byteLength(lines[i]!, "utf8") + overhead
    if (run.length > 0 && (run.length >= limits.maxEvents || bytes + size > limits.maxBytes)) {
      runs.push(run)
      run = []
      bytes = 0
    }
    run.push(i)
    bytes += size
  }
  if (run.length > 0) runs.push(run)
  return runs
}
