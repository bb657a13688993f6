/**
 * Budget: bounded memory for bytes received from clients and not yet acknowledged by Kafka.
 * Two semaphores whose permits are bytes: one for the process, one per stream. A stream takes
 * permits for each message before it reads the next one, and gives them back when Kafka acked (or
 * refused) the message's events. So while Kafka is slow a stream waits for its own budget without
 * reading (grpc-js stops pulling from HTTP/2, whose flow control holds the client back) instead
 * of queueing; when the process budget stays exhausted longer than `wait`, the message is refused
 * with Overloaded (RESOURCE_EXHAUSTED at the edge).
 */
import { Context, Duration, Effect, Layer, type Scope } from "effect"
import { Overloaded } from "../domain/Errors.js"
import * as M from "./IngesterMetrics.js"

export interface BudgetOptions {
  /** Bytes in flight for the whole process. */
  readonly processBytes: number
  /** Bytes in flight per stream (at most processBytes). */
  readonly streamBytes: number
  /** How long a message may wait for the process budget before it is refused. */
  readonly wait: Duration.DurationInput
}

export interface StreamBudget {
  /**
   * Takes `bytes` from this stream's budget (waiting while the stream's own earlier messages are in
   * flight) and then from the process budget (failing with Overloaded after `wait`).
   */
  readonly acquire: (bytes: number) => Effect.Effect<void, Overloaded>
  readonly release: (bytes: number) => Effect.Effect<void>
}

export class Budget extends Context.Tag("spillway/Budget")<
  Budget,
  {
    readonly options: BudgetOptions
    /** A budget for one stream; whatever it still holds is given back when the scope closes. */
    readonly stream: Effect.Effect<StreamBudget, never, Scope.Scope>
  }
>() {
  static readonly layer = (options: BudgetOptions): Layer.Layer<Budget> => Layer.effect(Budget, make(options))
}

export const make = (options: BudgetOptions) =>
  Effect.gen(function* () {
    const streamBytes = Math.min(options.streamBytes, options.processBytes)
    const wait = Duration.decode(options.wait)
    const process = yield* Effect.makeSemaphore(options.processBytes)
    /** Permits of `process` not taken (a waiter's are counted once it has them). */
    let processFree = options.processBytes

    const stream = Effect.gen(function* () {
      const mine = yield* Effect.makeSemaphore(streamBytes)
      let held = 0
      const release = (bytes: number) =>
        Effect.gen(function* () {
          const n = Math.min(bytes, held)
          if (n <= 0) return
          held -= n
          processFree += n
          yield* process.release(n)
          yield* mine.release(n)
          yield* Effect.sync(() => M.inFlightBytes.dec(n))
        })
      const acquire = (bytes: number) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.gen(function* () {
            const n = Math.max(1, bytes)
            if (n > streamBytes)
              return yield* new Overloaded({
                detail: `a message of ${n} bytes exceeds the per-stream budget of ${streamBytes} bytes`,
              })
            yield* restore(mine.take(n))
            if (processFree >= n) {
              // Fast path: the permits are there, take them without arming a timer.
              processFree -= n
              yield* process.take(n)
            } else {
              const got = yield* restore(process.take(n)).pipe(
                Effect.timeoutOption(wait),
                Effect.onInterrupt(() => mine.release(n)),
              )
              if (got._tag === "None") {
                yield* mine.release(n)
                return yield* new Overloaded({
                  detail: `the ingester's memory budget (${options.processBytes} bytes in flight) stayed exhausted for ${Duration.format(wait)}; retry later`,
                })
              }
              processFree -= n
            }
            held += n
            yield* Effect.sync(() => M.inFlightBytes.inc(n))
          }),
        )
      yield* Effect.addFinalizer(() => release(held))
      return { acquire, release } satisfies StreamBudget
    })

    return { options: { ...options, streamBytes }, stream }
  })
