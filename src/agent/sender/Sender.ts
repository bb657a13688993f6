/**
 * Sender: moves buffered events to the ingester (TLS + Bearer token), deleting them from the disk buffer
 * once acknowledged. The parts live in `sender/`: Connection (client, token, ExchangeConfig), Outbox (what
 * the streams share), BatchStream (`SendEventBatches`, several batches in flight), EventStream (the
 * `SendEvent` fallback for the proof of concept's ingester), Rejected (the rejected folder).
 *
 * One connection is a "session": read the token, ExchangeConfig(ACCESS_KEY), open the batch stream and send
 * from the oldest unacknowledged event on; an ingester that answers UNIMPLEMENTED gets SendEvent instead, on
 * the same connection, until it is lost. Any failure ends the session; the next one starts again from the
 * oldest event still in the buffer (at least once; duplicates carry the same event_id). Sessions are retried
 * on the shared backoff (Retry.ts); an UNAUTHENTICATED refusal waits at least `authRetry` and re-reads the
 * token. ExchangeConfig is repeated every `configRefresh` while connected: a new key applies to the next batch.
 */
import { Duration, Effect, Ref, Schedule } from "effect"
import * as Metrics from "../../shared/Metrics.js"
import { backoffWithReset } from "../../shared/Retry.js"
import * as M from "../AgentMetrics.js"
import { waitUntil } from "../buffer/Signal.js"
import { runBatchStream } from "./BatchStream.js"
import { type Client, openClient, readToken, type SendError, type SenderOptions } from "./Connection.js"
import { runEventStreams } from "./EventStream.js"
import { exchange, makeContext, type SenderContext } from "./Outbox.js"

export { classify, SendError, type SenderOptions, type TokenSource } from "./Connection.js"

/** ExchangeConfig again every `configRefresh` while connected; a failure keeps the last config. */
const refreshConfig = (ctx: SenderContext, client: Client) =>
  readToken(ctx.options.token, ctx.tokenStamp).pipe(
    Effect.flatMap((token) => exchange(ctx, client, token)),
    Effect.catchAll((e) =>
      Effect.logWarning("periodic ExchangeConfig failed; keeping the last config").pipe(
        Effect.annotateLogs({ error: e.detail }),
      ),
    ),
    Effect.repeat(Schedule.spaced(ctx.options.configRefresh)),
    Effect.delay(ctx.options.configRefresh),
  )

/** UNIMPLEMENTED for the batch RPC: say so (once until the batch RPC works again), then use SendEvent. */
const fallBack = (ctx: SenderContext, client: Client, token: string, e: SendError) =>
  Effect.gen(function* () {
    if (!(yield* Ref.getAndSet(ctx.fallbackLogged, true)))
      yield* Effect.logWarning(
        "the ingester does not implement SendEventBatches (UNIMPLEMENTED, e.g. the proof of concept's ingester): " +
          "sending over SendEvent, one stream per batch; the batch RPC is tried again on reconnect",
      ).pipe(Effect.annotateLogs({ ingester: ctx.options.address, detail: e.detail }))
    return yield* runEventStreams(ctx, client, token)
  })

const session = (ctx: SenderContext) =>
  Effect.gen(function* () {
    const n = yield* Ref.updateAndGet(ctx.sessions, (x) => x + 1)
    const sid = `${Date.now().toString(36)}-${n}`
    const token = yield* readToken(ctx.options.token, ctx.tokenStamp)
    const client = yield* openClient(ctx.options)
    yield* exchange(ctx, client, token)
    yield* Metrics.set(M.connected, 1)
    yield* Effect.addFinalizer(() => Metrics.set(M.connected, 0))
    yield* Effect.logInfo("connected to the ingester").pipe(
      Effect.annotateLogs({ ingester: ctx.options.address, bufferedEvents: ctx.buffer.eventCount() }),
    )
    yield* Effect.forkScoped(refreshConfig(ctx, client))
    return yield* runBatchStream(ctx, client, token, sid).pipe(
      Effect.catchIf(
        (e) => e.kind === "unimplemented",
        (e) => fallBack(ctx, client, token, e),
      ),
    )
  }).pipe(Effect.scoped)

/** The shared backoff, and at least `authRetry` after an UNAUTHENTICATED or PERMISSION_DENIED refusal. */
const reconnectPolicy = (options: SenderOptions) =>
  backoffWithReset({ base: options.retryBase, cap: options.retryCap, reset: "1 minute" }).pipe(
    Schedule.intersect(
      Schedule.identity<SendError>().pipe(
        Schedule.addDelay((e) =>
          e.kind === "unauthenticated" || e.kind === "denied" ? options.authRetry : Duration.zero,
        ),
      ),
    ),
  )

const logFailure = (ctx: SenderContext, e: SendError) =>
  Effect.gen(function* () {
    yield* Metrics.inc(M.retries)
    const bufferedEvents = ctx.buffer.eventCount()
    if (e.kind === "unauthenticated") {
      yield* Metrics.inc(M.authFailures)
      yield* Effect.logError(
        "the ingester refused the token (UNAUTHENTICATED): replace the token (file) or fix ACCESS_TOKEN; retrying slowly, events stay buffered",
      ).pipe(Effect.annotateLogs({ detail: e.detail, bufferedEvents }))
    } else if (e.kind === "denied") {
      yield* Effect.logError("the ingester denied this agent (PERMISSION_DENIED): check ACCESS_KEY and token").pipe(
        Effect.annotateLogs({ detail: e.detail }),
      )
    } else {
      yield* Effect.logWarning("connection to the ingester failed; reconnecting").pipe(
        Effect.annotateLogs({ kind: e.kind, detail: e.detail, bufferedEvents }),
      )
    }
  })

/** Waits (at most the shutdown grace) until the buffer is empty, sending partial batches at once. */
const drain = (ctx: SenderContext) =>
  Effect.gen(function* () {
    const { buffer, options } = ctx
    yield* Ref.set(ctx.draining, true)
    yield* buffer.changed.notify
    if (buffer.eventCount() === 0) return
    yield* Effect.logInfo("shutting down: sending what is buffered").pipe(
      Effect.annotateLogs({ bufferedEvents: buffer.eventCount(), graceMs: Duration.toMillis(options.shutdownGrace) }),
    )
    yield* waitUntil(buffer.changed, () => buffer.eventCount() === 0, "100 millis").pipe(
      Effect.timeoutTo({ duration: options.shutdownGrace, onTimeout: () => undefined, onSuccess: () => undefined }),
    )
    yield* Effect.logInfo("shutdown: buffer left for the next start").pipe(
      Effect.annotateLogs({ bufferedEvents: buffer.eventCount() }),
    )
  })

/** `run`: sessions forever (until interrupted); `drain`: the shutdown step. Needs DiskBuffer and Crypto. */
export const makeSender = (options: SenderOptions) =>
  Effect.gen(function* () {
    const ctx = yield* makeContext(options)
    const run = session(ctx).pipe(
      Effect.tapError((e) => logFailure(ctx, e)),
      Effect.retry(reconnectPolicy(options)),
    )
    return { run, drain: drain(ctx) } as const
  })
