/**
 * Event: the unit Spillway carries. The wire shape is the proof of concept's protobuf
 * `api.Event` (plus `event_id = 7`), as protobufjs' `toObject({ longs: String, defaults: true })`
 * gives it; `Event` is the decoded, validated domain value.
 */
import { Either, ParseResult, Schema } from "effect"

/** Hard caps; the programs may configure lower ones. */
export const Limits = {
  accessKey: 256,
  userId: 256,
  agentId: 256,
  /** Fluent Bit tags of Kubernetes files are often 300+ characters; 4096 leaves room (README "The ingester"). */
  tag: 4096,
  eventId: 128,
  /** The `message` field (ciphertext hex or JSON). */
  message: 4 * 1024 * 1024,
  eventsPerBatch: 10_000,
} as const

export const AccessKey = Schema.String.pipe(
  Schema.minLength(1),
  Schema.maxLength(Limits.accessKey),
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9._:-]*$/, {
    message: () => "an access key is letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
  }),
  Schema.brand("AccessKey"),
)
export type AccessKey = typeof AccessKey.Type

export const UserID = Schema.String.pipe(Schema.maxLength(Limits.userId), Schema.brand("UserID"))
export type UserID = typeof UserID.Type

export const EventId = Schema.String.pipe(Schema.maxLength(Limits.eventId), Schema.brand("EventId"))
export type EventId = typeof EventId.Type

/** Nanoseconds since the Unix epoch. */
export const EpochNanos = Schema.BigIntFromSelf.pipe(Schema.brand("EpochNanos"))
export type EpochNanos = typeof EpochNanos.Type

const NANOS = 1_000_000_000n
/**
 * Seconds above this are not seconds: the proof of concept's plugin writes Unix nanoseconds
 * into `timestamp.seconds` (and a truncated value into `nanos`). 1e11 s is the year 5138.
 */
const MAX_PLAUSIBLE_SECONDS = 100_000_000_000n

/** `google.protobuf.Timestamp` with int64 seconds as a decimal string (protobufjs `longs: String`). */
export const WireTimestamp = Schema.Struct({
  seconds: Schema.Union(Schema.String, Schema.Number),
  nanos: Schema.Number,
})
export type WireTimestamp = typeof WireTimestamp.Type

/** Pure: the nanoseconds a wire timestamp means, repairing the proof of concept's nanoseconds-in-seconds. */
export const repairTimestamp = (ts: WireTimestamp): bigint | undefined => {
  let seconds: bigint
  try {
    seconds = BigInt(ts.seconds)
  } catch {
    return undefined
  }
  if (seconds >= MAX_PLAUSIBLE_SECONDS) return seconds
  if (seconds < 0n) return undefined
  if (!Number.isInteger(ts.nanos) || ts.nanos < 0 || ts.nanos >= 1e9) return undefined
  return seconds * NANOS + BigInt(ts.nanos)
}

export const EpochNanosFromWire = Schema.transformOrFail(WireTimestamp, EpochNanos, {
  strict: true,
  decode: (ts, _, ast) => {
    const n = repairTimestamp(ts)
    return n === undefined
      ? ParseResult.fail(new ParseResult.Type(ast, ts, "timestamp is not a valid Unix time"))
      : ParseResult.succeed(EpochNanos.make(n))
  },
  encode: (n) => ParseResult.succeed({ seconds: (n / NANOS).toString(), nanos: Number(n % NANOS) }),
})

/** RFC 3339 with nanoseconds, UTC: `2021-05-18T07:24:16.100476100Z`. */
export const formatRfc3339Nano = (n: EpochNanos): string => {
  const ms = Number(n / 1_000_000n)
  const iso = new Date(ms).toISOString() // 2021-05-18T07:24:16.100Z
  const frac = (n % NANOS).toString().padStart(9, "0")
  return `${iso.slice(0, 19)}.${frac}Z`
}

export const nowNanos = (): EpochNanos => EpochNanos.make(BigInt(Date.now()) * 1_000_000n)

const fromKey = <S extends Schema.Schema.Any, K extends string>(schema: S, key: K) =>
  Schema.propertySignature(schema).pipe(Schema.fromKey(key))

/**
 * The domain event, and the one event model: its encoded side is the wire object of `api.Event` as the gRPC and
 * Kafka codecs hand it over (protobufjs `toObject({ longs: String, defaults: true })`, field names as in the
 * .proto), so one schema decodes untrusted input (validating every field, repairing timestamps, stamping a missing
 * one with the time of decoding) and encodes back for protobuf. Every other shape of an event in the code is
 * derived from it:
 *
 *   WireEvent          `Event.Encoded`, the wire object
 *   WireEventStruct    `Schema.encodedBoundSchema(Event)`: the wire object with every field rule, keys as on the
 *                      wire (the router's record check and the ingester's fast check)
 *   EventFields        `Event.Type` without the class: what `toWireEvent` maps and `checkWireEvent` gives
 *   CheckedEvent       `EventFields` plus whether the value is exactly what the client sent
 *
 * and there is one mapping each way: `toWireEvent` (model to wire; the Schema encoding, without its machinery)
 * and the `Event` decode (wire to model; `checkWireEvent` is its fast path, property-tested to agree with it).
 */
export class Event extends Schema.Class<Event>("Event")({
  timestamp: Schema.optionalWith(EpochNanosFromWire, { nullable: true, default: () => nowNanos() }),
  agentId: fromKey(Schema.String.pipe(Schema.maxLength(Limits.agentId)), "agent_id"),
  tag: Schema.String.pipe(Schema.maxLength(Limits.tag)),
  message: Schema.String.pipe(Schema.maxLength(Limits.message)),
  userId: fromKey(UserID, "UserID"),
  accessKey: fromKey(AccessKey, "AccessKey"),
  eventId: Schema.optionalWith(EventId, { default: () => EventId.make("") }).pipe(Schema.fromKey("event_id")),
}) {}
export type WireEvent = typeof Event.Encoded

/** An event's fields, as `Event` holds them, without the class (any object with these fields). */
export type EventFields = Schema.Struct.Type<typeof Event.fields>

/**
 * The wire object with the same per-field rules as `Event`, keys as on the wire, derived from `Event` (the
 * refinements of each field up to its first transformation). `checkWireEvent` checks it with `Schema.is` (about
 * 3 µs an event against about 8 µs for a full decode into the class), then builds the fields from it; anything it
 * does not accept goes through the full decode, which gives the error.
 */
export const WireEventStruct = Schema.encodedBoundSchema(Event)
/** The fields of `WireEventStruct` that say who sent an event: as a rule the same for every event of a batch. */
export const WireEventSender = WireEventStruct.pipe(Schema.pick("agent_id", "tag", "UserID", "AccessKey"))
/** The other fields of `WireEventStruct`: each event's own. */
export const WireEventOwn = WireEventStruct.pipe(Schema.omit("agent_id", "tag", "UserID", "AccessKey"))
const isWireEvent = Schema.is(WireEventStruct)
const isWireEventSender = Schema.is(WireEventSender)
const isWireEventOwn = Schema.is(WireEventOwn)
const decodeEventFull = Schema.decodeUnknownEither(Event, { errors: "first", onExcessProperty: "ignore" })

const wireTimestampOf = (n: bigint) => ({ seconds: (n / NANOS).toString(), nanos: Number(n % NANOS) })

/** The one mapping from the model to the wire: `Schema.encodeSync(Event)` without the Schema machinery. */
export const toWireEvent = (e: EventFields): WireEvent => ({
  timestamp: wireTimestampOf(e.timestamp),
  agent_id: e.agentId,
  tag: e.tag,
  message: e.message,
  UserID: e.userId,
  AccessKey: e.accessKey,
  event_id: e.eventId,
})

/** A batch as the batch RPC carries it. */
export const WireEventBatch = Schema.Struct({
  batch_id: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(128)),
  events: Schema.Array(Schema.Unknown).pipe(Schema.maxItems(Limits.eventsPerBatch)),
})
export type WireEventBatch = typeof WireEventBatch.Type

/**
 * A wire event checked against `WireEventStruct`, with its timestamp resolved as `Event` would resolve it: the
 * event's fields plus `asSent`, false when the value differs from what the client sent (a stamped or repaired
 * timestamp, or a value the fast check refused that the full decode accepted): such an event must be encoded
 * again rather than forwarded as received.
 */
export type CheckedEvent = EventFields & { readonly asSent: boolean }

/**
 * Validates an untrusted wire event without building the `Event` class: accepts and refuses exactly what
 * `Schema.decodeUnknownEither(Event)` does (refusals carry its error), with the same field values.
 */
export const checkWireEvent = (u: unknown): Either.Either<CheckedEvent, ParseResult.ParseError> =>
  (isWireEvent(u) && checkedOf(u)) || checkWireEventFull(u)

/** The checked event of a value `WireEventStruct` accepts, or undefined when its timestamp is not a valid time. */
const checkedOf = (u: typeof WireEventStruct.Type): Either.Either<CheckedEvent, never> | undefined => {
  const stamped = u.timestamp === undefined || u.timestamp === null
  const ts = stamped ? nowNanos() : repairTimestamp(u.timestamp!)
  if (ts === undefined) return undefined
  // The brands hold: `WireEventStruct` checked every refinement they stand for (its type is the encoded one).
  return Either.right({
    timestamp: EpochNanos.make(ts),
    agentId: u.agent_id,
    tag: u.tag,
    message: u.message,
    userId: u.UserID as UserID,
    accessKey: u.AccessKey as AccessKey,
    eventId: (u.event_id ?? "") as EventId,
    asSent: !stamped && BigInt(u.timestamp!.seconds) < MAX_PLAUSIBLE_SECONDS,
  })
}

/**
 * Whether `u` is `WireEventStruct`, for the events of one batch or stream: the sender fields are checked with
 * `WireEventSender` once for a run of events that repeat them (the same strings passed before), each event's own
 * fields with `WireEventOwn`; together the two are `WireEventStruct`. Returns `u`, typed, when it passes; undefined
 * otherwise (decode it for the error). Same answers as `Schema.is(WireEventStruct)` for values whose properties read
 * the same every time (plain objects, as the protobuf decoders give). `isOwn` and `isSender` default to `Schema.is` of
 * the two; the router passes the same rules compiled by `predicateOf` (src/shared/SchemaPredicate.ts, `makeWireCheck`
 * in src/route/RouterLines.ts).
 */
export const makeWireStructCheck = (
  isOwn: (u: unknown) => boolean = isWireEventOwn,
  isSender: (u: unknown) => boolean = isWireEventSender,
): ((u: unknown) => typeof WireEventStruct.Type | undefined) => {
  let sender: typeof WireEventSender.Type | undefined
  return (u) => {
    if (!isOwn(u)) return undefined
    const w = u as unknown as typeof WireEventStruct.Type
    const known =
      sender !== undefined &&
      w.AccessKey === sender.AccessKey &&
      w.UserID === sender.UserID &&
      w.agent_id === sender.agent_id &&
      w.tag === sender.tag
    if (known) return w
    if (!isSender(u)) return undefined
    sender = { agent_id: w.agent_id, tag: w.tag, UserID: w.UserID, AccessKey: w.AccessKey }
    return w
  }
}

/**
 * `checkWireEvent` for the events of one batch or stream, with `makeWireStructCheck`: the same answers, cheaper.
 * `isOwn` and `isSender` as there (the ingester passes `predicateOf`'s, src/ingest/Records.ts).
 */
export const makeWireEventChecker = (
  isOwn?: (u: unknown) => boolean,
  isSender?: (u: unknown) => boolean,
): ((u: unknown) => Either.Either<CheckedEvent, ParseResult.ParseError>) => {
  const struct = makeWireStructCheck(isOwn, isSender)
  return (u) => {
    const w = struct(u)
    const checked = w === undefined ? undefined : checkedOf(w)
    return checked ?? checkWireEventFull(u)
  }
}

const checkWireEventFull = (u: unknown): Either.Either<CheckedEvent, ParseResult.ParseError> =>
  Either.map(decodeEventFull(u), (e) => ({ ...e, asSent: false }))

const fieldRules: Readonly<Record<string, string>> = {
  timestamp: "a valid Unix time",
  seconds: "a valid Unix time",
  nanos: "a valid Unix time",
  agent_id: `a string of at most ${Limits.agentId} characters`,
  tag: `a string of at most ${Limits.tag} characters`,
  message: `a string of at most ${Limits.message} characters`,
  UserID: `a string of at most ${Limits.userId} characters`,
  AccessKey: "a valid access key",
  event_id: `a string of at most ${Limits.eventId} characters`,
}

/** Which field of a wire event is wrong, and its rule; never the value (the ingester's and router's dead letters). */
export const describeInvalidEvent = (e: ParseResult.ParseError): string => {
  const issue = ParseResult.ArrayFormatter.formatErrorSync(e)[0]
  const field = issue?.path.map(String).find((k) => Object.hasOwn(fieldRules, k))
  return field === undefined
    ? "invalid event: not an api.Event"
    : `invalid event: field ${field} must be ${fieldRules[field]}`
}
