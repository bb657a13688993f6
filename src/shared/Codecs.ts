/**
 * Kafka record-batch codecs beyond kafkajs's own gzip: snappy (`snappy`, napi-rs), lz4 (`lz4-napi`, the LZ4
 * frame format Kafka uses) and zstd (`zstd-napi`). `registerCodecs()` installs them into kafkajs's global codec
 * table once; the Kafka client calls it, so every producer and consumer of the process reads and writes all
 * five of Kafka's compression types.
 *
 * Snappy in Kafka comes in two framings: the Java client (and kafkajs-snappy) writes xerial's framing (a magic
 * header, then length-prefixed snappy blocks); sarama and librdkafka may write one raw snappy block. Reading
 * accepts both; writing uses xerial's framing, as the Java client does.
 */

import { createRequire } from "node:module"
import kafkajs from "kafkajs"
import type * as Lz4 from "lz4-napi"
import type * as Snappy from "snappy"
import type * as Zstd from "zstd-napi"

// kafkajs is CommonJS and Node's ESM loader does not see these two as named exports.
const { CompressionCodecs, CompressionTypes } = kafkajs

// The native codecs load on first use: resolving and opening each costs milliseconds of every program's start-up,
// and a topic uses one of them or none.
const load = createRequire(import.meta.url)
const modules: { snappy?: typeof Snappy; lz4?: typeof Lz4; zstd?: typeof Zstd } = {}
const snappy = () => (modules.snappy ??= load("snappy") as typeof Snappy)
const lz4 = () => (modules.lz4 ??= load("lz4-napi") as typeof Lz4)
const zstd = () => (modules.zstd ??= load("zstd-napi") as typeof Zstd)

/** The compression names operators write (`--compression`), with kafkajs's type for each. */
export const compressionTypes = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
} as const
export type CompressionName = keyof typeof compressionTypes
export const compressionNames = Object.keys(compressionTypes) as ReadonlyArray<CompressionName>

const XERIAL_MAGIC = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00])
const XERIAL_HEADER = 16 // magic (8), version (4), compatible version (4)
const XERIAL_BLOCK = 32 * 1024

/** Pure: xerial-framed snappy, as the Java client writes it. */
export const snappyEncode = (data: Buffer): Buffer => {
  const header = Buffer.alloc(XERIAL_HEADER)
  XERIAL_MAGIC.copy(header, 0)
  header.writeInt32BE(1, 8)
  header.writeInt32BE(1, 12)
  const parts: Array<Buffer> = [header]
  for (let at = 0; at < data.length; at += XERIAL_BLOCK) {
    const block = snappy().compressSync(data.subarray(at, at + XERIAL_BLOCK))
    const len = Buffer.alloc(4)
    len.writeInt32BE(block.length, 0)
    parts.push(len, block)
  }
  return Buffer.concat(parts)
}

/** Pure: xerial-framed or raw snappy; throws on a corrupt input. */
export const snappyDecode = (data: Buffer): Buffer => {
  if (data.length < XERIAL_HEADER || !data.subarray(0, 8).equals(XERIAL_MAGIC))
    return Buffer.from(snappy().uncompressSync(data) as Buffer)
  const parts: Array<Buffer> = []
  let at = XERIAL_HEADER
  while (at < data.length) {
    if (at + 4 > data.length) throw new Error("snappy: truncated xerial block length")
    const len = data.readInt32BE(at)
    at += 4
    if (len < 0 || at + len > data.length) throw new Error("snappy: truncated xerial block")
    parts.push(Buffer.from(snappy().uncompressSync(data.subarray(at, at + len)) as Buffer))
    at += len
  }
  return Buffer.concat(parts)
}

interface Encoder {
  readonly buffer: Buffer
}
const codec = (encode: (b: Buffer) => Buffer, decode: (b: Buffer) => Buffer) => () => ({
  compress: async (encoder: Encoder) => encode(encoder.buffer),
  decompress: async (buffer: Buffer) => decode(buffer),
})

let registered = false
/** Installs snappy, lz4 and zstd into kafkajs's codec table (idempotent). */
export const registerCodecs = (): void => {
  if (registered) return
  registered = true
  CompressionCodecs[CompressionTypes.Snappy] = codec(snappyEncode, snappyDecode)
  CompressionCodecs[CompressionTypes.LZ4] = codec(
    (b) => lz4().compressFrameSync(b),
    (b) => lz4().decompressFrameSync(b),
  )
  CompressionCodecs[CompressionTypes.ZSTD] = codec(
    (b) => zstd().compress(b),
    (b) => zstd().decompress(b),
  )
}
