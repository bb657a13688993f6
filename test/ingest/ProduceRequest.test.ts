/**
 * ProduceRequest: the Produce request body it encodes is byte for byte the one kafkajs 2.2.4's own encoder writes
 * (`kafkajs/src/protocol/requests/produce/v3/request.js`, which versions 4 to 7 reuse), for every compression and the
 * shapes of message the ingester sends (string or Buffer keys and values, null keys, dead letters' headers), across
 * varint boundaries; and it is installed where kafkajs' Broker looks Produce up. A kafkajs of another shape fails here.
 */
import { readdirSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import path from "node:path"
import { afterEach, beforeEach, describe, expect, it, vi } from "@effect/vitest"
import fc from "fast-check"
import { CompressionTypes } from "kafkajs"
import { groupedLinearly } from "../../src/ingest/LinearGrouping.js"
import {
  coversAll,
  encodeProduceBody,
  installProduceEncoder,
  type ProduceArgs,
  type ProduceMessage,
} from "../../src/ingest/ProduceRequest.js"
import { registerCodecs } from "../../src/shared/Codecs.js"

const require = createRequire(import.meta.url)
interface EncoderLike {
  readonly buffer: Buffer
}
interface Built {
  readonly request: { readonly apiVersion: number; readonly encode: () => Promise<EncoderLike> }
  readonly response: unknown
}
const kafkajsV3 = require("kafkajs/src/protocol/requests/produce/v3/request.js") as (a: ProduceArgs) => Built["request"]
const Produce = require("kafkajs/src/protocol/requests/produce/index.js") as {
  versions: ReadonlyArray<string>
  protocol: (a: { version: number }) => (args: ProduceArgs) => Built
}

const groupMessagesPerPartition = require("kafkajs/src/producer/groupMessagesPerPartition.js") as (a: {
  topic: string
  partitionMetadata: ReadonlyArray<unknown>
  messages: ReadonlyArray<ProduceMessage>
  partitioner: (a: { message: ProduceMessage }) => number
}) => Record<string, ReadonlyArray<ProduceMessage>>
const kafkajsSource = (file: string) => readFileSync(require.resolve(`kafkajs/src/producer/${file}`), "utf8")

const theirs = async (args: ProduceArgs) => (await kafkajsV3(args).encode()).buffer
const ours = async (args: ProduceArgs) => (await encodeProduceBody(args)).buffer

const value = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff))
const records = (n: number, size: number, key: string | null = "tenant-a"): Array<ProduceMessage> =>
  Array.from({ length: n }, (_, i) => ({ key, value: value(size + (i % 7), i) }))

const args = (over: Partial<ProduceArgs> & Pick<ProduceArgs, "topicData">): ProduceArgs => ({
  acks: -1,
  timeout: 5000,
  producerId: "4001",
  producerEpoch: 0,
  ...over,
})

const compressions = [
  ["none", CompressionTypes.None],
  ["gzip", CompressionTypes.GZIP],
  ["snappy", CompressionTypes.Snappy],
  ["lz4", CompressionTypes.LZ4],
  ["zstd", CompressionTypes.ZSTD],
] as const

describe("ProduceRequest", () => {
  registerCodecs()
  beforeEach(() => {
    vi.spyOn(Date, "now").mockReturnValue(1_764_000_000_123)
  })
  afterEach(() => {
    vi.restoreAllMocks()
  })

  for (const [name, compression] of compressions)
    it(`writes kafkajs' bytes, ${name}`, async () => {
      const a = args({
        compression,
        topicData: [
          {
            topic: "fb-kafka",
            partitions: [
              { partition: 0, firstSequence: 0, messages: records(3, 40) },
              { partition: 2, firstSequence: 1_000_000, messages: records(1500, 620) },
            ],
          },
          {
            topic: "fb-kafka-dlq",
            partitions: [
              {
                partition: 1,
                firstSequence: 17,
                messages: [
                  {
                    key: "k",
                    value: value(10, 1),
                    headers: { reason: "invalid_event", detail: "ünïcode détail", source: Buffer.from("ingester") },
                  },
                  { key: null, value: "a string value, ✓" },
                  { value: Buffer.alloc(0) },
                ],
              },
            ],
          },
        ],
      })
      const mine = await ours(a)
      expect(mine.equals(await theirs(a))).toBe(true)
    })

  it("writes kafkajs' bytes for any covered messages, producer ids and transactional ids", async () => {
    const message = fc.record(
      {
        key: fc.oneof(
          fc.constant(null),
          fc.string(),
          fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
        ),
        value: fc.oneof(
          fc.string(),
          fc.uint8Array({ maxLength: 20_000 }).map((b) => Buffer.from(b)),
        ),
        headers: fc.dictionary(fc.string({ maxLength: 200 }), fc.string({ maxLength: 200 }), { maxKeys: 3 }),
      },
      { requiredKeys: ["value"] },
    )
    await fc.assert(
      fc.asyncProperty(
        fc.array(message, { minLength: 1, maxLength: 300 }),
        fc.constantFrom(...compressions.map(([, c]) => c)),
        fc.constantFrom(null, "", "tx-1"),
        fc.constantFrom("-1", "0", "123456789012345", 7),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        async (messages, compression, transactionalId, producerId, firstSequence) => {
          const a = args({
            compression,
            transactionalId,
            producerId,
            producerEpoch: 3,
            topicData: [{ topic: "t", partitions: [{ partition: 5, firstSequence, messages }] }],
          })
          expect(coversAll(a)).toBe(true)
          expect((await ours(a)).equals(await theirs(a))).toBe(true)
        },
      ),
      { numRuns: 60 },
    )
  })

  it("leaves messages it does not cover to kafkajs (timestamps, array headers, other values, empty partitions)", () => {
    const with_ = (m: ProduceMessage) =>
      args({ topicData: [{ topic: "t", partitions: [{ partition: 0, messages: [m] }] }] })
    expect(coversAll(with_({ value: "v", timestamp: "1700000000000" }))).toBe(false)
    expect(coversAll(with_({ value: "v", headers: { h: ["a", "b"] } }))).toBe(false)
    expect(coversAll(with_({ value: 12 as unknown as string }))).toBe(false)
    expect(coversAll(args({ topicData: [{ topic: "t", partitions: [{ partition: 0, messages: [] }] }] }))).toBe(false)
  })

  it("is what kafkajs' Broker gets for Produce versions 3 to 7, and only those (kafkajs 2.2.4 has 0 to 7)", async () => {
    installProduceEncoder()
    expect(Produce.versions).toEqual(["0", "1", "2", "3", "4", "5", "6", "7"])
    const a = args({
      compression: CompressionTypes.Snappy,
      topicData: [{ topic: "t", partitions: [{ partition: 0, messages: records(20, 600) }] }],
    })
    const expected = await theirs(a)
    for (const version of [3, 4, 5, 6, 7]) {
      const built = Produce.protocol({ version })(a)
      expect(built.request.apiVersion).toBe(version)
      expect(built.request.encode.toString()).toContain("encodeProduceBody")
      expect((await built.request.encode()).buffer.equals(expected)).toBe(true)
    }
    const old = Produce.protocol({ version: 2 })(a)
    expect(old.request.encode.toString()).not.toContain("encodeProduceBody")
    const timestamped = args({
      topicData: [{ topic: "t", partitions: [{ partition: 0, messages: [{ value: "v", timestamp: "5" }] }] }],
    })
    expect(Produce.protocol({ version: 7 })(timestamped).request.encode.toString()).not.toContain("encodeProduceBody")
  })

  it("groups a send's messages by partition as kafkajs does, placing each message once and in order", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.string({ maxLength: 5 })), { maxLength: 3000 }),
        (placed) => {
          const messages = placed.map(([p, v]) => ({ key: String(p), value: v }))
          const calls: Array<ProduceMessage> = []
          const partitioner = ({ message }: { message: ProduceMessage }) => {
            calls.push(message)
            return Number(message.key)
          }
          const base = { topic: "t", partitionMetadata: [{}, {}, {}, {}, {}, {}], partitioner }
          const expected = groupMessagesPerPartition({ ...base, messages: [...messages] })
          const expectedCalls = calls.splice(0)
          const grouped = groupedLinearly([...messages])
          expect(groupMessagesPerPartition({ ...base, messages: grouped })).toEqual(expected)
          expect(calls).toEqual(expectedCalls)
          expect([...grouped]).toEqual(messages)
        },
      ),
      { numRuns: 50 },
    )
  })

  it("is Array's reduce for any other accumulator", () => {
    const grouped = groupedLinearly([1, 2, 3, 4])
    expect(grouped.reduce((a, b) => a + b)).toBe(10)
    expect(grouped.reduce((a, b) => a + b, 5)).toBe(15)
    expect(grouped.reduce((a: Array<number>, b) => a.concat([b * 2]), [])).toEqual([2, 4, 6, 8])
    expect(grouped.reduce((a: Record<string, number>, b) => Object.assign(a, { [b]: b }), { x: 0 })).toEqual({
      x: 0,
      1: 1,
      2: 2,
      3: 3,
      4: 4,
    })
    expect(Object.keys(grouped)).toEqual(["0", "1", "2", "3"])
  })

  it("kafkajs 2.2.4 calls reduce on a send's messages only to group them, and hands sendMessages the array it got", () => {
    const dir = path.dirname(require.resolve("kafkajs/src/producer/groupMessagesPerPartition.js"))
    const uses = readdirSync(dir)
      .filter((f) => f.endsWith(".js"))
      .flatMap((f) => (kafkajsSource(f).match(/messages\.reduce\(/g) ?? []).map(() => f))
    expect(uses).toEqual(["groupMessagesPerPartition.js"])
    expect(kafkajsSource("groupMessagesPerPartition.js")).toContain(
      "return messages.reduce((result, message) => {\n    const partition = partitioner({ topic, partitionMetadata, message })",
    )
    expect(kafkajsSource("messageProducer.js")).toContain("merged.push({ topic, messages })")
  })
})
