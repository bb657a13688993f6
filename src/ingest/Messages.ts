/**
 * Messages as the ingester's gRPC server sees them. The event RPCs' messages stay undecoded (`Raw`: the size and the
 * bytes grpc-js received) until the handler has taken their bytes from the budget, so what waits for the budget is
 * only the bytes, never their decoded objects; `decodeEvent`/`decodeBatch` then give the decoded object (EventFrames,
 * still untrusted), or that it is malformed, with no text taken from the bytes. ExchangeConfig's small request is
 * decoded by grpc-js. `messages` turns a grpc-js request stream into a pull-based Stream that reads nothing ahead: a
 * message is received only when the handler asks for it (`requestNext`), i.e. after the previous one is in the
 * budget, so a stream
 * holds at most one message outside the budget (plus small ones grpc-js split off the same HTTP/2 frame), and a slow
 * Kafka stops the reading (HTTP/2 flow control holds the client back).
 */
import type { Readable } from "node:stream"
import type * as grpc from "@grpc/grpc-js"
import { Effect, Option, Stream } from "effect"
import { InvalidEvent } from "../domain/Errors.js"
import {
  type BatchFrames,
  decodeBatchFrames,
  decodeEventFrame,
  type EventFrame,
  MalformedBatch,
} from "../wire/EventFrames.js"
import { EventServiceDefinition } from "../wire/Wire.js"

export type Incoming =
  | { readonly size: number; readonly value: unknown; readonly malformed?: undefined }
  | { readonly size: number; readonly malformed: true; readonly batch_id: string }

/** A message of an event RPC as received: not decoded yet. */
export interface Raw {
  readonly size: number
  readonly bytes: Buffer
}

const incoming = <Res>(m: grpc.MethodDefinition<unknown, Res>): grpc.MethodDefinition<Incoming, Res> => ({
  ...m,
  requestSerialize: () => {
    throw new Error("server-side definition")
  },
  requestDeserialize: (bytes: Buffer): Incoming => {
    try {
      return { size: bytes.length, value: m.requestDeserialize(bytes) }
    } catch {
      return { size: bytes.length, malformed: true, batch_id: "" }
    }
  },
})

const raw = <Res>(m: grpc.MethodDefinition<unknown, Res>): grpc.MethodDefinition<Raw, Res> => ({
  ...m,
  requestSerialize: () => {
    throw new Error("server-side definition")
  },
  requestDeserialize: (bytes: Buffer): Raw => ({ size: bytes.length, bytes }),
})

/** A SendEvent message's event, or undefined when the bytes are not an `api.Event`. */
export const decodeEvent = (msg: Raw): EventFrame | undefined => {
  try {
    return decodeEventFrame(msg.bytes)
  } catch {
    return undefined
  }
}

/** A SendEventBatches message's batch (at most `maxEvents` events decoded), or Malformed with the batch_id read. */
export const decodeBatch = (msg: Raw, maxEvents?: number): BatchFrames | MalformedBatch => {
  try {
    return decodeBatchFrames(msg.bytes, maxEvents)
  } catch (e) {
    return e instanceof MalformedBatch ? e : new MalformedBatch("")
  }
}

/** The batch_id of a batch message without decoding its events ("" if none can be read). */
export const batchIdOf = (msg: Raw): string => {
  const b = decodeBatch(msg, 0)
  return b.batch_id.length <= 128 ? b.batch_id : ""
}

/** `api.EventService` as the server decodes it. */
export const ServerDefinition = {
  SendEvent: raw(EventServiceDefinition.SendEvent),
  ExchangeConfig: incoming(EventServiceDefinition.ExchangeConfig),
  SendEventBatches: raw(EventServiceDefinition.SendEventBatches),
} satisfies grpc.ServiceDefinition

export const malformed = () => new InvalidEvent({ detail: "malformed protobuf message" })

/** The next message (None at the client's half-close); a message already buffered is taken at once. */
export const nextMessage = (r: Readable): Effect.Effect<Option.Option<Raw>, InvalidEvent> =>
  Effect.suspend(() => {
    if (!r.readableEnded) {
      const v = r.read() as Raw | null
      if (v !== null) return Effect.succeedSome(v)
    }
    return awaitMessage(r)
  })

const awaitMessage = (r: Readable): Effect.Effect<Option.Option<Raw>, InvalidEvent> =>
  Effect.async<Option.Option<Raw>, InvalidEvent>((resume) => {
    let done = false
    const finish = (e: Effect.Effect<Option.Option<Raw>, InvalidEvent>) => {
      if (done) return
      done = true
      off()
      resume(e)
    }
    const onReadable = () => {
      const v = r.read() as Raw | null
      if (v !== null) finish(Effect.succeedSome(v))
    }
    const onEnd = () => finish(Effect.succeedNone)
    const onError = () => finish(Effect.fail(new InvalidEvent({ detail: "the request stream failed" })))
    const onClose = () =>
      finish(r.readableEnded ? Effect.succeedNone : Effect.fail(new InvalidEvent({ detail: "the stream was closed" })))
    const off = () => {
      r.off("readable", onReadable)
      r.off("end", onEnd)
      r.off("error", onError)
      r.off("close", onClose)
    }
    r.on("readable", onReadable)
    r.on("end", onEnd)
    r.on("error", onError)
    r.on("close", onClose)
    if (r.readableEnded) onEnd()
    else onReadable()
    return Effect.sync(off)
  })

/**
 * grpc-js reads 16 messages ahead by default (each received whole, up to the message size limit, whatever the
 * budget); with a high-water mark of 0 it receives a message only when `read()` asks for one.
 */
export const readNothingAhead = (r: Readable) => {
  const state = (r as unknown as { _readableState?: { highWaterMark?: number } })._readableState
  if (state !== undefined && typeof state.highWaterMark === "number") state.highWaterMark = 0
}

/**
 * Asks grpc-js for the next message without waiting for it (when none is buffered): called once the current
 * message is in the budget, so the next one is received while the current one is decoded and sent, and still at most
 * one message per stream is outside the budget.
 */
export const requestNext = (r: Readable): void => {
  if (!r.readableEnded && !r.destroyed && r.readableLength === 0) r.read(0)
}

/** The messages of a request stream, pulled one at a time, ending at the client's half-close. */
export const messages = (r: Readable): Stream.Stream<Raw, InvalidEvent> =>
  Stream.suspend(() => {
    readNothingAhead(r)
    return Stream.repeatEffectOption(
      nextMessage(r).pipe(
        Effect.mapError(Option.some),
        Effect.flatMap(Option.match({ onNone: () => Effect.fail(Option.none()), onSome: Effect.succeed })),
      ),
    )
  })
