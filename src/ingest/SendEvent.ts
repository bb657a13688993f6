/**
 * SendEvent (the proof of concept's client stream), as a Stream pipeline: messages are pulled one at a time, each
 * event is checked (Records.ts) and its bytes taken from the stream's budget, events are gathered into Kafka sends
 * (`batchEvents` events or `batchBytes` bytes), several sends may be in flight, and the answer is SUCCESS only once
 * Kafka acknowledged every event of the stream. A failed send ends the call with UNAVAILABLE at once; so does the
 * stream guard (expired token, tenant removed or changed) with its own status.
 */
import type * as grpc from "@grpc/grpc-js"
import { Chunk, Effect, Either, Sink, Stream } from "effect"
import { makeWireEventChecker } from "../domain/Event.js"
import type { EventFrame } from "../wire/EventFrames.js"
import type { WireEResponse } from "../wire/Wire.js"
import type { RpcError } from "./GrpcStatus.js"
import { type Incoming, malformed, messages } from "./Messages.js"
import { type Accepted, toRecords } from "./Records.js"
import { counted, crossTenant, type OpenStream, openStream, type RpcDeps } from "./RpcContext.js"

interface Item {
  readonly accepted: Accepted
  readonly size: number
}

/** Sends of one stream in flight at once (each holds its bytes in the stream's budget). */
const SENDS_IN_FLIGHT = 8

/** Checks one message's event and takes its bytes from the stream's budget. */
const acceptMessage = (
  deps: RpcDeps,
  open: OpenStream,
  check: ReturnType<typeof makeWireEventChecker>,
  msg: Incoming,
): Effect.Effect<Item, RpcError> => {
  if (msg.malformed !== undefined) return Effect.fail(malformed())
  const accepted = toRecords([msg.value as EventFrame], open.caller, check, {
    maxEventBytes: deps.limits.maxEventBytes,
    keepChecked: deps.limits.printEvents,
  })
  if (Either.isLeft(accepted)) return crossTenant(accepted.left)
  return Effect.as(open.budget.acquire(msg.size), { accepted: accepted.right, size: msg.size })
}

/** One Kafka send of gathered events; gives their bytes back to the budget however it ends. */
const publishGroup = (deps: RpcDeps, open: OpenStream, items: Chunk.Chunk<Item>) =>
  Effect.suspend(() => {
    const accepted = Chunk.toReadonlyArray(items).map((i) => i.accepted)
    const bytes = Chunk.reduce(items, 0, (n, i) => n + i.size)
    const records = accepted.length === 1 ? accepted[0]!.records : accepted.flatMap((a) => a.records)
    return counted(open.caller, accepted, bytes).pipe(
      Effect.zipRight(deps.sink.publishRecords(records)),
      Effect.as(records.length),
      Effect.ensuring(open.budget.release(bytes)),
    )
  })

/** The number of events of the stream, once Kafka has all of them; fails with the first failure. */
export const sendEvent = (deps: RpcDeps, call: grpc.ServerReadableStream<Incoming, WireEResponse>) =>
  Effect.gen(function* () {
    const open = yield* openStream(deps, call.metadata)
    const check = makeWireEventChecker()
    // Each event costs at least batchBytes / batchEvents, so a send closes at whichever limit comes first.
    const minCost = Math.ceil(deps.limits.batchBytes / deps.limits.batchEvents)
    const gather = Sink.foldWeighted({
      initial: Chunk.empty<Item>(),
      maxCost: deps.limits.batchBytes,
      cost: (_: Chunk.Chunk<Item>, item: Item) => Math.max(item.size, minCost),
      body: (acc: Chunk.Chunk<Item>, item: Item) => Chunk.append(acc, item),
    })
    return yield* messages(call).pipe(
      Stream.interruptWhen(open.guard),
      Stream.mapEffect((msg) => acceptMessage(deps, open, check, msg)),
      Stream.transduce(gather),
      Stream.filter(Chunk.isNonEmpty),
      Stream.mapEffect((items) => publishGroup(deps, open, items), { concurrency: SENDS_IN_FLIGHT }),
      Stream.runSum,
    )
  }).pipe(Effect.scoped)
