/**
 * The retry topic's creation against the real broker (RetryTopic.layerKafka): created when missing with the source
 * topic's partition count, usable as soon as the layer is built (every partition has a leader: the layer polls for
 * them instead of kafkajs' `waitForLeaders`), and found again, not created twice, by a second router of the group.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { RetryTopic, retryTopicName } from "../../src/route/RetryTopic.js"
import { KafkaClient } from "../../src/shared/Kafka.js"
import { brokers, createTopic, makeKafka, uniqueTopic } from "../support/kafka.js"

const kafkaLayer = KafkaClient.layer({
  brokers,
  clientId: "retry-topic-it",
  connectionTimeoutMs: 3000,
  requestTimeoutMs: 30000,
})

const record = (n: number) => ({
  offset: String(n),
  key: Buffer.from("tenant-a"),
  value: Buffer.from(`value ${n}`),
  timestamp: String(Date.now()),
})

describe("the retry topic (real Kafka)", () => {
  it("is created with the source's three partitions, each with a leader, and takes writes at once", {
    timeout: 60_000,
  }, async () => {
    const source = uniqueTopic("retry-src")
    await createTopic(source, 3)
    const options = { sourceTopic: source, topic: retryTopicName(source, "g-1"), groupId: "g-1-retry" }
    const use = Effect.gen(function* () {
      const retry = yield* RetryTopic
      const written = yield* retry.write(source, 2, [record(7), record(8)])
      const committed = yield* retry.committed
      return { written, committed }
    })
    const first = await Effect.runPromise(
      use.pipe(Effect.provide(RetryTopic.layerKafka(options).pipe(Layer.provide(kafkaLayer)))),
    )
    assert.strictEqual(first.written.partition, 2)
    assert.strictEqual(first.written.lastOffset, 1n)
    assert.strictEqual(first.committed.size, 0)

    const admin = makeKafka("retry-topic-it-admin").admin()
    await admin.connect()
    try {
      const md = await admin.fetchTopicMetadata({ topics: [options.topic] })
      const partitions = md.topics[0]?.partitions ?? []
      assert.deepStrictEqual(partitions.map((p) => p.partitionId).sort(), [0, 1, 2])
      for (const p of partitions) assert.isAtLeast(p.leader, 0)
      const offsets = await admin.fetchTopicOffsets(options.topic)
      assert.strictEqual(offsets.find((o) => o.partition === 2)?.high, "2")
    } finally {
      await admin.disconnect()
    }

    // A second router of the group finds the topic and writes after what the first wrote.
    const second = await Effect.runPromise(
      use.pipe(Effect.provide(RetryTopic.layerKafka(options).pipe(Layer.provide(kafkaLayer)))),
    )
    assert.strictEqual(second.written.partition, 2)
    assert.strictEqual(second.written.lastOffset, 3n)
  })
})
