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

  /**
   * A kafkajs stand-in whose producers' sends hang (never answered), succeed, or hang while kafkajs reports a Produce
   * answered only after the leader's ack timeout (`expire`: what kafkajs sees, and retries, when too few replicas
   * acknowledge), as `mode` says.
   */
  const fakeKafka = () => {
    const state = {
      mode: "hang" as "hang" | "ok" | "expire" | "drop",
      producers: [] as Array<{ sends: number; disconnected: boolean; timeouts: Array<number | undefined> }>,
    }
    const kafka = {
      producer: (opts?: { createPartitioner?: () => (args: unknown) => number }) => {
        const partitioner = opts?.createPartitioner?.()
        const p = { sends: 0, disconnected: false, timeouts: [] as Array<number | undefined> }
        state.producers.push(p)
        const listeners = new Map<string, Array<(e: unknown) => void>>()
        const send = (req?: {
          timeout?: number
          topicMessages?: Array<{ topic: string; messages: Array<{ key: string }> }>
        }) => {
          p.sends++
          p.timeouts.push(req?.timeout)
          if (state.mode === "drop" && partitioner !== undefined) {
            // Placed over 3 partitions as kafkajs does, answered for the first one only (kafkajs#1303's answer).
            const answer: Array<{ topicName: string; partition: number; errorCode: number }> = []
            for (const { topic, messages } of req?.topicMessages ?? [])
              for (const message of messages) {
                const partition = partitioner({ topic, partitionMetadata: metadata(3), message })
                if (answer.length === 0) answer.push({ topicName: topic, partition, errorCode: 0 })
              }
            return Promise.resolve(answer)
          }
          if (state.mode === "expire")
            setTimeout(() => {
              for (const l of listeners.get("request") ?? [])
                l({ payload: { apiName: "Produce", duration: req?.timeout ?? 30_000 } })
            }, 20)
          return state.mode === "ok" ? Promise.resolve([]) : new Promise(() => undefined)
        }
        return {
          events: { REQUEST: "request", REQUEST_TIMEOUT: "request_timeout" },
          on: (name: string, listener: (e: unknown) => void) => {
            listeners.set(name, [...(listeners.get(name) ?? []), listener])
          },
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

  it.live("a send the leader held for the whole ack timeout fails at once, not at the produce timeout", () =>
    Effect.gen(function* () {
      const { kafka, state } = fakeKafka()
      state.mode = "expire"
      const sink = yield* makeKafka(kafka, {
        topic: "t",
        produceTimeout: "10 seconds",
        ackTimeout: "300 millis",
        reconnectCap: "50 millis",
      })
      yield* Effect.repeat(sink.ready, { until: (ok) => ok })
      const started = Date.now()
      const result = yield* Effect.either(sink.publishRecords([{ key: "k", value: Buffer.from("v") }]))
      const elapsed = Date.now() - started
      assert.isTrue(Either.isLeft(result))
      if (Either.isLeft(result)) assert.match(result.left.detail, /did not acknowledge within 300 ms/)
      assert.isBelow(elapsed, 2_000)
      // Kafka's own produce timeout is the ack timeout; the producer is out of use.
      assert.deepStrictEqual(state.producers[0]!.timeouts, [300])
      yield* Effect.repeat(
        Effect.sync(() => state.producers[0]!.disconnected),
        { until: (d) => d, schedule: Schedule.spaced("10 millis") },
      )
    }).pipe(Effect.scoped),
  )

  it.live("a send whose answer lacks a partition its records were placed on is not acked", () =>
    Effect.gen(function* () {
      const { kafka, state } = fakeKafka()
      state.mode = "drop"
      const sink = yield* makeKafka(kafka, { topic: "t", produceTimeout: "5 seconds", reconnectCap: "50 millis" })
      yield* Effect.repeat(sink.ready, { until: (ok) => ok })
      // Tenants' keys that murmur2 puts on partitions 1 and 2 of 3.
      const records = ["9c60f26f-5b6c-4c80-b5f5-625bf965b6a6", "9c60f26f-5b6c-4c80-b5f5-611bf965c6a8"].map((key) => ({
        key,
        value: Buffer.from("v"),
      }))
      const result = yield* Effect.either(sink.publishRecords(records))
      assert.isTrue(Either.isLeft(result))
      if (Either.isLeft(result)) assert.match(result.left.detail, /lacks a partition/)
      // One partition only: the answer covers it.
      state.mode = "drop"
      const one = yield* sink
        .publishRecords(records.slice(0, 1))
        .pipe(Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 100 }), Effect.either)
      assert.isTrue(Either.isRight(one))
    }).pipe(Effect.scoped),
  )
})
