/**
 * From the untrusted events of one message to Kafka records, in one synchronous pass (no effect per event):
 *
 * - an event whose `AccessKey` is not the token's refuses the whole call (PermissionDenied, nothing is written);
 * - an event that can never be accepted (fields outside their limits, larger than the event limit) becomes a dead
 *   letter for `<topic>-dlq` with its reason, so the rest of the stream or batch is acknowledged and no client
 *   resends a chunk that can never succeed;
 * - every accepted event carries its tenant's `UserID` (from the tenants file; whatever the client sent is
 *   overwritten), and its record key is the token's access key.
 *
 * An accepted event's bytes are forwarded as received when they hold exactly the validated values (clean, timestamp
 * neither stamped nor repaired, UserID already the tenant's); else the validated event is encoded again. No detail
 * ever holds a received value: field names come from the schema, limits from the configuration.
 */
import { Either } from "effect"
import type { Claims } from "../domain/Claims.js"
import { PermissionDenied } from "../domain/Errors.js"
import {
  type CheckedEvent,
  describeInvalidEvent,
  makeWireEventChecker,
  toWireEvent,
  WireEventOwn,
  WireEventSender,
} from "../domain/Event.js"
import type { Tenant } from "../domain/Tenant.js"
import { predicateOf } from "../shared/SchemaPredicate.js"
import type { EventFrame } from "../wire/EventFrames.js"
import { EventCodec } from "../wire/Wire.js"
import type { IngestDeadLetterReason, SinkRecord } from "./SinkPort.js"

/** Who sends: the verified claims and the tenant of their access key. */
export interface Caller {
  readonly claims: Claims
  readonly tenant: Tenant
}

export interface Accepted {
  /** Kafka records in the order of the events: accepted events and dead letters. */
  readonly records: ReadonlyArray<SinkRecord>
  /** Per dead-letter reason, how many. */
  readonly deadLetters: ReadonlyArray<IngestDeadLetterReason>
  /** The accepted events, kept only to print them (--print-events). */
  readonly checked: ReadonlyArray<CheckedEvent> | undefined
}

const isWireOwn = predicateOf(WireEventOwn)
const isWireSender = predicateOf(WireEventSender)

/**
 * The check of one stream's or batch's events: `makeWireEventChecker` with the rules of `WireEventOwn` and
 * `WireEventSender` compiled by `predicateOf` (src/shared/SchemaPredicate.ts), as the router checks them, rather
 * than `Schema.is` (5 % of the ingester's CPU on SendEvent). The same answers; only an event they refuse is decoded,
 * for its error.
 */
export const makeEventChecker = () => makeWireEventChecker(isWireOwn, isWireSender)

/** A dead letter keeps at most this much of the event's bytes (Kafka refuses records over about 1 MB). */
export const DEAD_LETTER_MAX_VALUE = 64 * 1024

const eventSize = (e: CheckedEvent) =>
  Buffer.byteLength(e.message) + e.tag.length + e.agentId.length + e.userId.length + e.accessKey.length + 64

const deadLetter = (key: string, frame: EventFrame, reason: IngestDeadLetterReason, detail: string): SinkRecord => ({
  key,
  value: frame.bytes.length <= DEAD_LETTER_MAX_VALUE ? frame.bytes : frame.bytes.subarray(0, DEAD_LETTER_MAX_VALUE),
  deadLetter: { reason, detail },
})

const tooLarge = (size: number, max: number) => `an event of about ${size} bytes exceeds the limit of ${max} bytes`

/** The records of one message's events (see the module comment); Left when one is another tenant's. */
export const toRecords = (
  frames: ReadonlyArray<EventFrame>,
  caller: Caller,
  check: ReturnType<typeof makeEventChecker>,
  options: { readonly maxEventBytes: number; readonly keepChecked: boolean },
): Either.Either<Accepted, PermissionDenied> => {
  const key = caller.claims.sub
  const userId = caller.tenant.UserID
  const records: Array<SinkRecord> = new Array(frames.length)
  const deadLetters: Array<IngestDeadLetterReason> = []
  const checked: Array<CheckedEvent> | undefined = options.keepChecked ? [] : undefined
  for (let i = 0; i < frames.length; i++) {
    const frame = frames[i]!
    if ((frame.value as { readonly AccessKey?: unknown }).AccessKey !== key)
      return Either.left(new PermissionDenied({ detail: "an event carries an access key other than the token's" }))
    if (frame.bytes.length > options.maxEventBytes) {
      records[i] = deadLetter(key, frame, "event_too_large", tooLarge(frame.bytes.length, options.maxEventBytes))
      deadLetters.push("event_too_large")
      continue
    }
    const decoded = check(frame.value)
    if (Either.isLeft(decoded)) {
      records[i] = deadLetter(key, frame, "invalid_event", describeInvalidEvent(decoded.left))
      deadLetters.push("invalid_event")
      continue
    }
    const sent = decoded.right
    const event = sent.userId === userId ? sent : { ...sent, userId, asSent: false }
    const size = eventSize(event)
    if (size > options.maxEventBytes) {
      records[i] = deadLetter(key, frame, "event_too_large", tooLarge(size, options.maxEventBytes))
      deadLetters.push("event_too_large")
      continue
    }
    records[i] = {
      key,
      value: frame.clean && event.asSent ? frame.bytes : Buffer.from(EventCodec.encode(toWireEvent(event))),
    }
    checked?.push(event)
  }
  return Either.right({ records, deadLetters, checked })
}
