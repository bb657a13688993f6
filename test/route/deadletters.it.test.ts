/**
 * The dead-letter path cannot wedge a partition nor the shutdown (issue 12 item 4), and a fatal error says what it
 * is (issue 11 item 4). The built router against the real local Kafka.
 */
import { writeFileSync } from "node:fs"
import { createServer, type Server } from "node:net"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import type { Message } from "kafkajs"
import { sealHex } from "../../src/shared/Crypto.js"
import { EventCodec } from "../../src/wire/Wire.js"
import { brokers, consumeAll, createSettledTopics, headerText, makeKafka, uniqueTopic } from "../support/kafka.js"
import { freePort, readNdjson, runRouterOnce, startRouter, testScratch, waitFor } from "../support/router.js"

const KEY = "883EC28EBA9A36A386FA351FBC482B34"
const A = "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6"

const { tempDir, routers } = testScratch()

const tenantsFile = (dir: string) => {
  const file = join(dir, "tenants.json")
  writeFileSync(
    file,
    JSON.stringify({ [A]: { AccessKey: A, EncryptionKey: KEY, UserID: "user-b6a6", targets: [{ file: "a.log" }] } }),
  )
  return file
}

const good = (n: number) =>
  Buffer.from(
    EventCodec.encode({
      timestamp: { seconds: String(1_700_000_000 + n), nanos: 0 },
      agent_id: "it",
      agentId: "it",
      tag: "t",
      message: sealHex(Buffer.from(KEY), Buffer.from(JSON.stringify({ n }))),
      UserID: "user-b6a6",
      AccessKey: A,
    } as never),
  )
/** Not an api.Event (neither protobuf nor JSON): an undecodable record of `bytes` bytes. */
const poison = (bytes: number) => Buffer.alloc(bytes, 0xff)

const createTopics = (topics: ReadonlyArray<{ topic: string; config?: Record<string, string> }>) =>
  createSettledTopics(
    brokers,
    topics.map(({ topic, config = {} }) => ({
      topic,
      numPartitions: 1,
      replicationFactor: 1,
      configEntries: Object.entries(config).map(([name, value]) => ({ name, value })),
    })),
  )

const produce = async (topic: string, messages: ReadonlyArray<Message>) => {
  const producer = makeKafka("spillway-test-dlq-producer").producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  try {
    await producer.send({ topic, acks: -1, messages: [...messages] })
  } finally {
    await producer.disconnect()
  }
}

const committed = async (groupId: string, topic: string) => {
  const admin = makeKafka("spillway-test-admin").admin()
  await admin.connect()
  try {
    const [c] = await admin.fetchOffsets({ groupId, topics: [topic] })
    return Number(c?.partitions[0]?.offset ?? "-1")
  } finally {
    await admin.disconnect()
  }
}

const ns = (file: string) => readNdjson(file).map((l) => (l.message as { n: number }).n)

describe("dead letters and shutdown (built router, real Kafka)", () => {
  it("dead letters over the broker's message size are split, and one too large is cut, headers kept", async () => {
    const topic = uniqueTopic("router-dlq-size")
    // The dead-letter topic takes record batches of at most 20,000 bytes.
    await createTopics([{ topic }, { topic: `${topic}-dlq`, config: { "max.message.bytes": "20000" } }])
    await produce(topic, [
      ...Array.from({ length: 60 }, () => ({ key: A, value: poison(1000) })), // offsets 0..59: 60 KB of letters
      { key: A, value: poison(100_000) }, // 60: one letter alone over the limit
      ...Array.from({ length: 10 }, (_, i) => ({ key: A, value: good(i) })), // 61..70
    ])
    const dir = tempDir("dlq-size")
    const router = await startRouter({ topic, group: `${topic}-g`, tenantsFile: tenantsFile(dir), decrypt: true })
    routers.push(router)
    const file = join(router.outputDir, "a.log")
    await waitFor(() => ns(file).length >= 10, 30_000, "the 10 good events behind the poison")
    assert.deepStrictEqual(
      ns(file),
      Array.from({ length: 10 }, (_, i) => i),
    )
    const letters = await consumeAll(`${topic}-dlq`, 61, 20_000)
    assert.strictEqual(letters.length, 61)
    assert.deepStrictEqual(
      letters.map((l) => headerText(l.headers, "source-offset")),
      Array.from({ length: 61 }, (_, i) => String(i)),
    )
    assert.isTrue(letters.slice(0, 60).every((l) => l.value?.length === 1000 && l.headers.truncated === undefined))
    const big = letters[60]!
    assert.strictEqual(headerText(big.headers, "truncated"), "100000")
    assert.strictEqual(headerText(big.headers, "reason"), "undecodable")
    assert.strictEqual(headerText(big.headers, "source-topic"), topic)
    assert.strictEqual(big.key?.toString(), A)
    assert.isBelow(big.value?.length ?? 0, 20_000)
    assert.isTrue(big.value?.equals(poison(big.value.length)), "the value's head is kept")
    assert.strictEqual(await router.metric("spillway_router_dead_letters_truncated_total"), 1)
    assert.strictEqual(await router.metric("spillway_router_dead_letters_total"), 61)
    assert.strictEqual(await router.stop(), 0)
    assert.strictEqual(await committed(`${topic}-g`, topic), 71)
  })

  it("SIGTERM ends a router whose dead letters Kafka keeps refusing, in bounded time, committing nothing past them", async () => {
    const topic = uniqueTopic("router-dlq-stuck")
    // A compacted dead-letter topic refuses a record without a key (INVALID_RECORD) every time: the router retries
    // it for ever, as it must (a poison record is never skipped).
    await createTopics([{ topic }, { topic: `${topic}-dlq`, config: { "cleanup.policy": "compact" } }])
    await produce(topic, [
      { key: null, value: poison(10) },
      { key: A, value: good(1) },
    ])
    const dir = tempDir("dlq-stuck")
    const router = await startRouter({
      topic,
      group: `${topic}-g`,
      tenantsFile: tenantsFile(dir),
      decrypt: true,
      env: { SPILLWAY_ROUTER_DRAIN_TIMEOUT: "3 seconds" },
    })
    routers.push(router)
    await waitFor(() => router.output().includes("dead-letter topic unavailable"), 30_000, "the dead letter refused")
    const at = Date.now()
    const code = await router.stop() // SIGTERM, SIGKILL after 30 s
    const seconds = (Date.now() - at) / 1000
    assert.strictEqual(code, 0, `exit code (null: it had to be SIGKILLed after ${seconds.toFixed(1)} s)`)
    assert.isBelow(seconds, 20)
    assert.isAtMost(await committed(`${topic}-g`, topic), 0, "nothing committed past the poison record")
    assert.deepStrictEqual(ns(join(router.outputDir, "a.log")), [])
    console.log(`[router-it] SIGTERM with dead letters refused: exited in ${seconds.toFixed(1)} s`)
  })

  it("a fatal error is one ERROR line saying what failed, exit code 1", async () => {
    const dir = tempDir("fatal")
    const port = await freePort()
    const busy: Server = createServer()
    await new Promise<void>((r) => busy.listen(port, "127.0.0.1", r))
    try {
      const { code, output } = await runRouterOnce(
        [
          "consumer",
          "--tenants",
          tenantsFile(dir),
          "--output-dir",
          join(dir, "out"),
          "--topic",
          uniqueTopic("router-fatal"),
          // Kafka that cannot be reached: the operations port is bound first all the same.
          "--brokers",
          "127.0.0.1:1",
          "--metrics-port",
          String(port),
        ],
        {},
        60_000,
      )
      assert.strictEqual(code, 1, output)
      const errors = output
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { message: unknown; logLevel: string })
        .filter((l) => l.logLevel === "ERROR")
      assert.isAtLeast(errors.length, 1, output)
      for (const e of errors) assert.isString(e.message, `an ERROR line without a message: ${JSON.stringify(e)}`)
      const last = errors.at(-1)!
      assert.match(String(last.message), /^the router stopped: .*(EADDRINUSE|address already in use)/)
      // No --metrics-host: the operations port binds the loopback address by default.
      assert.include(String(last.message), `127.0.0.1:${port}`)
    } finally {
      busy.close()
    }
  })
})
