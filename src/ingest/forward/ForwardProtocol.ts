/**
 * The Fluent Forward protocol v1 (pure): msgpack framing (msgpackr), the four event modes, the handshake messages
 * (HELO, PING, PONG) and acks. Everything received is checked here with effect/Schema before use; nothing received is
 * formatted into an error.
 *
 *   Message                  [tag, time, record, option?]
 *   Forward                  [tag, [[time, record], ...], option?]
 *   PackedForward            [tag, bin(msgpack stream of [time, record]), option?]
 *   CompressedPackedForward  as PackedForward with option.compressed = "gzip"
 *   option                   {size?, chunk?, compressed?}; a `chunk` is answered with {ack: chunk}
 *   time                     integer seconds, a float, or EventTime (ext type 0: uint32 seconds, uint32 nanos)
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto"
import * as zlib from "node:zlib"
import { Either, Schema } from "effect"
import { addExtension, Packr, Unpackr } from "msgpackr"

/** Fluent's EventTime (ext type 0, 8 bytes). */
export class EventTime {
  constructor(
    readonly seconds: number,
    readonly nanos: number,
  ) {}
}

let registered = false
/**
 * Registers ext type 0 with msgpackr (its extensions are process-wide): 8 bytes are a Fluent EventTime; any other
 * length keeps msgpackr's meaning of ext 0 (undefined), so other msgpackr users are unaffected.
 */
export const registerEventTime = (): void => {
  if (registered) return
  registered = true
  addExtension({
    type: 0,
    unpack: (data: Uint8Array) =>
      data.length === 8
        ? new EventTime(
            Buffer.from(data.buffer, data.byteOffset, 8).readUInt32BE(0),
            Buffer.from(data.buffer, data.byteOffset, 8).readUInt32BE(4),
          )
        : undefined,
  })
}
registerEventTime()

const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "bigint" })
const packr = new Packr({ useRecords: false })

export const encode = (value: unknown): Buffer => packr.pack(value)

export type Parsed =
  | { readonly _tag: "Values"; readonly values: ReadonlyArray<unknown>; readonly consumed: number }
  | { readonly _tag: "Malformed" }

/** Every complete msgpack value at the start of `buf` (an incomplete last one is left for more bytes). */
export const parseValues = (buf: Uint8Array): Parsed => {
  if (buf.length === 0) return { _tag: "Values", values: [], consumed: 0 }
  const values: Array<unknown> = []
  let consumed = 0
  try {
    unpackr.unpackMultiple(buf, (value: unknown, _start?: number, end?: number) => {
      values.push(value)
      consumed = end ?? buf.length
    })
    return { _tag: "Values", values, consumed: buf.length }
  } catch (e) {
    const incomplete = typeof e === "object" && e !== null && (e as { incomplete?: unknown }).incomplete === true
    return incomplete ? { _tag: "Values", values, consumed } : { _tag: "Malformed" }
  }
}

// ---------------------------------------------------------------------------------------------
// Event modes

const Bytes = Schema.instanceOf(Uint8Array)
const Time = Schema.Union(Schema.Number, Schema.BigIntFromSelf, Schema.instanceOf(EventTime))
const RecordMap = Schema.Record({ key: Schema.String, value: Schema.Unknown }).pipe(
  Schema.filter((r) => !Array.isArray(r) && !(r instanceof Uint8Array)),
)
const OptionMap = Schema.Struct({
  chunk: Schema.optional(Schema.String.pipe(Schema.maxLength(256))),
  compressed: Schema.optional(Schema.String.pipe(Schema.maxLength(32))),
  size: Schema.optional(Schema.Unknown),
})
const Tag = Schema.String.pipe(Schema.maxLength(1024))
const Entry = Schema.Tuple(Time, RecordMap)
const MessageMode = Schema.Tuple(Tag, Time, RecordMap, Schema.optionalElement(OptionMap))
const ForwardMode = Schema.Tuple(Tag, Schema.Array(Schema.Unknown), Schema.optionalElement(OptionMap))
const PackedMode = Schema.Tuple(Tag, Bytes, Schema.optionalElement(OptionMap))

const is = { message: Schema.is(MessageMode), forward: Schema.is(ForwardMode), packed: Schema.is(PackedMode) }
const isEntry = Schema.is(Entry)

export interface ForwardEntry {
  readonly time: bigint | undefined
  readonly record: { readonly [k: string]: unknown }
}

export interface ForwardEvents {
  readonly tag: string
  readonly entries: ReadonlyArray<ForwardEntry>
  readonly chunk: string | undefined
}

export interface EventLimits {
  readonly maxRecords: number
  /** PackedForward entries after gunzip. */
  readonly maxDecompressedBytes: number
}

const NANOS = 1_000_000_000n

/** Nanoseconds of a Forward time, or undefined when it is not a plausible time. */
export const timeNanos = (t: number | bigint | EventTime): bigint | undefined => {
  if (t instanceof EventTime) return BigInt(t.seconds) * NANOS + BigInt(Math.min(t.nanos, 999_999_999))
  if (typeof t === "bigint") return t >= 0n && t < 2n ** 34n ? t * NANOS : undefined
  if (!Number.isFinite(t) || t < 0 || t >= 2 ** 34) return undefined
  const s = Math.floor(t)
  return BigInt(s) * NANOS + BigInt(Math.round((t - s) * 1e9))
}

const entriesOf = (raw: ReadonlyArray<unknown>, max: number): Either.Either<Array<ForwardEntry>, string> => {
  if (raw.length > max) return Either.left(`a message may hold at most ${max} entries`)
  const out: Array<ForwardEntry> = []
  for (const e of raw) {
    if (!isEntry(e)) return Either.left("an entry is not [time, record-map]")
    out.push({ time: timeNanos(e[0]), record: e[1] })
  }
  return Either.right(out)
}

/** The events of a message in one of the four modes; Left is a fixed reason. */
export const decodeEvents = (m: unknown, limits: EventLimits): Either.Either<ForwardEvents, string> => {
  if (is.message(m))
    return Either.right({ tag: m[0], entries: [{ time: timeNanos(m[1]), record: m[2] }], chunk: m[3]?.chunk })
  if (is.forward(m))
    return Either.map(entriesOf(m[1], limits.maxRecords), (entries) => ({ tag: m[0], entries, chunk: m[2]?.chunk }))
  if (!is.packed(m)) return Either.left("not a Forward protocol message")
  const option = m[2]
  let packed: Uint8Array = m[1]
  if (option?.compressed !== undefined) {
    if (option.compressed !== "gzip") return Either.left("unsupported compression (only gzip)")
    try {
      packed = zlib.gunzipSync(packed, { maxOutputLength: limits.maxDecompressedBytes })
    } catch (e) {
      return Either.left(
        e instanceof RangeError
          ? `the entries exceed ${limits.maxDecompressedBytes} bytes uncompressed`
          : "corrupt gzip entries",
      )
    }
  }
  const parsed = parseValues(packed)
  if (parsed._tag === "Malformed" || parsed.consumed !== packed.length) return Either.left("corrupt packed entries")
  return Either.map(entriesOf(parsed.values, limits.maxRecords), (entries) => ({
    tag: m[0],
    entries,
    chunk: option?.chunk,
  }))
}

export const ack = (chunk: string): Buffer => encode({ ack: chunk })

// ---------------------------------------------------------------------------------------------
// Handshake

export interface Handshake {
  readonly nonce: Buffer
  readonly authSalt: Buffer
}

export const newHandshake = (): Handshake => ({ nonce: randomBytes(16), authSalt: randomBytes(16) })

export const helo = (h: Handshake): Buffer => encode(["HELO", { nonce: h.nonce, auth: h.authSalt, keepalive: true }])

const Text = Schema.Union(Schema.String.pipe(Schema.maxLength(1024)), Bytes)
const PingMessage = Schema.Tuple(
  Schema.Literal("PING"),
  Schema.String.pipe(Schema.maxLength(1024)),
  Text,
  Schema.String.pipe(Schema.maxLength(256)),
  Schema.String.pipe(Schema.maxLength(256)),
  Schema.String.pipe(Schema.maxLength(256)),
)
export const isPing = Schema.is(PingMessage)
export type Ping = typeof PingMessage.Type

const sha512hex = (...parts: ReadonlyArray<string | Uint8Array>): string => {
  const h = createHash("sha512")
  for (const p of parts) h.update(p)
  return h.digest("hex")
}

const sameHex = (a: string, b: string) =>
  a.length === b.length && timingSafeEqual(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"))

/** Whether the PING proves the shared key: sha512_hex(shared_key_salt + client_hostname + nonce + shared_key). */
export const sharedKeyMatches = (ping: Ping, h: Handshake, sharedKey: string): boolean =>
  sameHex(ping[3].toLowerCase(), sha512hex(ping[2], ping[1], h.nonce, sharedKey))

/** Whether the PING proves the password: sha512_hex(auth_salt + username + password). */
export const passwordMatches = (ping: Ping, h: Handshake, password: string): boolean =>
  sameHex(ping[5].toLowerCase(), sha512hex(h.authSalt, ping[4], password))

/** ["PONG", ok, reason, server_hostname, sha512_hex(shared_key_salt + server_hostname + nonce + shared_key)] */
export const pong = (
  ping: Ping,
  h: Handshake,
  ok: boolean,
  reason: string,
  serverHostname: string,
  sharedKey: string,
) => encode(["PONG", ok, reason, serverHostname, ok ? sha512hex(ping[2], serverHostname, h.nonce, sharedKey) : ""])
