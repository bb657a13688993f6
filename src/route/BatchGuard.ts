/**
 * BatchGuard: a record batch the router cannot decompress (a codec it lacks, a corrupt compressed batch) must not
 * crash the consumer, stall the other partitions or be skipped silently.
 *
 * kafkajs decodes a whole fetch response at once: a codec that throws (or a missing one: KafkaJSNotImplemented)
 * fails the fetch of every partition of that broker, and kafkajs then crashes the consumer (for
 * KafkaJSNotImplemented, for good). So the guard wraps every entry of kafkajs's codec table (and fills the
 * compression types Kafka does not define, 5 to 7): when decompressing fails, it returns instead a stand-in that
 * decodes into the batch's record count of empty records, the first of which carries a marker value. The marker
 * lives in a buffer only the guard allocates (recognized by identity, so no producer can forge one). The
 * EventStream finds it (`undecodableReason`), hands the records before it on as usual, and reports the batch's
 * offset as undecodable: the router logs and counts it, turns readiness red and retries the partition from there on
 * a growing pause, while the other partitions keep flowing.
 *
 * The record count comes from the batch header, which kafkajs has just read from the same buffer (4 bytes before
 * the compressed records; the record batch header is 61 bytes). A header that does not look like a record batch,
 * or a count above `maxStandInRecords`, is rethrown as before (kafkajs retries the fetch).
 */
import kafkajs from "kafkajs"

// kafkajs is CommonJS and Node's ESM loader does not see its codec table as a named export.
const { CompressionCodecs } = kafkajs

/** Largest record count a stand-in is made for (about 10 bytes each: 10 MB at most). */
export const maxStandInRecords = 1_000_000
const HEADER = 61
const COUNT_AT = 57
const MAGIC_AT = 16

/** The buffers of stand-ins, with why the batch could not be decoded (errors of our codecs, never record bytes). */
const standIns = new WeakMap<ArrayBufferLike, string>()

interface Codec {
  readonly compress: (encoder: { readonly buffer: Buffer }) => Promise<Buffer>
  readonly decompress: (buffer: Buffer) => Promise<Buffer>
}
type CodecFactory = (() => Codec) & { readonly [guarded]?: true }
const guarded: unique symbol = Symbol("spillway/BatchGuard")

/** Pure: the record count of the batch whose compressed records `compressed` is (a view into the fetch buffer). */
const recordCount = (compressed: Buffer): number | undefined => {
  if (compressed.byteOffset < HEADER) return undefined
  const header = Buffer.from(compressed.buffer, compressed.byteOffset - HEADER, HEADER)
  if (header.readInt8(MAGIC_AT) !== 2) return undefined
  const count = header.readInt32BE(COUNT_AT)
  return count > 0 && count <= maxStandInRecords ? count : undefined
}

/**
 * Pure: whether `records` holds `count` length-prefixed records within its bytes: the framing kafkajs reads (a
 * decompressed garbage buffer would make it read out of bounds and throw), not each record's content.
 */
export const framed = (records: Buffer, count: number): boolean => {
  let at = 0
  for (let i = 0; i < count; i++) {
    let z = 0
    let shift = 0
    let b: number
    do {
      if (at >= records.length || shift > 28) return false
      b = records[at++]!
      z |= (b & 0x7f) << shift
      shift += 7
    } while (b & 0x80)
    const length = (z >>> 1) ^ -(z & 1)
    if (length <= 0 || at + length > records.length) return false
    at += length
  }
  return true
}

/** Writes a zigzag varint (Kafka's record lengths and deltas) at `at`; returns the next position. */
const varint = (n: number, out: Buffer, at: number): number => {
  let z = n >= 0 ? n * 2 : -n * 2 - 1
  let i = at
  while (z >= 0x80) {
    out[i++] = (z & 0x7f) | 0x80
    z = Math.floor(z / 128)
  }
  out[i++] = z
  return i
}

/**
 * Pure: `count` records at offset deltas 0, 1, …, no key, no headers, each value one marker byte, in a buffer of its
 * own (`Buffer.alloc` is never pooled), so that a marker is known by identity. Every record is a marker: when the
 * fetch started inside the batch, kafkajs drops the records before the fetched offset and the first one left says
 * where to retry from.
 */
export const standIn = (count: number, reason: string): Buffer => {
  const out = Buffer.alloc(count * 10)
  let at = 0
  for (let i = 0; i < count; i++) {
    const deltaBytes = varint(i, out, at + 3) - (at + 3)
    at = varint(6 + deltaBytes, out, at) // the body: 6 bytes and the offset delta
    out[at++] = 0 // attributes
    out[at++] = 0 // timestamp delta 0
    at += deltaBytes // the offset delta, written ahead (a length below 64 is one byte)
    out.set([1, 2, 0x21, 0], at) // key -1 (null), value length 1, the marker, no headers
    at += 4
  }
  standIns.set(out.buffer, reason.slice(0, 300))
  return out.subarray(0, at)
}

/** Why the batch that held this record value could not be decoded, when the value is a stand-in's marker. */
export const undecodableReason = (value: Buffer | null): string | undefined =>
  value === null || value.length !== 1 ? undefined : standIns.get(value.buffer)

const guard = (type: number, inner: CodecFactory | undefined): CodecFactory => {
  const factory = (): Codec => {
    let codec: Codec | undefined
    let lookup = "unknown compression type"
    try {
      codec = inner?.()
    } catch (e) {
      lookup = e instanceof Error ? e.message : "codec unavailable"
    }
    return {
      compress: (encoder) =>
        codec === undefined
          ? Promise.reject(new Error(`compression type ${type}: ${lookup}`))
          : codec.compress(encoder),
      decompress: async (buffer) => {
        const count = recordCount(buffer)
        let why: string
        try {
          if (codec === undefined) why = `compression type ${type}: ${lookup}`
          else {
            const records = await codec.decompress(buffer)
            if (count === undefined || framed(records, count)) return records
            why = `compression type ${type}: the decompressed records are corrupt`
          }
        } catch (e) {
          why = `compression type ${type}: ${e instanceof Error ? e.message : "cannot decompress"}`
        }
        if (count === undefined) throw new Error(why)
        return standIn(count, why)
      },
    }
  }
  return Object.assign(factory, { [guarded]: true as const })
}

/**
 * Wraps every entry of kafkajs's codec table that is not guarded yet (idempotent; the EventStream installs it after
 * the Kafka client registered its codecs). Compressing is unchanged.
 */
export const installBatchGuard = (): void => {
  const table = CompressionCodecs as unknown as Record<number, CodecFactory | undefined>
  for (let type = 1; type <= 7; type++) {
    const current = table[type]
    if (current?.[guarded] === true) continue
    table[type] = guard(type, current)
  }
}
