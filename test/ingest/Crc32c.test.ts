import { createRequire } from "node:module"
import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { crc32c } from "../../src/ingest/Crc32c.js"

const kafkajsCrc32C = createRequire(import.meta.url)("kafkajs/src/protocol/recordBatch/crc32C/index.js") as (
  b: Buffer,
) => number

describe("crc32c", () => {
  it("is kafkajs' CRC-32C for any bytes, at any length and offset", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 5000 }), fc.nat(7), (bytes, skip) => {
        const b = Buffer.from(bytes).subarray(Math.min(skip, bytes.length))
        expect(crc32c(b)).toBe(kafkajsCrc32C(b))
      }),
      { numRuns: 300 },
    )
  })

  it("has the standard check value (RFC 3720: 0xe3069283 for '123456789')", () => {
    expect(crc32c(Buffer.from("123456789"))).toBe(0xe3069283)
    expect(crc32c(Buffer.alloc(0))).toBe(0)
  })
})
