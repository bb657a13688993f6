/**
 * SendEventBatches (bidi): each batch is acknowledged once (BatchAck with its batch_id) after Kafka acknowledged
 * all of it; many may be in flight. A batch that cannot be accepted (malformed, no or a duplicate batch_id, too
 * many events, another tenant's events, over budget, refused by Kafka) gets a FAILURE ack with the status code and
 * the reason, and the stream goes on. On shutdown, or when the stream guard fires (expired token, tenant removed or
 * changed), the stream stops reading, lets its batches in flight be acked, then ends with the guard's status
 * (UNAVAILABLE on shutdown, so the client resends anything unacknowledged elsewhere).
 */
import type * as grpc from "@grpc/grpc-js"
import { Deferred, Effect, Either, FiberSet, Stream } from "effect"
import { InvalidEvent, SinkUnavailable } from "../domain/Errors.js"
import { inc } from "../shared/Metrics.js"
import { MalformedBatch } from "../wire/EventFrames.js"
import type { WireBatchAck } from "../wire/Wire.js"
import { type RpcError, rejectReason, statusOf } from "./GrpcStatus.js"
import * as M from "./IngesterMetrics.js"
import { batchIdOf, decodeBatch, malformed, messages, type Raw, requestNext } from "./Messages.js"
import { type Accepted, makeEventChecker, toRecords } from "./Records.js"
import { ack, counted, type OpenStream, openStream, type RpcDeps, reject } from "./RpcContext.js"

const RPC = "SendEventBatches"

interface BatchStream {
  readonly deps: RpcDeps
  readonly open: OpenStream
  readonly call: grpc.ServerDuplexStream<Raw, WireBatchAck>
  /** batch_ids in flight (bounded by the stream's budget: each holds at least one byte of it). */
  readonly inFlight: Set<string>
  readonly publishes: FiberSet.FiberSet<void, never>
}

const write = (s: BatchStream, a: WireBatchAck) =>
  Effect.sync(() => {
    if (!s.call.cancelled && !s.call.writableEnded) s.call.write(a)
  }).pipe(Effect.zipRight(ack(RPC, a.status)))

const refuse = (s: BatchStream, batch_id: string, e: RpcError) =>
  Effect.suspend(() => {
    const status = statusOf(e)
    return Effect.zipRight(
      reject(rejectReason(e)),
      write(s, { batch_id, status: "FAILURE", code: status.code, detail: status.details }),
    )
  })

type Judged =
  | { readonly ok: true; readonly batchId: string; readonly accepted: Accepted }
  | { readonly ok: false; readonly batchId: string; readonly error: RpcError }

/** Decodes and checks one batch message (whose bytes are in the budget already); no effect. */
const judge = (s: BatchStream, msg: Raw): Judged => {
  const frames = decodeBatch(msg)
  if (frames instanceof MalformedBatch) return { ok: false, batchId: frames.batch_id, error: malformed() }
  const batchId = frames.batch_id
  if (batchId.length === 0 || batchId.length > 128)
    return {
      ok: false,
      batchId: "",
      error: new InvalidEvent({ detail: "every batch needs a batch_id of 1 to 128 characters" }),
    }
  if (s.inFlight.has(batchId))
    return { ok: false, batchId, error: new InvalidEvent({ detail: "this batch_id is already in flight" }) }
  const max = s.deps.limits.maxEventsPerBatch
  if (frames.eventCount > max)
    return { ok: false, batchId, error: new InvalidEvent({ detail: `a batch may hold at most ${max} events` }) }
  const accepted = toRecords(frames.events, s.open.caller, makeEventChecker(), {
    maxEventBytes: s.deps.limits.maxEventBytes,
    keepChecked: s.deps.limits.printEvents,
  })
  return Either.isLeft(accepted)
    ? { ok: false, batchId, error: accepted.left }
    : { ok: true, batchId, accepted: accepted.right }
}

/**
 * One batch message: its bytes go into the budget before it is decoded; then it is refused with a FAILURE ack (its
 * bytes given back), or its Kafka send starts (acked, and its bytes given back, when it ends).
 */
const handleBatch = (s: BatchStream, msg: Raw): Effect.Effect<void> =>
  Effect.gen(function* () {
    const got = yield* Effect.either(s.open.budget.acquire(msg.size))
    if (Either.isLeft(got)) return yield* refuse(s, batchIdOf(msg), got.left)
    requestNext(s.call)
    const judged = judge(s, msg)
    if (!judged.ok) {
      yield* s.open.budget.release(msg.size)
      if (judged.error._tag === "PermissionDenied") yield* inc(M.authFailures, 1, { reason: "cross_tenant" })
      return yield* refuse(s, judged.batchId, judged.error)
    }
    const batchId = judged.batchId
    yield* counted(s.open.caller, [judged.accepted], msg.size)
    s.inFlight.add(batchId)
    yield* FiberSet.run(
      s.publishes,
      s.deps.sink.publishRecords(judged.accepted.records).pipe(
        Effect.matchEffect({
          onSuccess: () => write(s, { batch_id: batchId, status: "SUCCESS", code: 0, detail: "" }),
          onFailure: (e) => refuse(s, batchId, e),
        }),
        Effect.ensuring(
          Effect.zipRight(
            s.open.budget.release(msg.size),
            Effect.sync(() => s.inFlight.delete(batchId)),
          ),
        ),
      ),
    )
  })

/** Reads batches until the client half-closes, the guard fires or the server drains; then awaits the acks. */
export const sendEventBatches = (deps: RpcDeps, call: grpc.ServerDuplexStream<Raw, WireBatchAck>) =>
  Effect.gen(function* () {
    const open = yield* openStream(deps, call.metadata)
    const publishes = yield* FiberSet.make<void, never>()
    const s: BatchStream = { deps, open, call, inFlight: new Set(), publishes }
    const stop = yield* Deferred.make<never, RpcError>()
    const draining = Effect.zipRight(
      Deferred.await(deps.draining),
      Effect.failSync(() => new SinkUnavailable({ detail: "the ingester is shutting down; reconnect" })),
    )
    yield* Effect.forkScoped(
      Effect.raceFirst(open.guard, draining).pipe(Effect.catchAll((e) => Deferred.fail(stop, e))),
    )
    const read = yield* messages(call).pipe(
      Stream.interruptWhenDeferred(stop),
      Stream.runForEach((msg) => handleBatch(s, msg)),
      Effect.either,
    )
    yield* FiberSet.awaitEmpty(publishes)
    if (Either.isLeft(read)) return yield* Effect.fail<RpcError>(read.left)
  }).pipe(Effect.scoped)
