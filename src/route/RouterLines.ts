/**
 * The router's per-record work, pure and synchronous (no Effect per record): decode a record value
 * with effect/Schema, decrypt its message, format its NDJSON line. `prepareRecords` does it for a
 * batch and says, per record, which tenant its line goes to or why it is a dead letter; Router.ts
 * groups the lines by target and publishes the dead letters.
 */
import { Either, type ParseResult, Schema } from "effect"
import { CryptoError } from "../domain/Errors.js"
import {
  type AccessKey,
  describeInvalidEvent,
  EpochNanos,
  type EventFields,
  formatRfc3339Nano,
  makeWireStructCheck,
  nowNanos,
  repairTimestamp,
  type UserID,
  WireEventOwn,
  WireEventSender,
  WireEventStruct,
  type WireTimestamp,
} from "../domain/Event.js"
import { type Key, openHex } from "../shared/Crypto.js"
import { asBuffer, type DeadLetterReason } from "../shared/DeadLetter.js"
import { predicateOf } from "../shared/SchemaPredicate.js"
import { decodeEvent } from "../wire/EventFrames.js"

/**
 * What the router checks of a record: the domain's `WireEventStruct` (src/domain/Event.ts), the wire object of
 * `api.Event` with every field rule of `Event`, as a plain Struct: no class instance, no renaming
 * transformation, no BigInt timestamp (about 2.6 µs a record instead of 8). The timestamp is checked and
 * formatted by `timestampOf`, with `repairTimestamp`'s rules.
 */
const decodeWire = Schema.decodeUnknownEither(WireEventStruct, { errors: "first" })
type ParseError = ParseResult.ParseError
type WireEventChecked = typeof WireEventStruct.Type

const isWireOwn = predicateOf(WireEventOwn)
const isWireSender = predicateOf(WireEventSender)

/**
 * `decodeWire` for the records of one batch, cheaper: the sender fields (`WireEventSender`) are checked once per run
 * of records that repeat them and each record's own fields (`WireEventOwn`) every time, so every field rule still
 * holds for every record: `makeWireStructCheck` (src/domain/Event.ts), as the ingester uses it, with both checks
 * `predicateOf` (src/shared/SchemaPredicate.ts): `Schema.is`'s answers from the schemas' own filters, without the
 * parser's objects per record. Only a value refused there goes through `decodeWire`, for its error. The checks only
 * read the named fields of the plain object the decoders give, so passing means the decode would give those values.
 */
export const makeWireCheck = (): ((u: unknown) => Either.Either<WireEventChecked, ParseError>) => {
  const check = makeWireStructCheck(isWireOwn, isWireSender)
  return (u) => {
    const w = check(u)
    return w === undefined ? decodeWire(u) : Either.right(w)
  }
}

/**
 * A decoded record as a line shows it: the event's fields (`EventFields`), the timestamp already in RFC 3339 with
 * nanoseconds (UTC), `eventId` empty when the event has none.
 */
export type RoutedEvent = Omit<EventFields, "timestamp" | "eventId"> & {
  readonly timestamp: string
  readonly eventId: string
}

/** Seconds below this (1e11, as in `repairTimestamp`) with valid nanos take the exact number fast path. */
const DIGITS = /^\d{1,11}$/
let lastSecond = -1
let lastPrefix = ""

/**
 * Pure: the RFC 3339 form of a wire timestamp, exactly `formatRfc3339Nano(repairTimestamp(ts))`
 * (nanoseconds in `seconds` repaired, negative or malformed times refused), or undefined. Plain
 * seconds and nanos are formatted without BigInt, the date part cached per second; anything else
 * goes through the domain's functions.
 */
export const timestampOf = (ts: WireTimestamp | null | undefined): string | undefined => {
  if (ts === null || ts === undefined) return formatRfc3339Nano(nowNanos())
  const { seconds, nanos } = ts
  const s = typeof seconds === "number" ? seconds : DIGITS.test(seconds) ? Number(seconds) : Number.NaN
  if (Number.isSafeInteger(s) && s >= 0 && s < 1e11 && Number.isInteger(nanos) && nanos >= 0 && nanos < 1e9) {
    if (s !== lastSecond) {
      lastPrefix = new Date(s * 1000).toISOString().slice(0, 19)
      lastSecond = s
    }
    return `${lastPrefix}.${String(nanos).padStart(9, "0")}Z`
  }
  const n = repairTimestamp(ts)
  return n === undefined ? undefined : formatRfc3339Nano(EpochNanos.make(n))
}

/**
 * Decodes a record value: the protobuf encoding of `api.Event` (DESIGN.md), or, when it starts
 * with `{`, its JSON object form. Left is why it cannot be decoded.
 */
export const decodeRecord = (
  value: Uint8Array | null,
  check: (u: unknown) => Either.Either<WireEventChecked, ParseError> = decodeWire,
): Either.Either<RoutedEvent, string> => {
  if (value === null) return Either.left("the record has no value")
  const bytes = asBuffer(value)
  let wire: unknown
  try {
    wire = bytes[0] === 0x7b ? JSON.parse(bytes.toString("utf8")) : decodeEvent(bytes)
  } catch {
    // Neither the parser's message nor the bytes: both may quote the record (the JSON parser does).
    return Either.left(value[0] === 0x7b ? "not an api.Event: not valid JSON" : "not an api.Event: not valid protobuf")
  }
  const decoded = check(wire)
  if (Either.isLeft(decoded)) return Either.left(describeInvalidEvent(decoded.left))
  const w = decoded.right
  const timestamp = timestampOf(w.timestamp)
  if (timestamp === undefined) return Either.left("timestamp is not a valid Unix time")
  return Either.right({
    timestamp,
    agentId: w.agent_id,
    tag: w.tag,
    message: w.message,
    // The brands hold: `WireEventStruct` checked their refinements (its type is the encoded one).
    userId: w.UserID as UserID,
    accessKey: w.AccessKey as AccessKey,
    eventId: w.event_id ?? "",
  })
}

/**
 * The NDJSON line of an event (no newline). `message` is the decrypted object, or the string as
 * carried. One `JSON.stringify` of the line's object, these keys in this order (`event_id` only when
 * the event has one): one flat string per line, no rope of parts (fewer objects for the collector
 * to copy while a batch is in flight).
 */
export const formatLine = (event: RoutedEvent, message: unknown): string =>
  event.eventId === ""
    ? JSON.stringify({
        timestamp: event.timestamp,
        agent_id: event.agentId,
        tag: event.tag,
        user_id: event.userId,
        access_key: event.accessKey,
        message,
      })
    : JSON.stringify({
        timestamp: event.timestamp,
        agent_id: event.agentId,
        tag: event.tag,
        user_id: event.userId,
        access_key: event.accessKey,
        event_id: event.eventId,
        message,
      })

/**
 * The NDJSON line of an event whose message is `json`: JSON text that `JSON.parse` accepted and that holds no line
 * break (CR or LF, which JSON allows only between tokens). The text goes into the line as it is, not parsed and
 * formatted again: the same keys in the same order as `formatLine`, the message as its sender wrote it (an integer
 * beyond 2^53 keeps its digits, which a parse would round). The route row: 44,466 against 43,063 events/s, 2.64
 * against 2.71 CPU-s per 100k (medians of eight interleaved pairs, docs/benchmarks.md, "Round 2 session 15").
 */
export const formatLineWithJson = (event: RoutedEvent, json: string): string => {
  const head = formatLine(event, 0)
  // `head` ends with `"message":0}`: one JSON.stringify for the fields (a template of one per field cost more).
  return `${head.slice(0, -2)}${json}}`
}

/** Pure: the plaintext of a message (the message itself without a key), or why it is refused (undecryptable). */
const openText = (key: Key, message: string): Either.Either<string, string> => {
  try {
    return Either.right(key.bytes === undefined ? message : openHex(key.bytes, message).toString("utf8"))
  } catch (e) {
    return Either.left(`message rejected: ${e instanceof CryptoError ? e.reason : "auth_failed"}`)
  }
}

// ---------------------------------------------------------------------------------------------
// A run of records

/**
 * What a tenant's events need: its key bytes (decrypting), `null` when it has no key (messages
 * are plain) or when not decrypting, or why its key is unusable.
 */
export type KeyEntry = Uint8Array | null | string

/** Dead-letter reasons as codes (0: not a dead letter). */
export const reasonCodes: ReadonlyArray<DeadLetterReason | ""> = ["", "undecodable", "unknown_tenant", "undecryptable"]

/** The outcome of a batch of records, per record, in order. */
export interface PreparedRecords {
  /** 0 when the record has a line, else the index of its dead-letter reason in `reasonCodes`. */
  readonly reasons: Uint8Array
  /** Per record: the index in `tenants` of the tenant its line goes to (when it has one). */
  readonly tenantIndex: Int32Array
  /** The access keys of the tenants of the run. */
  readonly tenants: Array<string>
  /** Per record: its line, or why it is a dead letter. */
  readonly texts: Array<string>
}

/** Why the last record `prepareOne` refused is a dead letter, and the tenant of the last one it took (kept aside so
 * that the hot path allocates no object per record). */
let lastDetail = ""
let lastAccessKey = ""

/** One record: its line (its tenant in `lastAccessKey`), or the code of its dead-letter reason (the detail in
 * `lastDetail`). May throw: the caller makes that the record's dead letter. */
const prepareOne = (
  value: Uint8Array | null,
  decrypt: boolean,
  keys: ReadonlyMap<string, KeyEntry>,
  check: (u: unknown) => Either.Either<WireEventChecked, ParseError>,
): number | string => {
  const decoded = decodeRecord(value, check)
  if (Either.isLeft(decoded)) {
    lastDetail = decoded.left
    return 1
  }
  const event = decoded.right
  const key = keys.get(event.accessKey)
  if (key === undefined) {
    lastDetail = `no tenant has access key ${JSON.stringify(event.accessKey)}`
    return 2
  }
  if (!decrypt) {
    lastAccessKey = event.accessKey
    return formatLine(event, event.message)
  }
  if (typeof key === "string") {
    lastDetail = key
    return 3
  }
  const plain = openText({ bytes: key ?? undefined }, event.message)
  if (Either.isLeft(plain)) {
    lastDetail = plain.left
    return 3
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(plain.right)
  } catch {
    lastDetail = "message rejected: not_json"
    return 3
  }
  lastAccessKey = event.accessKey
  // As it is when it holds no line break, else parsed and formatted again.
  return plain.right.includes("\n") || plain.right.includes("\r")
    ? formatLine(event, parsed)
    : formatLineWithJson(event, plain.right)
}

/**
 * Pure: decodes, checks the tenant of, decrypts (when `decrypt`) and formats each value. `keys`
 * has an entry for every tenant (its access key); a record of any other access key is a dead letter.
 */
export const prepareRecords = (
  values: ReadonlyArray<Uint8Array | null>,
  decrypt: boolean,
  keys: ReadonlyMap<string, KeyEntry>,
): PreparedRecords => {
  const n = values.length
  const reasons = new Uint8Array(n)
  const tenantIndex = new Int32Array(n)
  const tenants: Array<string> = []
  const indexOf = new Map<string, number>()
  const texts: Array<string> = new Array(n)
  const check = makeWireCheck()
  const tenantOf = (accessKey: string): number => {
    let t = indexOf.get(accessKey)
    if (t === undefined) {
      t = tenants.push(accessKey) - 1
      indexOf.set(accessKey, t)
    }
    return t
  }
  for (let i = 0; i < n; i++) {
    // Whatever goes wrong with one record (a value no check foresaw) is that record's dead letter, not the batch's.
    try {
      const outcome = prepareOne(values[i]!, decrypt, keys, check)
      if (typeof outcome === "number") {
        reasons[i] = outcome
        texts[i] = lastDetail
      } else {
        tenantIndex[i] = tenantOf(lastAccessKey)
        texts[i] = outcome
      }
    } catch (e) {
      reasons[i] = 1
      texts[i] = `cannot be formatted: ${e instanceof Error ? e.name : "error"}`
    }
  }
  return { reasons, tenantIndex, tenants, texts }
}
