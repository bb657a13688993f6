/**
 * The fallback for an ingester without `SendEventBatches` (the proof of concept's): one `SendEvent` client
 * stream per batch, one batch at a time. The batch leaves the buffer only when the stream is answered SUCCESS;
 * FAILURE or an error ends the session (reconnect, resend); INVALID_ARGUMENT for the stream moves the batch to
 * the rejected folder. When the connection is lost the session ends too, so the reconnect tries the batch RPC
 * again (an ingester may have been upgraded meanwhile).
 */
import * as grpc from "@grpc/grpc-js"
import { Duration, Effect, Stream } from "effect"
import type { WireEvent } from "../../domain/Event.js"
import * as Metrics from "../../shared/Metrics.js"
import type { WireEResponse } from "../../wire/Wire.js"
import * as M from "../AgentMetrics.js"
import { type Client, classify, metadataFor, SendError } from "./Connection.js"
import { type Batch, bufferFailure, countSent, nextBatch, type SenderContext, toWireBatch } from "./Outbox.js"
import { rejectRows } from "./Rejected.js"

type Answer =
  | { readonly _tag: "answered"; readonly status: WireEResponse["status"] }
  | { readonly _tag: "invalid"; readonly detail: string }

/** One client stream: every event of the batch, then the single EResponse. */
const callSendEvent = (client: Client, token: string, events: ReadonlyArray<WireEvent>) =>
  Effect.async<Answer, SendError>((resume) => {
    const call = client.SendEvent(metadataFor(token), {}, (err, res) => {
      if (err?.code === grpc.status.INVALID_ARGUMENT)
        resume(Effect.succeed({ _tag: "invalid", detail: String(err.details ?? "").slice(0, 500) }))
      else if (err || !res) resume(Effect.fail(classify(err, "SendEvent")))
      else resume(Effect.succeed({ _tag: "answered", status: res.status }))
    })
    for (const e of events) call.write(e)
    call.end()
    return Effect.sync(() => call.cancel())
  })

const sendOverEventStream = (ctx: SenderContext, client: Client, token: string, batch: Batch) =>
  Effect.gen(function* () {
    const events = yield* toWireBatch(batch.settings, ctx.options.agentId, batch.rows)
    yield* countSent(ctx, batch.rows)
    const ms = Duration.toMillis(ctx.options.ackTimeout)
    const answer = yield* callSendEvent(client, token, events).pipe(
      Effect.timeoutFail({
        duration: ctx.options.ackTimeout,
        onTimeout: () => new SendError({ kind: "timeout", detail: `SendEvent not answered within ${ms} ms` }),
      }),
    )
    const first = batch.rows[0]!.id
    const last = batch.rows[batch.rows.length - 1]!.id
    if (answer._tag === "invalid") {
      const id = `sendevent-${first}-${last}`
      const rejection = { id, code: grpc.status.INVALID_ARGUMENT, detail: answer.detail, rows: batch.rows }
      return yield* rejectRows(ctx.buffer, { ...rejection, reason: "ingester" }, true)
    }
    if (answer.status !== "SUCCESS" && (answer.status as unknown) !== 0)
      return yield* new SendError({ kind: "unavailable", detail: "SendEvent answered FAILURE" })
    const r = yield* ctx.buffer.remove(first, last).pipe(Effect.mapError(bufferFailure))
    yield* Metrics.inc(M.eventsAcked, r.n)
  })

/** Completes when the channel leaves READY (the connection was lost or went idle). */
const connectionLost = (client: Client) =>
  Effect.async<void>((resume) => {
    const channel = client.getChannel()
    let active = true
    const watch = () => {
      if (!active) return
      const state = channel.getConnectivityState(false)
      if (state !== grpc.connectivityState.READY) return resume(Effect.void)
      channel.watchConnectivityState(state, Date.now() + 3_600_000, watch)
    }
    watch()
    return Effect.sync(() => {
      active = false
    })
  })

/** Sends batch after batch over SendEvent until something fails or the connection is lost. */
export const runEventStreams = (ctx: SenderContext, client: Client, token: string) =>
  Effect.gen(function* () {
    yield* Metrics.set(M.legacyRpc, 1)
    yield* Effect.addFinalizer(() => Metrics.set(M.legacyRpc, 0))
    const state = { cursor: 0 }
    const sends = Stream.repeatEffect(Effect.suspend(() => nextBatch(ctx, state.cursor))).pipe(
      Stream.runForEach((batch) =>
        sendOverEventStream(ctx, client, token, batch).pipe(
          Effect.andThen(
            Effect.sync(() => {
              state.cursor = batch.rows[batch.rows.length - 1]!.id
            }),
          ),
        ),
      ),
    )
    const lost = connectionLost(client).pipe(
      Effect.zipRight(
        Effect.fail(new SendError({ kind: "unavailable", detail: "connection lost; trying the batch RPC again" })),
      ),
    )
    yield* Effect.raceFirst(sends, lost)
  })
