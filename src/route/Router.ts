/**
 * Router: takes record batches from the EventStream, decodes them as Events, optionally decrypts
 * their `message`, and delivers each tenant's events to its targets, one call per destination
 * per batch. Offsets move only after every destination of every event up to them succeeded.
 *
 * A batch, in order:
 * 1. decode every record (effect/Schema, RouterLines.ts), decrypt and format it, synchronously for the
 *    whole batch (no Effect per record; tenants' keys parsed once per tenants file); poison
 *    (undecodable, unknown tenant, undecryptable) becomes a dead letter;
 * 2. publish the dead letters (retrying until Kafka takes them: a poison record is never skipped silently);
 * 3. deliver each destination's lines concurrently, each on its own retry budget (exponential,
 *    jittered, capped Schedule; only retryable errors are retried);
 * 4. a destination that refuses permanently (4xx) sends its events to the dead-letter topic;
 * 5. if every destination succeeded, commit the batch's last offset; if one ran out of budget,
 *    commit the records before the first event it did not take, and pause only this partition,
 *    rewound to that event, for a backoff that grows while it keeps failing (capped). The other
 *    partitions keep flowing; the events after the cut are delivered again (at least once). With a
 *    RetryTopic (docs/isolation.md), a destination failing past `isolateAfter` instead has its tenants'
 *    records written to the retry topic and the batch committed; a second stream (RetryStream) delivers
 *    them, and those tenants' later records follow them there until the retry path caught up.
 * 6. a record batch that cannot be decoded (BatchGuard.ts) is logged with its topic, partition and
 *    offset, counted, turns readiness red, and its partition is read again from it after a growing
 *    pause (never skipped).
 * The steps are in RouteBatch.ts; this module builds the router's context and runs the stream.
 */
import { Clock, Duration, Effect, FiberSet, Option, type Scope, Stream } from "effect"
import { ConfigStore } from "../shared/ConfigStore.js"
import { Crypto } from "../shared/Crypto.js"
import { DeadLetters } from "../shared/DeadLetter.js"
import { Health } from "../shared/Health.js"
import * as Metrics from "../shared/Metrics.js"
import { backoff } from "../shared/Retry.js"
import { Destinations } from "./Destinations.js"
import type { IsolationContext } from "./Divert.js"
import { type ConsumerCrashed, EventStream, type RecordBatch, RetryStream, type Undecodable } from "./EventStream.js"
import { makeIsolationState } from "./Isolation.js"
import { makePauses } from "./Pauses.js"
import { RetryTopic } from "./RetryTopic.js"
import { durationMillis, partitionKey, processBatch, type RouterContext, type Settled } from "./RouteBatch.js"
import { undecodableBatches } from "./RouterMetrics.js"

export {
  decodeRecord,
  formatLine,
  prepareRecords,
  type RoutedEvent,
  timestampOf,
} from "./RouterLines.js"

export interface RouterOptions {
  readonly decrypt: boolean
  readonly printEvents: boolean
  /** Per destination and batch: first retry delay, longest delay, and total time before giving up (pausing). */
  readonly retryBase: Duration.DurationInput
  readonly retryCap: Duration.DurationInput
  readonly retryBudget: Duration.DurationInput
  /** Partition pause after a destination ran out of budget: first pause and longest pause. */
  readonly pauseBase: Duration.DurationInput
  readonly pauseMax: Duration.DurationInput
  /** Batches processed at once (one per partition). */
  readonly concurrency: number
  /** With a RetryTopic provided: a target failing this long has its tenants' events set aside (docs/isolation.md). */
  readonly isolateAfter: Duration.DurationInput
  /** Longest a source partition waits, per diversion, for the retry path to catch up before a tenant goes direct. */
  readonly drainMax: Duration.DurationInput
}

export const defaultRouterOptions: RouterOptions = {
  decrypt: false,
  printEvents: false,
  retryBase: "200 millis",
  retryCap: "5 seconds",
  retryBudget: "20 seconds",
  pauseBase: "1 second",
  pauseMax: "1 minute",
  concurrency: 4,
  isolateAfter: "5 seconds",
  drainMax: "10 seconds",
}

/** How long readiness stays red after an undecodable batch was last seen (beyond its pause). */
const undecodableGrace = Duration.seconds(30)

/** The router's context, built once; `processBatch`, `handleBatch` take it. */
export const makeRouter = (options: RouterOptions) =>
  Effect.gen(function* () {
    const retry = yield* Effect.serviceOption(RetryTopic)
    const isolation: IsolationContext | undefined = Option.isNone(retry)
      ? undefined
      : {
          state: makeIsolationState({
            isolateAfterMs: Duration.toMillis(Duration.decode(options.isolateAfter)),
            drainMaxMs: Duration.toMillis(Duration.decode(options.drainMax)),
          }),
          retry: retry.value,
          drainPause: "200 millis",
          snapshot: { at: Number.NEGATIVE_INFINITY, committed: undefined },
          scanned: new Map(),
        }
    const ctx: RouterContext = {
      mode: "source",
      isolation,
      decrypt: options.decrypt,
      printEvents: options.printEvents,
      store: yield* ConfigStore,
      crypto: yield* Crypto,
      destinations: yield* Destinations,
      deadLetters: yield* DeadLetters,
      pauses: makePauses({ base: options.pauseBase, cap: options.pauseMax }),
      deliveryPolicy: backoff({ base: options.retryBase, cap: options.retryCap, budget: options.retryBudget }),
      letterPolicy: backoff({ base: "200 millis", cap: "10 seconds" }),
      state: { stopping: false, keys: undefined },
    }
    /** Partitions held by an undecodable batch, until when they keep readiness red. */
    const held = new Map<string, number>()
    /** The batches being handled, at most `concurrency` per stream (removed when handled, whatever happened). */
    const running = new Set<RecordBatch>()
    const retryCtx: RouterContext = { ...ctx, mode: "retry" }
    return {
      processBatch: (batch: RecordBatch) => processBatch(ctx, batch),
      handle: (batch: RecordBatch) => handleBatch(ctx, held, batch, running),
      /** A batch of the retry topic: delivered, paused while its head tenant's destination fails, never diverted. */
      handleRetry: (batch: RecordBatch) => handleBatch(retryCtx, held, batch, running),
      /**
       * Every 3 seconds, a heartbeat for each batch being handled (kafkajs sends it only when its interval is due),
       * so a batch whose destination retries for long keeps the member in its group. One fiber for the router,
       * forked by `runRouter`, instead of one per batch (about 60 µs a batch; docs/benchmarks.md, "Round 2
       * session 11").
       */
      heartbeats: Effect.sleep("3 seconds").pipe(
        Effect.zipRight(Effect.suspend(() => Effect.forEach([...running], (b) => b.heartbeat, { discard: true }))),
        Effect.forever,
      ),
      isolation,
      /** Set at shutdown: destinations stop retrying, so the batches in flight end (commit their prefix) quickly. */
      stop: Effect.sync(() => {
        ctx.state.stopping = true
      }),
      /** False while a partition is held by a batch that cannot be decoded. */
      ready: Effect.map(Clock.currentTimeMillis, (now) => {
        for (const [key, until] of held) if (until <= now) held.delete(key)
        return held.size === 0
      }),
    } as const
  })

/**
 * A batch that cannot be decoded: logged with where it is and why, counted, readiness red, and the partition read
 * again from it after a growing pause.
 */
const holdUndecodable = (ctx: RouterContext, held: Map<string, number>, batch: RecordBatch, bad: Undecodable) =>
  Effect.gen(function* () {
    if (yield* batch.isStale) return
    const key = partitionKey(batch)
    const pause = yield* ctx.pauses.next(key)
    const now = yield* Clock.currentTimeMillis
    held.set(key, now + durationMillis(pause) + Duration.toMillis(undecodableGrace))
    yield* Metrics.inc(undecodableBatches, 1, { topic: batch.topic, partition: batch.partition })
    yield* Effect.logError("a record batch cannot be decoded; the partition is read again from it after a pause").pipe(
      Effect.annotateLogs({ offset: bad.offset, reason: bad.reason, retryInMs: durationMillis(pause) }),
    )
    yield* batch.retryFrom(bad.offset, pause)
  })

/**
 * One batch from the stream: its records routed (in `running` meanwhile, for the router's heartbeats), then the
 * undecodable batch after them, if any, held. A defect rewinds the batch instead of skipping it. Releases the batch
 * whatever happened.
 */
export const handleBatch = (
  ctx: RouterContext,
  held: Map<string, number>,
  batch: RecordBatch,
  running: Set<RecordBatch>,
): Effect.Effect<void> =>
  Effect.suspend(() => {
    running.add(batch)
    return Effect.gen(function* () {
      const settled: Settled = batch.records.length > 0 ? yield* processBatch(ctx, batch) : "committed"
      if (settled !== "committed") return
      if (batch.undecodable !== undefined) return yield* holdUndecodable(ctx, held, batch, batch.undecodable)
      held.delete(partitionKey(batch))
      yield* ctx.pauses.reset(partitionKey(batch))
    }).pipe(
      Effect.catchAllDefect((defect) =>
        Effect.gen(function* () {
          yield* Effect.logError("batch failed; it will be read again", defect)
          const first = batch.records[0]?.offset ?? batch.undecodable?.offset
          if (first !== undefined) yield* batch.retryFrom(first, yield* ctx.pauses.next(partitionKey(batch)))
        }),
      ),
      Effect.ensuring(Effect.sync(() => running.delete(batch))),
    )
  }).pipe(Effect.annotateLogs({ topic: batch.topic, partition: batch.partition }), Effect.ensuring(batch.done))

/**
 * Runs `f` on each element of `stream`, at most `n` at once and in no order, until the stream ends and the last
 * one is done; a defect of `f` ends it. What `Stream.mapEffect(f, { concurrency: n, unordered: true })` and
 * `Stream.runDrain` do, with a semaphore and a FiberSet (at most `n` fibers) instead of `mapEffect`'s channels per
 * element: about 8 µs an element against 130–170 on effect 3.22 (docs/benchmarks.md, "Round 2 session 11").
 */
export const forEachConcurrently = <A>(
  stream: Stream.Stream<A>,
  n: number,
  f: (a: A) => Effect.Effect<void>,
): Effect.Effect<void> =>
  Effect.scoped(
    Effect.gen(function* () {
      const permits = yield* Effect.makeSemaphore(n)
      const fibers = yield* FiberSet.make<void, never>()
      const all = Stream.runForEach(stream, (a) =>
        Effect.zipRight(permits.take(1), FiberSet.run(fibers, Effect.ensuring(f(a), permits.release(1)))),
      ).pipe(Effect.zipRight(FiberSet.awaitEmpty(fibers)))
      yield* Effect.raceFirst(all, FiberSet.join(fibers))
    }),
  )

/**
 * The router as a program: runs the batches of the EventStream through the processor in the
 * background and registers the consumer's readiness, then waits; it fails only if the consumer
 * crashed for good. When its scope closes (SIGTERM), it first drains the consumer (the batches in
 * flight finish, destinations stop retrying, their offsets are committed), then stops processing.
 */
export const runRouter = (
  options: RouterOptions,
): Effect.Effect<
  never,
  ConsumerCrashed,
  Scope.Scope | EventStream | ConfigStore | Crypto | Destinations | DeadLetters | Health
> =>
  Effect.gen(function* () {
    const stream = yield* EventStream
    const health = yield* Health
    yield* health.register("kafka-consumer", stream.ready)
    const { handle, handleRetry, heartbeats, stop, ready } = yield* makeRouter(options)
    yield* health.register("record-batches", ready)
    yield* Effect.forkScoped(heartbeats)
    yield* Effect.forkScoped(forEachConcurrently(stream.batches, options.concurrency, handle))
    const retry = yield* Effect.serviceOption(RetryStream)
    if (Option.isSome(retry)) {
      yield* health.register("retry-consumer", retry.value.ready)
      yield* Effect.forkScoped(forEachConcurrently(retry.value.batches, options.concurrency, handleRetry))
    }
    const drainRetry = Option.match(retry, { onNone: () => Effect.void, onSome: (r) => r.drain })
    // Added after the forks, so it runs before the processing fibers are interrupted.
    // Both consumers drain at once, so SIGTERM takes at most one SPILLWAY_ROUTER_DRAIN_TIMEOUT.
    yield* Effect.addFinalizer(() =>
      Effect.zipRight(stop, Effect.all([stream.drain, drainRetry], { concurrency: 2, discard: true })),
    )
    yield* Effect.logInfo("router started").pipe(
      Effect.annotateLogs({ decrypt: options.decrypt, printEvents: options.printEvents }),
    )
    return yield* Option.match(retry, {
      onNone: () => stream.crashed,
      onSome: (r) => Effect.raceFirst(stream.crashed, r.crashed),
    })
  })
