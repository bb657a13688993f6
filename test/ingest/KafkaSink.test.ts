import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, FastCheck as fc, Schedule } from "effect"
import { type Kafka, Partitioners } from "kafkajs"
import { checkTimeouts, makeKafka, memoDefaultPartitioner } from "../../src/ingest/KafkaSink.js"

const metadata = (n: number, leaderless: ReadonlyArray<number> = []) =>
  Array.from({ length: n }, (_, partitionId) => ({
    partitionId,
    leader: leaderless.includes(partitionId) ? -1 : 0,
    partitionErrorCode: 0,
    replicas: [0],
    isr: [0],
  }))

describe("memoDefaultPartitioner", () => {
  it.prop(
    "places keyed records as kafkajs' DefaultPartitioner does, as the partition count changes",
    [
      fc.array(
        fc.tuple(
          fc.constantFrom("a", "b", "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6", "tenant-x"),
          fc.integer({ min: 1, max: 12 }),
        ),
        { maxLength: 40 },
      ),
    ],
    ([calls]) => {
      const memo = memoDefaultPartitioner()
      const plain = Partitioners.DefaultPartitioner()
      for (const [key, n] of calls) {
        const args = { topic: "t", partitionMetadata: metadata(n, [0]), message: { key, value: "v" } }
        assert.strictEqual(memo(args), plain(args))
      }
    },
  )

  it("leaves an explicit partition to kafkajs", () => {
    const memo = memoDefaultPartitioner()
    assert.strictEqual(
      memo({ topic: "t", partitionMetadata: metadata(3), message: { key: "a", value: "v", partition: 2 } }),
      2,
    )
  })
})

describe("produce timeout", () => {
  it("the produce timeout must be longer than kafkajs's request timeout (checked at config load)", () => {
    assert.isUndefined(checkTimeouts(15_000, 10_000))
    assert.match(checkTimeouts(15_000, 30_000) ?? "", /must be longer than the Kafka request timeout/)
    assert.isDefined(checkTimeouts(10_000, 10_000))
  })

  /** A kafkajs stand-in whose producers' sends hang (never answered) or succeed, as `mode` says. */
  const fakeKafka = () => {
    const state = { mode: "hang" as "hang" | "ok", producers: [] as Array<{ sends: number; disconnected: boolean }> }
    const kafka = {
      producer: () => {
        const p = { sends: 0, disconnected: false }
        state.producers.push(p)
        const send = () => {
          p.sends++
          return state.mode === "hang" ? new Promise(() => undefined) : Promise.resolve([])
        }
        return {
          connect: async () => undefined,
          disconnect: async () => {
            p.disconnected = true
          },
          send,
          sendBatch: send,
        }
      },
      admin: () => ({
        connect: async () => undefined,
        describeCluster: async () => ({}),
        disconnect: async () => undefined,
      }),
    } as unknown as Kafka
    return { kafka, state }
  }

  it.live("a send that timed out is never acked, and its producer is never used again", () =>
    Effect.gen(function* () {
      const { kafka, state } = fakeKafka()
      const sink = yield* makeKafka(kafka, { topic: "t", produceTimeout: "200 millis", reconnectCap: "50 millis" })
      const record = { key: "k", value: Buffer.from("v") }
      // Wait for the first producer.
      yield* Effect.repeat(sink.ready, { until: (ok) => ok })
      const first = yield* Effect.either(sink.publishRecords([record]))
      assert.isTrue(Either.isLeft(first))
      // Right after the timeout, the slow producer is out of use: the next publish never reaches it.
      state.mode = "ok"
      const second = yield* sink
        .publishRecords([record])
        .pipe(Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 100 }), Effect.either)
      assert.isTrue(Either.isRight(second))
      assert.strictEqual(state.producers[0]!.sends, 1)
      assert.isAbove(state.producers.length, 1)
      assert.strictEqual(state.producers.at(-1)!.sends, 1)
      yield* Effect.repeat(
        Effect.sync(() => state.producers[0]!.disconnected),
        { until: (d) => d, schedule: Schedule.spaced("10 millis") },
      )
    }).pipe(Effect.scoped),
  )
})
