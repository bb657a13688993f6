/**
 * Messages as the ingester's gRPC server sees them: the size of each and its decoded object (EventFrames for the
 * event RPCs, still untrusted), or that it is malformed, with no text taken from the bytes. `messages` turns a
 * grpc-js request stream into a pull-based Stream: one message is read at a time (the budget decides what is in
 * memory), so a slow Kafka stops the reading and HTTP/2 flow control holds the client back.
 */
import type { Readable } from "node:stream"
import type * as grpc from "@grpc/grpc-js"
import { Effect, Option, Stream } from "effect"
import { InvalidEvent } from "../domain/Errors.js"
import { decodeBatchFrames, decodeEventFrame, MalformedBatch } from "../wire/EventFrames.js"
import { EventServiceDefinition } from "../wire/Wire.js"

export type Incoming =
  | { readonly size: number; readonly value: unknown; readonly malformed?: undefined }
  | { readonly size: number; readonly malformed: true; readonly batch_id: string }

const incoming = <Res>(
  m: grpc.MethodDefinition<unknown, Res>,
  decode: (bytes: Buffer) => unknown = m.requestDeserialize,
): grpc.MethodDefinition<Incoming, Res> => ({
  ...m,
  requestSerialize: () => {
    throw new Error("server-side definition")
  },
  requestDeserialize: (bytes: Buffer): Incoming => {
    try {
      return { size: bytes.length, value: decode(bytes) }
    } catch (e) {
      return { size: bytes.length, malformed: true, batch_id: e instanceof MalformedBatch ? e.batch_id : "" }
    }
  },
})

/** `api.EventService` as the server decodes it. */
export const ServerDefinition = {
  SendEvent: incoming(EventServiceDefinition.SendEvent, decodeEventFrame),
  ExchangeConfig: incoming(EventServiceDefinition.ExchangeConfig),
  SendEventBatches: incoming(EventServiceDefinition.SendEventBatches, (b) => decodeBatchFrames(b)),
} satisfies grpc.ServiceDefinition

export const malformed = () => new InvalidEvent({ detail: "malformed protobuf message" })

/** The next message (None at the client's half-close); a message already buffered is taken at once. */
export const nextMessage = (r: Readable): Effect.Effect<Option.Option<Incoming>, InvalidEvent> =>
  Effect.suspend(() => {
    if (!r.readableEnded) {
      const v = r.read() as Incoming | null
      if (v !== null) return Effect.succeedSome(v)
    }
    return awaitMessage(r)
  })

const awaitMessage = (r: Readable): Effect.Effect<Option.Option<Incoming>, InvalidEvent> =>
  Effect.async<Option.Option<Incoming>, InvalidEvent>((resume) => {
    let done = false
    const finish = (e: Effect.Effect<Option.Option<Incoming>, InvalidEvent>) => {
      if (done) return
      done = true
      off()
      resume(e)
    }
    const onReadable = () => {
      const v = r.read() as Incoming | null
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

/** grpc-js reads 16 messages ahead by default; one is enough (the budget decides what is in memory). */
export const readOneAhead = (r: Readable) => {
  const state = (r as unknown as { _readableState?: { highWaterMark?: number } })._readableState
  if (state !== undefined && typeof state.highWaterMark === "number") state.highWaterMark = 1
}

/** The messages of a request stream, pulled one at a time, ending at the client's half-close. */
export const messages = (r: Readable): Stream.Stream<Incoming, InvalidEvent> =>
  Stream.suspend(() => {
    readOneAhead(r)
    return Stream.repeatEffectOption(
      nextMessage(r).pipe(
        Effect.mapError(Option.some),
        Effect.flatMap(Option.match({ onNone: () => Effect.fail(Option.none()), onSome: Effect.succeed })),
      ),
    )
  })
