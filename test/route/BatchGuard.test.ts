/**
 * BatchGuard against kafkajs's own record-batch encoder and decoder: a batch whose codec is missing or fails decodes
 * into markers at the batch's offsets instead of throwing (which would fail the fetch of every partition of the
 * broker and crash the consumer).
 */
import { createRequire } from "node:module"
import { afterEach, assert, describe, it } from "@effect/vitest"
import { CompressionCodecs, CompressionTypes } from "kafkajs"
import { installBatchGuard, standIn, undecodableReason } from "../../src/route/BatchGuard.js"
import { splitUndecodable } from "../../src/route/EventStream.js"
import { registerCodecs } from "../../src/shared/Codecs.js"

const require = createRequire(import.meta.url)
interface Decoded {
  readonly records: ReadonlyArray<{ offset: string; key: Buffer | null; value: Buffer | null; timestamp: string }>
}
const { RecordBatch } = require("kafkajs/src/protocol/recordBatch/v0/index.js") as {
  RecordBatch: (o: object) => Promise<{ buffer: Buffer }>
}
const Record = require("kafkajs/src/protocol/recordBatch/record/v0/index.js") as (o: object) => unknown
const decodeBatch = require("kafkajs/src/protocol/recordBatch/v0/decoder.js") as (d: unknown) => Promise<Decoded>
const Decoder = require("kafkajs/src/protocol/decoder.js") as new (b: Buffer) => unknown
const Long = require("kafkajs/src/utils/long.js") as { fromValue: (v: string) => unknown }

type Factory = (typeof CompressionCodecs)[CompressionTypes.Snappy]
const table = CompressionCodecs as unknown as Record<number, Factory | undefined>
const saved = new Map<number, Factory | undefined>()
const replace = (type: number, factory: Factory | undefined) => {
  if (!saved.has(type)) saved.set(type, table[type])
  table[type] = factory
}
afterEach(() => {
  for (const [type, f] of saved) table[type] = f
  saved.clear()
})

const encode = async (compression: number, n: number, firstOffset = "1000") => {
  const records = Array.from({ length: n }, (_, i) =>
    Record({ offsetDelta: i, key: Buffer.from(`k${i}`), value: Buffer.from(`value ${i} `.repeat(20)) }),
  )
  const batch = await RecordBatch({
    compression,
    firstOffset: Long.fromValue(firstOffset),
    lastOffsetDelta: n - 1,
    records,
  })
  // Inside a larger buffer, as in a fetch response (the guard reads the header just before the records).
  return Buffer.concat([Buffer.from("fetch response bytes before"), batch.buffer]).subarray(27)
}
const decode = (bytes: Buffer) => decodeBatch(new Decoder(bytes))

describe("BatchGuard", () => {
  registerCodecs()

  it("leaves batches it can decode alone, in every codec", async () => {
    installBatchGuard()
    for (const type of [
      CompressionTypes.None,
      CompressionTypes.GZIP,
      CompressionTypes.Snappy,
      CompressionTypes.LZ4,
      CompressionTypes.ZSTD,
    ]) {
      const { records } = await decode(await encode(type, 5))
      assert.deepStrictEqual(
        records.map((r) => [r.offset, r.key?.toString(), undecodableReason(r.value)]),
        [0, 1, 2, 3, 4].map((i) => [String(1000 + i), `k${i}`, undefined]),
        `type ${type}`,
      )
    }
  })

  it("a codec that fails or is missing becomes a marker at every offset of the batch, with the reason", async () => {
    const bytes = await encode(CompressionTypes.Snappy, 4)
    replace(CompressionTypes.Snappy, () => {
      throw new Error("Snappy compression not implemented")
    })
    installBatchGuard()
    const missing = await decode(bytes)
    assert.deepStrictEqual(
      missing.records.map((r) => [r.offset, r.key, undecodableReason(r.value)]),
      [0, 1, 2, 3].map((i) => [String(1000 + i), null, "compression type 2: Snappy compression not implemented"]),
    )
    assert.deepStrictEqual(splitUndecodable(missing.records), {
      records: [],
      undecodable: { offset: "1000", reason: "compression type 2: Snappy compression not implemented" },
    })

    const zstd = await encode(CompressionTypes.ZSTD, 3)
    zstd.fill(0xff, zstd.length - 8, zstd.length - 4) // corrupt the compressed records
    const corrupt = await decode(zstd)
    assert.strictEqual(corrupt.records.length, 3)
    assert.match(undecodableReason(corrupt.records[0]!.value) ?? "", /^compression type 4: /)
  })

  it("a codec that returns garbage (no records in it) is caught as well, not left to throw in kafkajs", async () => {
    const bytes = await encode(CompressionTypes.ZSTD, 3)
    replace(CompressionTypes.ZSTD, () => ({
      compress: async () => Buffer.alloc(0),
      decompress: async () => Buffer.from([0x7f, 1, 2, 3]),
    }))
    installBatchGuard()
    const { records } = await decode(bytes)
    assert.deepStrictEqual(
      records.map((r) => [r.offset, undecodableReason(r.value)]),
      [0, 1, 2].map((i) => [String(1000 + i), "compression type 4: the decompressed records are corrupt"]),
    )
  })

  it("fills the compression types Kafka does not define", async () => {
    installBatchGuard()
    const bytes = await encode(CompressionTypes.GZIP, 2)
    bytes[22] = (bytes[22]! & ~7) | 6 // the attributes' low byte: compression type 6
    const { records } = await decode(bytes)
    assert.deepStrictEqual(
      records.map((r) => undecodableReason(r.value)),
      ["compression type 6: unknown compression type", "compression type 6: unknown compression type"],
    )
  })

  it("a marker cannot be forged: the same byte in a record's own buffer is just a value", () => {
    assert.isUndefined(undecodableReason(Buffer.from([0x21])))
    const s = standIn(3, "why")
    assert.isTrue(s.length > 0)
  })

  it("splits a fetched batch at the first marker: the records before it go on", async () => {
    installBatchGuard()
    const good = (await decode(await encode(CompressionTypes.None, 2, "10"))).records
    const lz4 = await encode(CompressionTypes.LZ4, 2, "12")
    replace(CompressionTypes.LZ4, () => ({
      compress: async () => Buffer.alloc(0),
      decompress: async () => {
        throw new Error("lz4 broke")
      },
    }))
    installBatchGuard()
    const bad = (await decode(lz4)).records
    const split = splitUndecodable([...good, ...bad])
    assert.deepStrictEqual(
      split.records.map((r) => r.offset),
      ["10", "11"],
    )
    assert.deepStrictEqual(split.undecodable, { offset: "12", reason: "compression type 3: lz4 broke" })
    assert.isUndefined(splitUndecodable(good).undecodable)
  })
})
