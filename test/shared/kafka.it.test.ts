import { assert, describe, it } from "@effect/vitest"
import { CompressionTypes, type Producer } from "kafkajs"
import {
  brokerStatus,
  consumeAll,
  createSettledTopics,
  createTopic,
  makeKafka,
  privateBroker,
  startBroker,
  stopBroker,
  uniqueTopic,
} from "../support/kafka.js"

const idempotentProducer = (): Producer =>
  makeKafka("spillway-test-producer").producer({ idempotent: true, maxInFlightRequests: 1 })

const texts = (records: ReadonlyArray<{ key: Buffer | null; value: Buffer | null }>) =>
  records.map((r) => `${r.key?.toString() ?? "<null>"}=${r.value?.toString() ?? "<null>"}`)

describe("local Kafka broker", () => {
  it("round-trips records through an idempotent producer and a consumer group", async () => {
    const topic = uniqueTopic("roundtrip")
    await createTopic(topic, 3)
    const producer = idempotentProducer()
    await producer.connect()
    try {
      const messages = Array.from({ length: 6 }, (_, i) => ({
        key: `k${i}`,
        value: JSON.stringify({ n: i }),
        headers: { tenant: "t1" },
      }))
      const meta = await producer.send({ topic, acks: -1, compression: CompressionTypes.None, messages })
      assert.isTrue(meta.every((m) => m.errorCode === 0))
    } finally {
      await producer.disconnect()
    }

    const records = await consumeAll(topic, 6, 30_000)
    assert.strictEqual(records.length, 6)
    assert.deepStrictEqual(texts(records).sort(), [0, 1, 2, 3, 4, 5].map((i) => `k${i}={"n":${i}}`).sort())
    assert.isTrue(records.every((r) => r.headers.tenant?.toString() === "t1"))
    assert.isTrue(records.every((r) => r.partition >= 0 && r.partition < 3))
  })

  it("survives a broker stop and start with the same data", async () => {
    const topic = uniqueTopic("restart")
    await createTopic(topic, 1)
    const producer = idempotentProducer()
    await producer.connect()
    try {
      await producer.send({ topic, acks: -1, messages: [{ key: "a", value: "before" }] })

      await stopBroker()
      assert.strictEqual((await brokerStatus()).state, "stopped")
      await startBroker()
      assert.strictEqual((await brokerStatus()).state, "running")

      // The same producer reconnects by itself.
      await producer.send({ topic, acks: -1, messages: [{ key: "b", value: "after" }] })
    } finally {
      await producer.disconnect()
    }

    const records = await consumeAll(topic, 2, 30_000)
    assert.deepStrictEqual(texts(records), ["a=before", "b=after"])
    assert.deepStrictEqual(
      records.map((r) => r.offset),
      ["0", "1"],
    )
  })
})

describe("private broker for fault tests", () => {
  it("runs beside the shared broker on its own port and keeps data across a crash", async () => {
    const pb = privateBroker(20)
    try {
      await pb.start()
      const kafka = makeKafka("private-test", { brokers: [...pb.brokers] })
      const topic = uniqueTopic("private")
      await createSettledTopics(pb.brokers, [{ topic, numPartitions: 1, replicationFactor: 1 }])
      const producer = kafka.producer({ idempotent: true })
      await producer.connect()
      await producer.send({ topic, acks: -1, messages: [{ value: "survives" }] })
      await producer.disconnect()
      await pb.stop("SIGKILL")
      await pb.start()
      const admin2 = kafka.admin()
      await admin2.connect()
      const offsets = await admin2.fetchTopicOffsets(topic)
      await admin2.disconnect()
      assert.strictEqual(offsets[0]?.high, "1")
      assert.strictEqual((await brokerStatus()).state, "running")
    } finally {
      await pb.destroy()
    }
  })
})
