/**
 * Sending over `SendEventBatches`: a bidirectional stream with up to `window` batches in flight, each deleted
 * from the buffer when its ack arrives. Three parts run together and the first failure ends the stream (the
 * session then reconnects and resends from the oldest row still buffered):
 * - sendBatches: the next batch from the buffer (after the last one sent), encrypted and written;
 * - readAcks: the ingester's acks as a Stream; a batch leaves the in-flight list only once its rows are deleted;
 * - watchdog: no progress for `ackTimeout` while batches are in flight.
 */
import type * as grpc from "@grpc/grpc-js"
import { Duration, Effect, Ref, Schedule, Stream } from "effect"
import * as Metrics from "../../shared/Metrics.js"
import type { EncodedEventBatch, WireBatchAck, WireEventBatch } from "../../wire/Wire.js"
import * as M from "../AgentMetrics.js"
import type { BufferedRow } from "../buffer/BufferStore.js"
import { isPermanentRejection } from "./Batching.js"
import { type Client, classify, metadataFor, SendError } from "./Connection.js"
import { type Batch, bufferFailure, countSent, encodeBatch, nextBatch, type SenderContext } from "./Outbox.js"
import { rejectRows } from "./Rejected.js"

interface InflightBatch {
  readonly id: string
  readonly first: number
  readonly last: number
  readonly rows: ReadonlyArray<BufferedRow>
  readonly sentAt: number
}

/** The state of one stream (it dies with the stream). */
interface StreamState {
  readonly sid: string
  readonly inflight: Map<string, InflightBatch>
  /** The last row id sent on this stream. */
  cursor: number
  seq: number
  lastAckAt: number
  everAcked: boolean
}

type BatchCall = grpc.ClientDuplexStream<WireEventBatch | EncodedEventBatch, WireBatchAck>

/** Writes one message, waiting for `drain` when grpc-js's buffer is full. */
const write = (call: BatchCall, batch: EncodedEventBatch) =>
  Effect.async<void>((resume) => {
    if (call.write(batch)) return resume(Effect.void)
    const onDrain = () => resume(Effect.void)
    call.once("drain", onDrain)
    return Effect.sync(() => call.removeListener("drain", onDrain))
  })

const sendBatch = (ctx: SenderContext, call: BatchCall, state: StreamState, batch: Batch) =>
  Effect.gen(function* () {
    const id = `${state.sid}-${++state.seq}`
    const bytes = yield* encodeBatch(batch.settings, ctx.options.agentId, id, batch.rows)
    const first = batch.rows[0]!.id
    const last = batch.rows[batch.rows.length - 1]!.id
    state.inflight.set(id, { id, first, last, rows: batch.rows, sentAt: Date.now() })
    state.cursor = last
    yield* Metrics.set(M.inflightBatches, state.inflight.size)
    yield* write(call, bytes)
    yield* countSent(ctx, batch.rows)
  })

/** Forever: a permit (a free slot in the window), the next batch, send it. */
const sendBatches = (ctx: SenderContext, call: BatchCall, state: StreamState, permits: Effect.Semaphore) =>
  Stream.repeatEffect(permits.take(1).pipe(Effect.zipRight(Effect.suspend(() => nextBatch(ctx, state.cursor))))).pipe(
    Stream.runForEach((batch) => sendBatch(ctx, call, state, batch)),
  )

const onSuccess = (ctx: SenderContext, state: StreamState, b: InflightBatch) =>
  Effect.gen(function* () {
    // Delete first: if that fails, the stream ends and the rows (still buffered) are sent again.
    const r = yield* ctx.buffer.remove(b.first, b.last).pipe(Effect.mapError(bufferFailure))
    state.inflight.delete(b.id)
    yield* Metrics.inc(M.eventsAcked, r.n)
    if (state.everAcked) return
    state.everAcked = true
    yield* Ref.set(ctx.fallbackLogged, false)
    yield* Effect.logInfo("ingester acknowledging batches")
  })

const onAck = (ctx: SenderContext, state: StreamState, permits: Effect.Semaphore, ack: WireBatchAck) =>
  Effect.gen(function* () {
    const b = state.inflight.get(ack.batch_id)
    if (b === undefined) {
      yield* Effect.logWarning("ack for an unknown batch ignored").pipe(
        Effect.annotateLogs({ batch: String(ack.batch_id).slice(0, 100) }),
      )
      return
    }
    state.lastAckAt = Date.now()
    const detail = String(ack.detail ?? "").slice(0, 500)
    if (ack.status === "SUCCESS" || (ack.status as unknown) === 0) yield* onSuccess(ctx, state, b)
    else if (isPermanentRejection(ack.code)) {
      yield* rejectRows(ctx.buffer, { id: b.id, code: ack.code, detail, reason: "ingester", rows: b.rows }, true)
      state.inflight.delete(b.id)
    } else {
      // A retryable failure for this batch (UNAVAILABLE, RESOURCE_EXHAUSTED...): reconnect and resend.
      return yield* new SendError({ kind: "unavailable", detail: `batch refused with code ${ack.code} (${detail})` })
    }
    yield* Metrics.set(M.inflightBatches, state.inflight.size)
    yield* permits.release(1)
  })

/**
 * The acks as a Stream: the call is paused while the stream's small buffer is full (the ingester acks only
 * what was sent, so at most `window` are pending anyway). Not Stream.fromAsyncIterable: its finalizer waits
 * for the call to finish, which only the cancel after it brings.
 */
const acksOf = (call: BatchCall) =>
  Stream.async<WireBatchAck, SendError>((emit) => {
    const onData = (ack: WireBatchAck) => {
      call.pause()
      void emit.single(ack).then(() => call.resume())
    }
    const onError = (e: unknown) => void emit.fail(classify(e, "SendEventBatches"))
    const onEnd = () =>
      void emit.fail(new SendError({ kind: "unavailable", detail: "SendEventBatches: stream ended by the ingester" }))
    call.on("data", onData)
    call.on("error", onError)
    call.on("end", onEnd)
    return Effect.sync(() => {
      call.removeListener("data", onData)
      call.removeListener("error", onError)
      call.removeListener("end", onEnd)
    })
  }, 16)

/** Handles acks until the stream fails (it never ends otherwise). */
const readAcks = (ctx: SenderContext, call: BatchCall, state: StreamState, permits: Effect.Semaphore) =>
  acksOf(call).pipe(Stream.runForEach((ack) => onAck(ctx, state, permits, ack)))

/**
 * No progress for `ackTimeout`: batches are in flight and neither the oldest was sent nor any ack arrived
 * within it. A slow ingester that keeps acknowledging (Kafka backpressure) is left alone.
 */
const watchdog = (ctx: SenderContext, state: StreamState) => {
  const limit = Duration.toMillis(ctx.options.ackTimeout)
  return Effect.suspend(() => {
    if (state.inflight.size === 0) return Effect.void
    let oldest = Number.POSITIVE_INFINITY
    for (const b of state.inflight.values()) oldest = Math.min(oldest, b.sentAt)
    return Date.now() - Math.max(oldest, state.lastAckAt) > limit
      ? Effect.fail(new SendError({ kind: "timeout", detail: `batches not acknowledged within ${limit} ms` }))
      : Effect.void
  }).pipe(Effect.repeat(Schedule.spaced("500 millis")))
}

/** Runs one SendEventBatches stream until it fails (it never ends otherwise). */
export const runBatchStream = (ctx: SenderContext, client: Client, token: string, sid: string) =>
  Effect.gen(function* () {
    const call = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const call = client.SendEventBatches(metadataFor(token))
        call.on("error", () => undefined) // the CANCELLED error after cancel(), once no one listens
        return call
      }),
      (c) => Effect.sync(() => c.cancel()),
    )
    const state: StreamState = { sid, inflight: new Map(), cursor: 0, seq: 0, lastAckAt: 0, everAcked: false }
    const permits = yield* Effect.makeSemaphore(ctx.options.window)
    yield* Effect.addFinalizer(() => Metrics.set(M.inflightBatches, 0))
    yield* Effect.all(
      [sendBatches(ctx, call, state, permits), readAcks(ctx, call, state, permits), watchdog(ctx, state)],
      {
        concurrency: 3,
        discard: true,
      },
    )
  })
