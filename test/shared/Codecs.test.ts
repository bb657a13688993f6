import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { CompressionCodecs, CompressionTypes } from "kafkajs"
import { compressSync } from "snappy"
import { registerCodecs, snappyDecode, snappyEncode } from "../../src/shared/Codecs.js"

describe("Codecs", () => {
  registerCodecs()
  for (const [name, type] of [
    ["gzip", CompressionTypes.GZIP],
    ["snappy", CompressionTypes.Snappy],
    ["lz4", CompressionTypes.LZ4],
    ["zstd", CompressionTypes.ZSTD],
  ] as const) {
    it(`${name} round-trips through kafkajs's codec table`, async () => {
      const codec = CompressionCodecs[type]()
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ maxLength: 100_000 }), async (bytes) => {
          const buffer = Buffer.from(bytes)
          const packed: Buffer = await codec.compress({ buffer })
          expect(Buffer.from(await codec.decompress(packed)).equals(buffer)).toBe(true)
        }),
        { numRuns: 30 },
      )
    })
  }

  it("snappy reads raw blocks (sarama, librdkafka) as well as xerial frames (the Java client)", () => {
    const data = Buffer.from("a line of a log, ".repeat(5000))
    expect(snappyDecode(compressSync(data)).equals(data)).toBe(true)
    const framed = snappyEncode(data)
    expect(framed.subarray(0, 8).toString("latin1")).toBe("\x82SNAPPY\x00")
    expect(snappyDecode(framed).equals(data)).toBe(true)
  })

  it("snappy refuses a truncated xerial frame", () => {
    const framed = snappyEncode(Buffer.from("x".repeat(100_000)))
    expect(() => snappyDecode(framed.subarray(0, framed.length - 10))).toThrow(/truncated/)
  })
})
