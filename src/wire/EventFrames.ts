/**
 * The ingester's request decoders and the router's record decoder: `api.Event` and `api.EventBatch` bytes into the
 * wire objects `EventCodec.decode` gives (protobufjs `toObject({ longs: String, defaults: true })`), each event with
 * its own bytes. Nothing here validates: the objects are still untrusted and go through effect/Schema
 * (`checkWireEvent` in the ingester, the router's `makeWireCheck`).
 *
 * An event's bytes can be forwarded to Kafka as they came, instead of encoding the validated event again, when they
 * are `clean`: only the fields of `api.Event` (and of its Timestamp), each at most once, varints minimal, strings
 * valid UTF-8 (no U+FFFD once decoded). Every protobuf decoder then reads from them exactly the values the ingester
 * validated, and they are no longer than protobufjs' encoding of those values (which writes every field). Anything
 * else (unknown, repeated or padded fields, a U+FFFD) is decoded by protobufjs itself and marked not clean, so it
 * is encoded again.
 */
import protobuf from "protobufjs"
import { Limits } from "../domain/Event.js"
import { EventCodec } from "./Protobuf.js"

export interface EventFrame {
  /** The `api.Event` bytes as received (a view into the gRPC message). */
  readonly bytes: Buffer
  /** The wire object, as `EventCodec.decode(bytes)` gives it. */
  readonly value: unknown
  /** The bytes hold exactly `value` (see the module comment). */
  readonly clean: boolean
}

export interface BatchFrames {
  readonly batch_id: string
  /** The events, or none when there are more than the decoder's limit (see `eventCount`). */
  readonly events: ReadonlyArray<EventFrame>
  /** How many events the message holds. */
  readonly eventCount: number
}

const LEN = 2
const VARINT = 0

/** A cursor over bytes; reads return -1 (or undefined) past the end or on an over-long or not minimal varint. */
interface Cursor {
  pos: number
}

/** A varint of at most 32 bits (tags, lengths), or -1. */
const uint32 = (b: Buffer, c: Cursor, end: number): number => {
  let v = 0
  for (let shift = 0; shift < 35; shift += 7) {
    if (c.pos >= end) return -1
    const byte = b[c.pos++]!
    v += (byte & 0x7f) * 2 ** shift
    if (byte < 0x80) return v <= 0xffffffff && (byte !== 0 || shift === 0) ? v : -1
  }
  return -1
}

/** A varint as a signed 64-bit integer's decimal string (protobufjs int64 with longs: String), or undefined. */
const int64String = (b: Buffer, c: Cursor, end: number): string | undefined => {
  const start = c.pos
  let v = 0
  for (let shift = 0; shift < 70; shift += 7) {
    if (c.pos >= end) return undefined
    const byte = b[c.pos++]!
    if (shift < 49) v += (byte & 0x7f) * 2 ** shift
    if (byte < 0x80) {
      if (byte === 0 && shift > 0) return undefined // not minimal
      if (shift < 49) return String(v) // at most 7 bytes: below 2^49, exact
      let big = 0n
      for (let i = c.pos - 1; i >= start; i--) big = (big << 7n) | BigInt(b[i]! & 0x7f)
      return BigInt.asIntN(64, big).toString()
    }
  }
  return undefined
}

/** A varint as protobufjs int32 reads it (the low 32 bits, signed), or undefined. */
const int32 = (b: Buffer, c: Cursor, end: number): number | undefined => {
  let lo = 0
  for (let shift = 0; shift < 70; shift += 7) {
    if (c.pos >= end) return undefined
    const byte = b[c.pos++]!
    if (shift < 32) lo |= (byte & 0x7f) << shift
    if (byte < 0x80) return byte === 0 && shift > 0 ? undefined : lo | 0
  }
  return undefined
}

/** The Timestamp of [c.pos, end), or undefined when it is not clean. */
const readTimestamp = (b: Buffer, c: Cursor, end: number): { seconds: string; nanos: number } | undefined => {
  let seconds: string | undefined = "0"
  let nanos: number | undefined = 0
  let seen = 0
  while (c.pos < end) {
    const t = uint32(b, c, end)
    const field = t >>> 3
    if (t < 0 || (field !== 1 && field !== 2) || (t & 7) !== VARINT || (seen & field) !== 0) return undefined
    seen |= field
    if (field === 1) seconds = int64String(b, c, end)
    else nanos = int32(b, c, end)
    if (seconds === undefined || nanos === undefined) return undefined
  }
  return { seconds, nanos }
}

/** The clean reading of an `api.Event`, or undefined (not clean, or malformed). */
const readClean = (b: Buffer): object | undefined => {
  const c: Cursor = { pos: 0 }
  const len = b.length
  let timestamp: { seconds: string; nanos: number } | null = null
  let agent_id = ""
  let tag = ""
  let message = ""
  let UserID = ""
  let AccessKey = ""
  let event_id = ""
  let seen = 0
  while (c.pos < len) {
    const t = uint32(b, c, len)
    const field = t >>> 3
    if (t < 0 || field < 1 || field > 7 || (t & 7) !== LEN || (seen & (1 << field)) !== 0) return undefined
    seen |= 1 << field
    const n = uint32(b, c, len)
    const start = c.pos
    const end = start + n
    if (n < 0 || end > len) return undefined
    if (field === 1) {
      const ts = readTimestamp(b, c, end)
      if (ts === undefined) return undefined
      timestamp = ts
    } else {
      // Decoding replaces every invalid UTF-8 sequence with U+FFFD: a string holding one is not known to be clean.
      const str = b.toString("utf8", start, end)
      if (str.includes("\uFFFD")) return undefined
      if (field === 2) agent_id = str
      else if (field === 3) tag = str
      else if (field === 4) message = str
      else if (field === 5) UserID = str
      else if (field === 6) AccessKey = str
      else event_id = str
      c.pos = end
    }
  }
  return { timestamp, agent_id, tag, message, UserID, AccessKey, event_id }
}

/** The clean reading of the bytes, or undefined: not clean, malformed, or a throw no check foresaw. */
const cleanReading = (b: Buffer): object | undefined => {
  try {
    return readClean(b)
  } catch {
    return undefined
  }
}

/**
 * The wire object of `api.Event` bytes, exactly as `EventCodec.decode` gives it: the clean reading when the bytes are
 * clean, else protobufjs' (which throws on malformed bytes). The router decodes each record value so: a clean
 * reading makes about a third fewer bytes of objects than protobufjs' `decode` and `toObject`, which build the
 * message twice, read its strings byte by byte, and make the seconds a string through Long arithmetic.
 */
export const decodeEvent = (bytes: Buffer): unknown => cleanReading(bytes) ?? EventCodec.decode(bytes)

/** Throws on malformed bytes (as `EventCodec.decode` does). */
export const decodeEventFrame = (bytes: Buffer): EventFrame => {
  const value = cleanReading(bytes)
  return value === undefined ? { bytes, value: EventCodec.decode(bytes), clean: false } : { bytes, value, clean: true }
}

/** A batch that cannot be decoded; `batch_id` is the one read before the fault ("" if none). Says nothing of the bytes. */
export class MalformedBatch extends Error {
  constructor(readonly batch_id: string) {
    super("malformed protobuf message")
  }
}

/**
 * `api.EventBatch`: batch_id and the events (protobufjs semantics: the last batch_id wins, unknown fields skipped).
 * At most `maxEvents` events are decoded: past that the rest are only counted (`eventCount`) and `events` is empty,
 * so a message of millions of empty events costs one scan and no objects. Throws MalformedBatch on malformed bytes.
 */
export const decodeBatchFrames = (bytes: Buffer, maxEvents: number = Limits.eventsPerBatch): BatchFrames => {
  const r = protobuf.Reader.create(bytes)
  let batch_id = ""
  let events: Array<EventFrame> = []
  let eventCount = 0
  try {
    while (r.pos < r.len) {
      const t = r.uint32()
      const field = t >>> 3
      const wireType = t & 7
      if (field === 1 && wireType === LEN) batch_id = r.string()
      else if (field === 2 && wireType === LEN) {
        const len = r.uint32()
        const start = r.pos
        const end = start + len
        if (end > r.len) throw new RangeError("index out of range")
        eventCount++
        if (eventCount <= maxEvents) events.push(decodeEventFrame(bytes.subarray(start, end)))
        else if (events.length > 0) events = []
        r.pos = end
      } else r.skipType(wireType)
    }
  } catch {
    throw new MalformedBatch(batch_id.length <= 128 ? batch_id : "")
  }
  return { batch_id, events, eventCount }
}
