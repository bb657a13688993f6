/** An in-memory KafkaSink (tests): records are kept in order; it can be made unavailable or slow. */
import { Context, Duration, Effect } from "effect"
import { SinkUnavailable } from "../domain/Errors.js"
import { encodeRecord } from "./KafkaRecords.js"
import type { Sink, SinkRecord } from "./SinkPort.js"

export interface MemorySinkControl {
  readonly sink: Sink
  readonly records: () => ReadonlyArray<SinkRecord>
  /** false: every publish fails with SinkUnavailable (and readiness is false). */
  readonly setAvailable: (available: boolean) => void
  /** Each publish waits this long before it succeeds. */
  readonly setDelay: (delay: Duration.DurationInput) => void
  readonly publishes: () => number
}

export class MemorySink extends Context.Tag("spillway/MemorySink")<MemorySink, MemorySinkControl>() {}

export const makeMemory = (): MemorySinkControl => {
  const records: Array<SinkRecord> = []
  let available = true
  let delay = Duration.zero
  let publishes = 0
  const publishRecords = (batch: ReadonlyArray<SinkRecord>) =>
    Effect.gen(function* () {
      if (Duration.greaterThan(delay, Duration.zero)) yield* Effect.sleep(delay)
      if (!available) return yield* new SinkUnavailable({ detail: "the in-memory sink is unavailable" })
      publishes++
      for (const r of batch) records.push(r)
    })
  return {
    sink: {
      publish: (events) => publishRecords(events.map(encodeRecord)),
      publishRecords,
      ready: Effect.sync(() => available),
    },
    records: () => [...records],
    setAvailable: (a) => {
      available = a
    },
    setDelay: (d) => {
      delay = Duration.decode(d)
    },
    publishes: () => publishes,
  }
}
