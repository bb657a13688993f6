/**
 * The ingester's producer (KafkaSink with ProduceRequest's encoder and linear grouping) against the real broker:
 * Kafka accepts every send of an idempotent producer across several rounds and partitions (sequence numbers, CRC,
 * sizes), and holds exactly the keys, values and dead-letter headers that were published, in order per partition,
 * at contiguous offsets; for each compression the ingester offers.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import type { SinkRecord } from "../../src/ingest/KafkaSink.js"
import { makeKafka as makeSink } from "../../src/ingest/KafkaSink.js"
import type { CompressionName } from "../../src/shared/Codecs.js"
import { registerCodecs } from "../../src/shared/Codecs.js"
import { consumeAll, createTopic, headerText, makeKafka, uniqueTopic } from "../support/kafka.js"

const keys = ["tenant-a", "tenant-b", "tenant-ç"]
const bytesOf = (round: number, i: number) =>
  Buffer.from(Array.from({ length: (i * 37) % 900 }, (_, j) => (round * 7 + i + j) & 0xff))
const roundOf = (round: number, n: number): Array<SinkRecord> =>
  Array.from({ length: n }, (_, i) =>
    i % 250 === 249
      ? {
          key: keys[i % 3]!,
          value: bytesOf(round, i),
          deadLetter: { reason: "invalid_event", detail: `round ${round} record ${i}: détail` },
        }
      : { key: keys[i % 3]!, value: bytesOf(round, i) },
  )

describe("ProduceRequest against Kafka", () => {
  registerCodecs()
  for (const compression of ["none", "snappy", "gzip"] as const satisfies ReadonlyArray<CompressionName>)
    it.scopedLive(`${compression}: every record of several rounds, in order, with its headers`, () =>
      Effect.gen(function* () {
        const topic = uniqueTopic(`produce-${compression}`)
        yield* Effect.promise(() => Promise.all([createTopic(topic, 3), createTopic(`${topic}-dlq`, 1)]))
        const sink = yield* makeSink(makeKafka(`produce-it-${compression}`), {
          topic,
          compression,
          maxSendBytes: 200 * 1024,
        })
        yield* Effect.repeat(sink.ready, { until: (ok) => ok, schedule: Schedule.spaced("50 millis") })
        const rounds = [roundOf(0, 1200), roundOf(1, 3), roundOf(2, 2000)]
        for (const records of rounds) yield* sink.publishRecords(records)
        const sent = rounds.flat()
        const events = sent.filter((r) => r.deadLetter === undefined)
        const letters = sent.filter((r) => r.deadLetter !== undefined)

        const got = yield* Effect.promise(() => consumeAll(topic, events.length))
        assert.strictEqual(got.length, events.length)
        for (const key of keys) {
          const mine = got.filter((r) => r.key?.toString() === key)
          const wanted = events.filter((r) => r.key === key)
          assert.strictEqual(mine.length, wanted.length)
          assert.isTrue(mine.every((r, i) => r.value?.equals(wanted[i]!.value) === true))
          assert.strictEqual(new Set(mine.map((r) => r.partition)).size, 1)
        }
        for (const partition of new Set(got.map((r) => r.partition))) {
          const offsets = got.filter((r) => r.partition === partition).map((r) => r.offset)
          assert.deepStrictEqual(
            offsets,
            offsets.map((_, i) => String(i)),
          )
        }
        const dlq = yield* Effect.promise(() => consumeAll(`${topic}-dlq`, letters.length))
        assert.strictEqual(dlq.length, letters.length)
        dlq.forEach((r, i) => {
          assert.isTrue(r.value?.equals(letters[i]!.value))
          assert.strictEqual(r.key?.toString(), letters[i]!.key)
          assert.strictEqual(headerText(r.headers, "reason"), "invalid_event")
          assert.strictEqual(headerText(r.headers, "detail"), letters[i]!.deadLetter!.detail)
          assert.strictEqual(headerText(r.headers, "source"), "ingester")
        })
      }),
    )
})
