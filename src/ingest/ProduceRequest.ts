/**
 * The body of a Kafka Produce request (versions 3 to 7: record batches of magic 2), encoded in one pass into buffers
 * of exact size, in place of kafkajs 2.2.4's own encoder (package.json pins it). kafkajs builds every record in its own
 * zero-filled 512-byte buffer that then doubles, every varint in a fresh Buffer, and copies the record batch five
 * more times on its way into the request; the CPU profile of the ingester put that encoding first among its costs,
 * and its garbage (large ArrayBuffers) behind the ingester's peak RSS. The bytes are the same as kafkajs' (the unit
 * test compares them); only their making changed. Messages this encoder does not cover (timestamps, array headers,
 * values that are neither strings nor Buffers) are left to kafkajs' encoder.
 *
 * `installProduceEncoder` swaps the `encode` of the requests kafkajs' Broker builds from its Produce table
 * (`kafkajs/src/protocol/requests/produce/index.js`, imported statically so that the bundle, tsc and vitest all
 * patch the instance kafkajs itself uses). It is process-wide: every kafkajs producer of the process uses it.
 */
import Encoder from "kafkajs/src/protocol/encoder.js"
import Compression from "kafkajs/src/protocol/message/compression/index.js"
import Produce from "kafkajs/src/protocol/requests/produce/index.js"
import Long from "kafkajs/src/utils/long.js"
import { crc32c } from "./Crc32c.js"

type Bytes = Buffer | string | null | undefined

export interface ProduceMessage {
  readonly key?: Bytes
  readonly value: Bytes
  readonly headers?: Readonly<Record<string, unknown>>
  readonly timestamp?: unknown
  readonly [k: string]: unknown
}

export interface ProducePartition {
  readonly partition: number
  readonly firstSequence?: number
  readonly messages: ReadonlyArray<ProduceMessage>
}

export interface ProduceArgs {
  readonly acks: number
  readonly timeout: number
  readonly compression?: number
  readonly transactionalId?: string | null
  readonly producerId?: unknown
  readonly producerEpoch?: number
  readonly topicData: ReadonlyArray<{ readonly topic: string; readonly partitions: ReadonlyArray<ProducePartition> }>
}

const COMPRESSION_CODEC_MASK = 0x07
const TRANSACTIONAL_MASK = 16
const MAGIC_BYTE = 2
/** Record batch bytes before the records: base offset ... record count (Kafka's DefaultRecordBatch). */
const BATCH_HEADER = 8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4
/** Where the CRC-covered part starts: after base offset, length, leader epoch, magic and the CRC itself. */
const CRC_START = 8 + 4 + 4 + 1 + 4

const zigzag = (n: number) => (n << 1) ^ (n >> 31)
const uvarintSize = (u: number) => {
  let bytes = 1
  while ((u & 0xffffff80) !== 0) {
    bytes++
    u >>>= 7
  }
  return bytes
}
const varintSize = (n: number) => uvarintSize(zigzag(n))
const byteSize = (b: Buffer | string) => (typeof b === "string" ? Buffer.byteLength(b, "utf8") : b.length)
/** A varint length then the bytes; null is length -1. */
const bytesSize = (b: Buffer | string | null) => {
  if (b === null) return 1
  const n = byteSize(b)
  return varintSize(n) + n
}

/** Whether this encoder writes `m` exactly as kafkajs would (else kafkajs encodes the request itself). */
const covered = (m: ProduceMessage): boolean => {
  if (m.timestamp !== undefined && m.timestamp !== null) return false
  const { key, value, headers } = m
  if (key !== undefined && key !== null && typeof key !== "string" && !Buffer.isBuffer(key)) return false
  if (value !== undefined && value !== null && typeof value !== "string" && !Buffer.isBuffer(value)) return false
  if (headers === undefined) return true
  if (headers === null || typeof headers !== "object") return false
  for (const h of Object.keys(headers)) {
    const v = headers[h]
    if (typeof v !== "string" && !Buffer.isBuffer(v)) return false
  }
  return true
}

/** Sequential writes into a buffer allocated at its exact size. */
class Writer {
  offset = 0
  constructor(readonly buf: Buffer) {}
  uvarint(u: number) {
    while ((u & 0xffffff80) !== 0) {
      this.buf[this.offset++] = (u & 0x7f) | 0x80
      u >>>= 7
    }
    this.buf[this.offset++] = u & 0x7f
  }
  varint(n: number) {
    this.uvarint(zigzag(n))
  }
  bytes(b: Buffer | string | null) {
    if (b === null) return this.varint(-1)
    if (typeof b === "string") {
      const n = Buffer.byteLength(b, "utf8")
      this.varint(n)
      this.offset += this.buf.write(b, this.offset, n, "utf8")
    } else {
      this.varint(b.length)
      this.offset += b.copy(this.buf, this.offset)
    }
  }
  int8(n: number) {
    this.offset = this.buf.writeInt8(n, this.offset)
  }
  int16(n: number) {
    this.offset = this.buf.writeInt16BE(n, this.offset)
  }
  int32(n: number) {
    this.offset = this.buf.writeInt32BE(n, this.offset)
  }
  int64(v: unknown) {
    const l = Long.fromValue(v)
    this.int32(l.getHighBits())
    this.int32(l.getLowBits())
  }
  string(s: string | null) {
    if (s === null) return this.int16(-1)
    const n = Buffer.byteLength(s, "utf8")
    this.int16(n)
    this.offset += this.buf.write(s, this.offset, n, "utf8")
  }
  buffer(b: Buffer) {
    this.offset += b.copy(this.buf, this.offset)
  }
}

const norm = (b: Bytes): Buffer | string | null => (b === undefined ? null : b)

/** The size of one record without its length prefix (kafkajs' record v0: attributes, deltas, key, value, headers). */
const recordBodySize = (m: ProduceMessage, offsetDelta: number) => {
  let size = 1 + 1 + varintSize(offsetDelta) + bytesSize(norm(m.key)) + bytesSize(norm(m.value))
  let headers = 0
  if (m.headers !== undefined)
    for (const h of Object.keys(m.headers)) {
      headers++
      size += bytesSize(h) + bytesSize(m.headers[h] as Buffer | string)
    }
  return size + varintSize(headers)
}

/** The records of one partition, each length-prefixed, into `w`; `sizes[i]` is record i's body size. */
const writeRecords = (w: Writer, messages: ReadonlyArray<ProduceMessage>, sizes: Int32Array) => {
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!
    w.varint(sizes[i]!)
    w.int8(0) // attributes
    w.varint(0) // timestamp delta: every record has the batch's timestamp
    w.varint(i) // offset delta
    w.bytes(norm(m.key))
    w.bytes(norm(m.value))
    const headers = m.headers === undefined ? [] : Object.keys(m.headers)
    w.varint(headers.length)
    for (const h of headers) {
      w.bytes(h)
      w.bytes(m.headers![h] as Buffer | string)
    }
  }
}

interface Batch {
  readonly partition: number
  readonly firstSequence: number
  readonly count: number
  /** The records as they go into the batch: raw, or compressed. */
  readonly records: Buffer | undefined
  readonly messages: ReadonlyArray<ProduceMessage>
  readonly sizes: Int32Array
  readonly recordsSize: number
}

const sizesOf = (messages: ReadonlyArray<ProduceMessage>) => {
  const sizes = new Int32Array(messages.length)
  let total = 0
  for (let i = 0; i < messages.length; i++) {
    const s = recordBodySize(messages[i]!, i)
    sizes[i] = s
    total += varintSize(s) + s
  }
  return { sizes, total }
}

/** One partition's records, compressed when asked (kafkajs' codecs take an Encoder and read its `buffer`). */
const prepareBatch = async (compression: number, p: ProducePartition): Promise<Batch> => {
  const { sizes, total } = sizesOf(p.messages)
  const base = { partition: p.partition, firstSequence: p.firstSequence ?? 0, count: p.messages.length }
  if (compression === 0) return { ...base, records: undefined, messages: p.messages, sizes, recordsSize: total }
  const w = new Writer(Buffer.allocUnsafe(total))
  writeRecords(w, p.messages, sizes)
  const codec = Compression.lookupCodec(compression)
  if (codec === null) throw new Error("no codec for this compression type")
  const raw = Object.assign(Object.create(Encoder.prototype) as Encoder, { buf: w.buf, offset: total })
  const compressed = await codec.compress(raw)
  return { ...base, records: compressed, messages: p.messages, sizes, recordsSize: compressed.length }
}

/** One record batch (magic 2) into `w`, its CRC-32C computed over the bytes from the attributes on. */
const writeBatch = (w: Writer, b: Batch, attributes: number, now: number, args: ProduceArgs) => {
  w.int32(b.partition)
  w.int32(BATCH_HEADER + b.recordsSize) // the record set's size
  const start = w.offset
  w.int32(0) // base offset, high bits
  w.int32(0) // base offset, low bits
  w.int32(BATCH_HEADER - 12 + b.recordsSize) // batch length: from the leader epoch on
  w.int32(0) // partition leader epoch
  w.int8(MAGIC_BYTE)
  const crcAt = w.offset
  w.int32(0) // the CRC, written below
  w.int16(attributes)
  w.int32(b.count - 1) // last offset delta
  w.int64(now) // first timestamp
  w.int64(now) // max timestamp
  w.int64(args.producerId ?? -1)
  w.int16(args.producerEpoch ?? 0)
  w.int32(b.firstSequence)
  w.int32(b.count)
  if (b.records === undefined) writeRecords(w, b.messages, b.sizes)
  else w.buffer(b.records)
  const crc = crc32c(w.buf.subarray(start + CRC_START, w.offset))
  w.buf.writeUInt32BE(crc, crcAt)
}

/** Pure but for the clock and the codec: the Produce request body (v3 to v7) of `args`, as kafkajs' Encoder. */
export const encodeProduceBody = async (args: ProduceArgs): Promise<Encoder> => {
  const compression = args.compression ?? 0
  const transactionalId = args.transactionalId ?? null
  const attributes = (compression & COMPRESSION_CODEC_MASK) | (transactionalId ? TRANSACTIONAL_MASK : 0)
  const now = Date.now()
  const topics: Array<{ topic: string; batches: Array<Batch> }> = []
  let size = (transactionalId === null ? 2 : 2 + Buffer.byteLength(transactionalId, "utf8")) + 2 + 4 + 4
  for (const t of args.topicData) {
    const batches: Array<Batch> = []
    for (const p of t.partitions) batches.push(await prepareBatch(compression, p))
    topics.push({ topic: t.topic, batches })
    size += 2 + Buffer.byteLength(t.topic, "utf8") + 4
    for (const b of batches) size += 4 + 4 + BATCH_HEADER + b.recordsSize
  }
  const w = new Writer(Buffer.allocUnsafe(size))
  w.string(transactionalId)
  w.int16(args.acks)
  w.int32(args.timeout)
  w.int32(topics.length)
  for (const t of topics) {
    w.string(t.topic)
    w.int32(t.batches.length)
    for (const b of t.batches) writeBatch(w, b, attributes, now, args)
  }
  if (w.offset !== size) throw new Error(`Produce request: wrote ${w.offset} bytes of ${size}`)
  return Object.assign(Object.create(Encoder.prototype) as Encoder, { buf: w.buf, offset: size })
}

/** Whether every message of `args` is one this encoder writes as kafkajs would. */
export const coversAll = (args: ProduceArgs): boolean =>
  args.topicData.every((t) => t.partitions.every((p) => p.messages.length > 0 && p.messages.every(covered)))

type Protocol = (args: ProduceArgs) => {
  request: { apiVersion: number; encode: () => Promise<Encoder> }
  response: unknown
}

let installed = false
/**
 * Makes kafkajs encode Produce requests of versions 3 to 7 with `encodeProduceBody` (idempotent). Other versions, and
 * requests with messages it does not cover, keep kafkajs' own encoder.
 */
export const installProduceEncoder = (): void => {
  if (installed) return
  installed = true
  const original = Produce.protocol
  Produce.protocol = ({ version }: { version: number }) => {
    const make = original({ version }) as Protocol
    if (version < 3 || version > 7) return make
    return (args: ProduceArgs) => {
      const built = make(args)
      if (!coversAll(args)) return built
      return { ...built, request: { ...built.request, encode: () => encodeProduceBody(args) } }
    }
  }
}
