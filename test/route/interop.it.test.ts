/**
 * Records written by a producer other than kafkajs (the Apache Kafka Java client, test/route/interop/), in every
 * codec Kafka defines, keyed and keyless: all routed and decrypted by the built router. And a batch the router
 * cannot decode (a codec made to fail in this process) does not crash it nor stall the other partitions: it is
 * logged with topic, partition and offset, counted, turns readiness red and its partition is retried on a growing
 * pause until it can be read.
 */
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, HashMap, Layer, Logger, Schema } from "effect"
import { CompressionCodecs, CompressionTypes } from "kafkajs"
import { TenantsFile } from "../../src/domain/Tenant.js"
import { installBatchGuard } from "../../src/route/BatchGuard.js"
import { Destinations } from "../../src/route/Destinations.js"
import { EventStream } from "../../src/route/EventStream.js"
import { defaultRouterOptions, runRouter } from "../../src/route/Router.js"
import { registerCodecs } from "../../src/shared/Codecs.js"
import { ConfigStore } from "../../src/shared/ConfigStore.js"
import { Crypto, sealHex } from "../../src/shared/Crypto.js"
import { type DeadLetter, DeadLetters } from "../../src/shared/DeadLetter.js"
import { Health } from "../../src/shared/Health.js"
import { KafkaClient } from "../../src/shared/Kafka.js"
import { registry } from "../../src/shared/Metrics.js"
import { EventCodec } from "../../src/wire/Wire.js"
import { brokers, createTopic, uniqueTopic } from "../support/kafka.js"
import { readNdjson, startRouter, testScratch, waitFor } from "../support/router.js"
import { type JavaCodec, type JavaRecord, produceWithJava } from "./interop/javaProducer.js"

const KEY = "883EC28EBA9A36A386FA351FBC482B34"
const A = "9c60f26f-5b6c-4c80-b5f5-625bf965b6a6"

const { tempDir, routers } = testScratch()

const tenants = { [A]: { AccessKey: A, EncryptionKey: KEY, UserID: "user-b6a6", targets: [{ file: "a.log" }] } }

/** The protobuf value of an event whose encrypted message is `{ n, codec }`. */
const value = (n: number, codec: string) =>
  Buffer.from(
    EventCodec.encode({
      timestamp: { seconds: String(1_700_000_000 + n), nanos: 5 },
      agent_id: "java",
      agentId: "java",
      tag: codec,
      message: sealHex(Buffer.from(KEY), Buffer.from(JSON.stringify({ n, codec }))),
      UserID: "user-b6a6",
      AccessKey: A,
      event_id: `ev-${n}`,
      eventId: `ev-${n}`,
    } as never),
  )

/** `count` records from `from`, on `partition`, every other one keyless. */
const records = (codec: string, from: number, count: number, partition: number): Array<JavaRecord> =>
  Array.from({ length: count }, (_, i) => ({
    partition,
    key: i % 2 === 0 ? null : Buffer.from(A),
    value: value(from + i, codec),
  }))

const ns = (file: string) =>
  readNdjson(file)
    .map((l) => (l.message as { n: number }).n)
    .sort((x, y) => x - y)
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)

describe("router and a producer other than kafkajs (Java client)", () => {
  it("routes and decrypts records in every codec, keyed and keyless", async () => {
    const topic = uniqueTopic("router-interop")
    await createTopic(topic, 2)
    const codecs: ReadonlyArray<JavaCodec> = ["none", "gzip", "snappy", "lz4", "zstd"]
    const per = 200
    for (const [i, codec] of codecs.entries()) await produceWithJava(topic, codec, records(codec, i * per, per, i % 2))
    const dir = tempDir("interop")
    const tenantsFile = join(dir, "tenants.json")
    writeFileSync(tenantsFile, JSON.stringify(tenants))
    const router = await startRouter({ topic, group: `${topic}-g`, tenantsFile, decrypt: true })
    routers.push(router)
    const file = join(router.outputDir, "a.log")
    const N = codecs.length * per
    await waitFor(() => readNdjson(file).length >= N, 60_000, `${N} lines`)
    assert.deepStrictEqual(ns(file), range(0, N))
    const lines = readNdjson(file)
    for (const line of lines) {
      const m = line.message as { n: number; codec: string }
      assert.strictEqual(line.tag, m.codec)
      assert.strictEqual(line.event_id, `ev-${m.n}`)
      assert.strictEqual(line.access_key, A)
    }
    assert.deepStrictEqual(
      codecs.map((c) => lines.filter((l) => l.tag === c).length),
      codecs.map(() => per),
    )
    assert.strictEqual(await router.metric("spillway_router_dead_letters_total"), 0)
    assert.strictEqual(await router.metric("spillway_router_undecodable_batches_total"), 0)
    assert.strictEqual(await router.stop(), 0)
  })

  it("a batch it cannot decode is logged, counted, turns readiness red and is retried; the other partition flows", async () => {
    const topic = uniqueTopic("router-undecodable")
    await createTopic(topic, 2)
    await produceWithJava(topic, "snappy", records("snappy", 0, 50, 0))
    await produceWithJava(topic, "gzip", records("gzip", 100, 50, 1))
    const out = tempDir("undecodable")

    // This process "lacks" snappy: its codec throws, as kafkajs's own placeholder does.
    registerCodecs()
    const table = CompressionCodecs as unknown as Record<number, unknown>
    const snappy = table[CompressionTypes.Snappy]
    table[CompressionTypes.Snappy] = () => {
      throw new Error("Snappy compression not implemented")
    }
    const logs: Array<{ message: string; annotations: Record<string, unknown> }> = []
    const logger = Logger.make(({ message, annotations }) => {
      logs.push({
        message: Array.isArray(message) ? message.map(String).join(" ") : String(message),
        annotations: Object.fromEntries(HashMap.toEntries(annotations)),
      })
    })
    const letters: Array<DeadLetter> = []
    const layer = Layer.mergeAll(
      EventStream.layerKafka({ topic, groupId: `${topic}-g`, sessionTimeoutMs: 6000 }).pipe(
        Layer.provide(
          KafkaClient.layer({ brokers, clientId: "router-it", connectionTimeoutMs: 3000, requestTimeoutMs: 30000 }),
        ),
      ),
      ConfigStore.layerMemory(Schema.decodeUnknownSync(TenantsFile)(tenants)),
      Crypto.Default,
      Destinations.layer(out),
      DeadLetters.layerMemory(letters),
      Health.Default,
    )
    const undecodable = async () =>
      (await registry.getSingleMetric("spillway_router_undecodable_batches_total")?.get())?.values.find(
        (v) => v.labels.topic === topic && v.labels.partition === 0,
      )?.value ?? 0

    await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const health = yield* Health
          const router = yield* Effect.fork(
            runRouter({ ...defaultRouterOptions, decrypt: true, pauseBase: "300 millis", pauseMax: "2 seconds" }),
          )
          const file = join(out, "a.log")
          const ready = Effect.map(health.check, (cs) => cs.find((c) => c.name === "record-batches")?.ok)
          yield* Effect.promise(() => waitFor(() => ns(file).length >= 50, 60_000, "the gzip partition's 50 events"))
          yield* Effect.promise(() => waitFor(async () => (await undecodable()) >= 3, 30_000, "three attempts"))
          assert.deepStrictEqual(ns(file), range(100, 150), "only the other partition's events, all of them")
          assert.isFalse(yield* ready, "readiness red while a batch cannot be decoded")
          const held = logs.filter((l) => l.message.includes("cannot be decoded"))
          assert.isAtLeast(held.length, 3)
          assert.deepInclude(held[0]!.annotations, {
            topic,
            partition: 0,
            offset: "0",
            reason: "compression type 2: Snappy compression not implemented",
          })
          const pauses = held.map((l) => Number(l.annotations.retryInMs))
          assert.isAbove(pauses[2]!, pauses[0]!, `growing pauses ${pauses.join(", ")}`)
          assert.strictEqual(letters.length, 0, "nothing skipped to the dead letters")
          assert.isNull(router.unsafePoll(), "the router keeps running")

          // The codec is back: the partition is read from the batch it could not decode, nothing skipped.
          table[CompressionTypes.Snappy] = snappy
          installBatchGuard()
          yield* Effect.promise(() => waitFor(() => ns(file).length >= 100, 30_000, "the snappy partition's events"))
          assert.deepStrictEqual(ns(file), [...range(0, 50), ...range(100, 150)])
          yield* Effect.promise(() =>
            waitFor(() => Effect.runPromise(ready).then((ok) => ok === true), 10_000, "ready"),
          )
          yield* Fiber.interrupt(router)
        }),
      ).pipe(Effect.provide(layer), Effect.provide(Logger.replace(Logger.defaultLogger, logger))),
    ).finally(() => {
      table[CompressionTypes.Snappy] = snappy
    })
    assert.notInclude(readFileSync(join(out, "a.log"), "utf8"), "\u0000")
  })
})
