/**
 * Budget: bounded memory for bytes received from clients and not yet acknowledged by Kafka.
 * Two pools of bytes: one for the process, one per stream. A stream takes bytes for each message before it reads
 * the next one, and gives them back when Kafka acked (or refused) the message's events. So while Kafka is slow a
 * stream waits for its own budget without reading (grpc-js stops pulling from HTTP/2, whose flow control holds
 * the client back) instead of queueing; when the process budget stays exhausted longer than `wait`, the message is
 * refused with Overloaded (RESOURCE_EXHAUSTED at the edge).
 *
 * The pools are plain counters with a list of waiters (at most one per stream: a stream takes for one message at a
 * time), so taking bytes that are there is a synchronous `tryAcquire` (the SendEvent path takes them per message,
 * without an effect each); `acquire` is the effect that waits.
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
  /** Takes `bytes` at once if both budgets have them and nobody waits for them; else takes nothing. */
  readonly tryAcquire: (bytes: number) => boolean
  readonly release: (bytes: number) => Effect.Effect<void>
  /** `release`, synchronously. */
  readonly releaseSync: (bytes: number) => void
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

interface Waiter {
  readonly n: number
  granted: boolean
  readonly wake: () => void
}

/** Bytes free and who waits for them (first come, first served: a large take is not starved by small ones). */
class Pool {
  private readonly waiters: Array<Waiter> = []
  constructor(public free: number) {}

  tryTake(n: number): boolean {
    if (this.waiters.length > 0 || this.free < n) return false
    this.free -= n
    return true
  }

  give(n: number): void {
    this.free += n
    while (this.waiters.length > 0 && this.free >= this.waiters[0]!.n) {
      const w = this.waiters.shift()!
      this.free -= w.n
      w.granted = true
      w.wake()
    }
  }

  /** Waits for `n` bytes; interrupted, it takes none (or gives back what it was granted meanwhile). */
  take(n: number): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      if (this.tryTake(n)) return resume(Effect.void)
      const w: Waiter = { n, granted: false, wake: () => resume(Effect.void) }
      this.waiters.push(w)
      return Effect.sync(() => {
        if (w.granted) this.give(n)
        else this.waiters.splice(this.waiters.indexOf(w), 1)
      })
    })
  }
}

export const make = (options: BudgetOptions) =>
  Effect.sync(() => {
    const streamBytes = Math.min(options.streamBytes, options.processBytes)
    const wait = Duration.decode(options.wait)
    const process = new Pool(options.processBytes)

    const stream = Effect.gen(function* () {
      const mine = new Pool(streamBytes)
      let held = 0
      const releaseSync = (bytes: number) => {
        const n = Math.min(bytes, held)
        if (n <= 0) return
        held -= n
        process.give(n)
        mine.give(n)
        M.inFlightBytes.dec(n)
      }
      const took = (n: number) => {
        held += n
        M.inFlightBytes.inc(n)
      }
      const tryAcquire = (bytes: number) => {
        const n = Math.max(1, bytes)
        if (n > streamBytes || !mine.tryTake(n)) return false
        if (process.tryTake(n)) {
          took(n)
          return true
        }
        mine.give(n)
        return false
      }
      const acquire = (bytes: number) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.gen(function* () {
            const n = Math.max(1, bytes)
            if (n > streamBytes)
              return yield* new Overloaded({
                detail: `a message of ${n} bytes exceeds the per-stream budget of ${streamBytes} bytes`,
              })
            yield* restore(mine.take(n))
            const got =
              process.tryTake(n) ||
              (yield* restore(process.take(n)).pipe(
                Effect.timeoutOption(wait),
                Effect.onInterrupt(() => Effect.sync(() => mine.give(n))),
                Effect.map((o) => o._tag === "Some"),
              ))
            if (!got) {
              mine.give(n)
              return yield* new Overloaded({
                detail: `the ingester's memory budget (${options.processBytes} bytes in flight) stayed exhausted for ${Duration.format(wait)}; retry later`,
              })
            }
            took(n)
          }),
        )
      const release = (bytes: number) => Effect.sync(() => releaseSync(bytes))
      yield* Effect.addFinalizer(() => release(held))
      return { acquire, tryAcquire, release, releaseSync } satisfies StreamBudget
    })

    return { options: { ...options, streamBytes }, stream }
  })
