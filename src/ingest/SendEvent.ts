/**
 * SendEvent (the proof of concept's client stream): messages are read one at a time, each message's bytes are
 * taken from the stream's budget before the next message is read, the messages are gathered into Kafka sends
 * (`batchEvents` events or `batchBytes` bytes) whose events are checked together (Records.ts, one pass per send),
 * several sends may be in flight (fibers of the call's, at most SENDS_IN_FLIGHT), and the answer is SUCCESS only once
 * Kafka acknowledged every event of the stream. A failed send ends the call with UNAVAILABLE at once; so does the
 * stream guard (expired token, tenant removed or changed; StreamGuards.ts) with its own status.
 *
 * The reading of one send's messages is plain code (`groupReader`): a message is taken (its bytes into the budget,
 * decoded, added to the send) synchronously, either at once when grpc-js has it buffered or in the stream's
 * "readable" listener when it arrives, so a send costs one effect (plus one per wait for the budget), not one or
 * more per message; the loop of sends only sees whole sends. A Stream element per message cost about 80 µs of CPU; an
 * effect per message, even one wait each (grpc-js hands over each message a microtask after the previous one, so
 * nearly every message is a wait), cost about 20 µs more (docs/benchmarks.md, round 3).
 */
import type * as grpc from "@grpc/grpc-js"
import { Deferred, Effect, Either, Exit, Fiber, Option } from "effect"
import { InvalidEvent } from "../domain/Errors.js"
import type { EventFrame } from "../wire/EventFrames.js"
import type { WireEResponse } from "../wire/Wire.js"
import type { RpcError } from "./GrpcStatus.js"
import { decodeEvent, malformed, type Raw, readNothingAhead, requestNext } from "./Messages.js"
import { type Accepted, makeEventChecker, toRecords } from "./Records.js"
import { counted, crossTenant, type OpenStream, openStream, type RpcDeps } from "./RpcContext.js"

/** The events of one Kafka send, and the budget bytes they hold. */
interface Group {
  readonly accepted: Accepted
  readonly bytes: number
}

/** A send being gathered. */
interface Gathering {
  readonly frames: Array<EventFrame>
  /** Budget bytes of its messages. */
  bytes: number
  /** Each message counts at least batchBytes / batchEvents. */
  cost: number
}

/** Sends of one stream in flight at once (each holds its bytes in the stream's budget). */
const SENDS_IN_FLIGHT = 8

/** Why `fill` stopped: the send is full, the stream must be waited for, the budget must be waited for, or done. */
type Stop = "full" | "stream" | "budget" | "done"

/** The state of one stream's reader (`groupReader`): what it carries over from one send to the next. */
interface Reader {
  readonly deps: RpcDeps
  readonly open: OpenStream
  readonly call: grpc.ServerReadableStream<Raw, WireEResponse>
  readonly check: ReturnType<typeof makeEventChecker>
  readonly maxCost: number
  readonly minCost: number
  /** A message in the budget that opens the next send. */
  carry: { readonly frame: EventFrame; readonly size: number } | undefined
  /** A message read whose bytes are not in the budget yet. */
  waiting: Raw | undefined
  ended: boolean
  failure: RpcError | undefined
  /** Called on the stream's next event (readable, end, error, close), once. */
  wake: (() => void) | undefined
}

/** Wakes the reader on each of the stream's events, and keeps the first failure. */
const listen = (r: Reader): void => {
  const signal = () => {
    const w = r.wake
    r.wake = undefined
    w?.()
  }
  r.call.on("readable", signal)
  r.call.on("end", signal)
  r.call.on("error", () => {
    r.failure ??= new InvalidEvent({ detail: "the request stream failed" })
    signal()
  })
  r.call.on("close", () => {
    if (!r.call.readableEnded) r.failure ??= new InvalidEvent({ detail: "the stream was closed" })
    signal()
  })
}

/** Adds a message to `g`, unless it would overfill a non-empty send: then it opens the next one (false). */
const add = (r: Reader, g: Gathering, frame: EventFrame, size: number): boolean => {
  const c = Math.max(size, r.minCost)
  if (g.frames.length > 0 && g.cost + c > r.maxCost) {
    r.carry = { frame, size }
    return false
  }
  g.frames.push(frame)
  g.cost += c
  g.bytes += size
  return true
}

/** A message whose bytes are in the budget: asks for the next one, decodes it and adds it (false: full). */
const taken = (r: Reader, g: Gathering, msg: Raw): boolean => {
  requestNext(r.call)
  const frame = decodeEvent(msg)
  if (frame !== undefined) return add(r, g, frame, msg.size)
  r.failure = malformed()
  return true
}

/** Synchronously: takes the messages grpc-js has buffered while the budget has their bytes. */
const fill = (r: Reader, g: Gathering): Stop => {
  if (r.carry !== undefined) {
    const c = r.carry
    r.carry = undefined
    add(r, g, c.frame, c.size)
  }
  while (r.failure === undefined) {
    let msg = r.waiting
    if (msg === undefined) {
      if (r.ended || r.call.readableEnded) {
        r.ended = true
        return "done"
      }
      const read = r.call.read() as Raw | null
      if (read === null) return "stream"
      msg = read
    }
    if (!r.open.budget.tryAcquire(msg.size)) {
      r.waiting = msg
      return "budget"
    }
    r.waiting = undefined
    if (!taken(r, g, msg)) return "full"
  }
  return "done"
}

/**
 * Fills `g` until it is full, the budget lacks a message's bytes, or the stream is done: at once with what grpc-js
 * has buffered, then from the stream's "readable" listener (plain code, no effect per message: grpc-js hands over
 * each message a microtask after the previous one, so nearly every message is a wait).
 */
const gather = (r: Reader, g: Gathering) =>
  Effect.async<Stop>((resume) => {
    const attempt = (): boolean => {
      let stop: Stop
      try {
        stop = fill(r, g)
      } catch (defect) {
        resume(Effect.die(defect))
        return true
      }
      if (stop === "stream" && r.failure === undefined) return false
      resume(Effect.succeed(stop))
      return true
    }
    if (attempt()) return
    const onWake = () => {
      if (!attempt()) r.wake = onWake
    }
    r.wake = onWake
    return Effect.sync(() => {
      r.wake = undefined
    })
  })

/** The gathered events of `g` checked together (one pass), or None when it is empty. */
const finish = (r: Reader, g: Gathering): Effect.Effect<Option.Option<Group>, RpcError> => {
  if (g.frames.length === 0) return Effect.succeedNone
  const accepted = toRecords(g.frames, r.open.caller, r.check, {
    maxEventBytes: r.deps.limits.maxEventBytes,
    keepChecked: r.deps.limits.printEvents,
  })
  if (Either.isLeft(accepted)) return crossTenant(accepted.left)
  return Effect.succeedSome({ accepted: accepted.right, bytes: g.bytes })
}

/** One send: gathered, and when the budget lacks the first message's bytes, waited for (Budget.acquire). */
const step = (r: Reader, g: Gathering): Effect.Effect<Option.Option<Group>, RpcError> =>
  Effect.flatMap(gather(r, g), (stop) => {
    if (r.failure !== undefined) return Effect.fail(r.failure)
    if (stop !== "budget" || g.frames.length > 0) return finish(r, g)
    const msg = r.waiting!
    return Effect.flatMap(r.open.budget.acquire(msg.size), () => {
      r.waiting = undefined
      taken(r, g, msg)
      return step(r, g)
    })
  })

/**
 * Reads messages into sends: each message costs at least batchBytes / batchEvents, so a send closes at whichever
 * limit comes first, and the message that would overfill it opens the next one (`carry`); a single message larger
 * than a send goes alone. When the budget lacks a message's bytes, what is gathered goes out first; an empty send
 * waits for them (Budget.acquire: Overloaded past its wait). None once the stream ended and nothing is left.
 */
const groupReader = (deps: RpcDeps, open: OpenStream, call: grpc.ServerReadableStream<Raw, WireEResponse>) => {
  const r: Reader = {
    deps,
    open,
    call,
    check: makeEventChecker(),
    maxCost: deps.limits.batchBytes,
    minCost: Math.ceil(deps.limits.batchBytes / deps.limits.batchEvents),
    carry: undefined,
    waiting: undefined,
    ended: false,
    failure: undefined,
    wake: undefined,
  }
  listen(r)
  return Effect.suspend(() => step(r, { frames: [], bytes: 0, cost: 0 }))
}

/** One Kafka send of gathered events; gives their bytes back to the budget however it ends. */
const publishGroup = (deps: RpcDeps, open: OpenStream, group: Group) =>
  counted(open.caller, [group.accepted], group.bytes).pipe(
    Effect.zipRight(deps.sink.publishRecords(group.accepted.records)),
    Effect.as(group.accepted.records.length),
    Effect.ensuring(open.budget.release(group.bytes)),
  )

/**
 * The number of events of the stream, once Kafka has all of them; fails with the first failure: a failed send
 * (at once, not when its turn to be awaited comes), the stream guard, or the reading. The sends are fibers of the
 * pump (at most SENDS_IN_FLIGHT at once); the pump, the guard (a callback, StreamGuards.watch) and a failed send
 * each complete one Deferred, which the call awaits: no race, so no fiber is interrupted when the call ends as it
 * should (raced fibers cost about a third of an empty call's CPU, docs/benchmarks.md). When the call ends otherwise
 * (guard, failure, the client cancelling), the pump and its sends are interrupted before the answer.
 */
export const sendEvent = (deps: RpcDeps, call: grpc.ServerReadableStream<Raw, WireEResponse>) =>
  Effect.gen(function* () {
    const open = yield* openStream(deps, call.metadata)
    readNothingAhead(call)
    const readGroup = groupReader(deps, open, call)
    const done = yield* Deferred.make<number, RpcError>()
    const end = (exit: Exit.Exit<number, RpcError>) => {
      Deferred.unsafeDone(done, exit)
    }
    const failSend = (e: RpcError) => Effect.sync(() => end(Exit.fail(e)))
    const pump = Effect.gen(function* () {
      const inFlight: Array<Fiber.RuntimeFiber<number, RpcError>> = []
      let total = 0
      while (true) {
        const group = yield* readGroup
        if (Option.isNone(group)) break
        if (inFlight.length >= SENDS_IN_FLIGHT) total += yield* Fiber.join(inFlight.shift()!)
        inFlight.push(yield* Effect.fork(publishGroup(deps, open, group.value).pipe(Effect.tapError(failSend))))
      }
      for (const f of inFlight) total += yield* Fiber.join(f)
      return total
    })
    const unwatch = deps.guards.watch(open.caller, (e) => end(Exit.fail(e)))
    const fiber = yield* Effect.forkDaemon(pump)
    fiber.addObserver(end)
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        unwatch()
        return fiber.unsafePoll() === null ? Fiber.interrupt(fiber) : Effect.void
      }),
    )
    return yield* Deferred.await(done)
  }).pipe(Effect.scoped)
