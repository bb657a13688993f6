/**
 * SendEvent (the proof of concept's client stream): messages are read one at a time, each event is checked
 * (Records.ts) and its bytes taken from the stream's budget before the next message is read, events are gathered
 * into Kafka sends (`batchEvents` events or `batchBytes` bytes), several sends may be in flight, and the answer is
 * SUCCESS only once Kafka acknowledged every event of the stream. A failed send ends the call with UNAVAILABLE at
 * once; so does the stream guard (expired token, tenant removed or changed) with its own status.
 *
 * The reading of one send's messages is one plain loop (`readGroup`), and the Stream only sees whole sends: a
 * Stream element per message cost about 80 µs of CPU in the stream's machinery, more than the rest of the path
 * (see docs/benchmarks.md, round 2).
 */
import type { Readable } from "node:stream"
import type * as grpc from "@grpc/grpc-js"
import { Effect, Either, Option, Stream } from "effect"
import { makeWireEventChecker } from "../domain/Event.js"
import type { WireEResponse } from "../wire/Wire.js"
import type { RpcError } from "./GrpcStatus.js"
import { decodeEvent, malformed, nextMessage, type Raw, readNothingAhead, requestNext } from "./Messages.js"
import { type Accepted, toRecords } from "./Records.js"
import { counted, crossTenant, type OpenStream, openStream, type RpcDeps } from "./RpcContext.js"

interface Item {
  readonly accepted: Accepted
  readonly size: number
}

/** The events of one Kafka send, and the budget bytes they hold. */
interface Group {
  readonly items: ReadonlyArray<Item>
  readonly bytes: number
}

/** Sends of one stream in flight at once (each holds its bytes in the stream's budget). */
const SENDS_IN_FLIGHT = 8

/**
 * Takes one message's bytes from the stream's budget, then decodes and checks its event (the bytes stay in the
 * budget until its send ends, or until the call ends when it is refused).
 */
const acceptMessage = (
  deps: RpcDeps,
  open: OpenStream,
  call: Readable,
  check: ReturnType<typeof makeWireEventChecker>,
  msg: Raw,
): Effect.Effect<Item, RpcError> =>
  Effect.flatMap(open.budget.acquire(msg.size), (): Effect.Effect<Item, RpcError> => {
    requestNext(call)
    const frame = decodeEvent(msg)
    if (frame === undefined) return Effect.fail(malformed())
    const accepted = toRecords([frame], open.caller, check, {
      maxEventBytes: deps.limits.maxEventBytes,
      keepChecked: deps.limits.printEvents,
    })
    if (Either.isLeft(accepted)) return crossTenant(accepted.left)
    return Effect.succeed({ accepted: accepted.right, size: msg.size })
  })

/** One Kafka send of gathered events; gives their bytes back to the budget however it ends. */
const publishGroup = (deps: RpcDeps, open: OpenStream, group: Group) =>
  Effect.suspend(() => {
    const accepted = group.items.map((i) => i.accepted)
    const records = accepted.length === 1 ? accepted[0]!.records : accepted.flatMap((a) => a.records)
    return counted(open.caller, accepted, group.bytes).pipe(
      Effect.zipRight(deps.sink.publishRecords(records)),
      Effect.as(records.length),
      Effect.ensuring(open.budget.release(group.bytes)),
    )
  })

/**
 * Reads and accepts messages until they fill one send: each event costs at least batchBytes / batchEvents, so a
 * send closes at whichever limit comes first, and the message that would overfill it opens the next one (`carry`).
 * A single message larger than a send goes alone. None once the stream ended and nothing is left.
 */
const groupReader = (deps: RpcDeps, open: OpenStream, call: grpc.ServerReadableStream<Raw, WireEResponse>) => {
  const check = makeWireEventChecker()
  const maxCost = deps.limits.batchBytes
  const minCost = Math.ceil(deps.limits.batchBytes / deps.limits.batchEvents)
  let carry: Item | undefined
  let ended = false
  return Effect.gen(function* () {
    const items: Array<Item> = []
    let cost = 0
    let bytes = 0
    while (true) {
      let item = carry
      carry = undefined
      if (item === undefined) {
        if (ended) break
        const next = yield* nextMessage(call)
        if (Option.isNone(next)) {
          ended = true
          break
        }
        item = yield* acceptMessage(deps, open, call, check, next.value)
      }
      const c = Math.max(item.size, minCost)
      if (items.length > 0 && cost + c > maxCost) {
        carry = item
        break
      }
      items.push(item)
      cost += c
      bytes += item.size
    }
    return items.length === 0 ? Option.none<Group>() : Option.some<Group>({ items, bytes })
  })
}

/** The number of events of the stream, once Kafka has all of them; fails with the first failure. */
export const sendEvent = (deps: RpcDeps, call: grpc.ServerReadableStream<Raw, WireEResponse>) =>
  Effect.gen(function* () {
    const open = yield* openStream(deps, call.metadata)
    readNothingAhead(call)
    const readGroup = groupReader(deps, open, call)
    return yield* Stream.repeatEffectOption(
      readGroup.pipe(
        Effect.mapError(Option.some),
        Effect.flatMap(Option.match({ onNone: () => Effect.fail(Option.none()), onSome: Effect.succeed })),
      ),
    ).pipe(
      Stream.interruptWhen(open.guard),
      Stream.mapEffect((group) => publishGroup(deps, open, group), { concurrency: SENDS_IN_FLIGHT }),
      Stream.runSum,
    )
  }).pipe(Effect.scoped)
