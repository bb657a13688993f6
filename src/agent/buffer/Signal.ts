/**
 * A wake-up signal: waiters take the current Deferred, check their condition, then await it;
 * `notify` completes it and installs a fresh one, so a change between check and wait is not missed.
 */
import { Deferred, type Duration, Effect, Ref } from "effect"

export interface Signal {
  readonly notify: Effect.Effect<void>
  /** Waits for a `notify` after `since` was taken, or `max` at most. */
  readonly wait: (since: Deferred.Deferred<void>, max: Duration.DurationInput) => Effect.Effect<void>
  readonly current: Effect.Effect<Deferred.Deferred<void>>
}

export const makeSignal: Effect.Effect<Signal> = Effect.gen(function* () {
  const ref = yield* Ref.make(yield* Deferred.make<void>())
  return {
    current: Ref.get(ref),
    notify: Effect.gen(function* () {
      const next = yield* Deferred.make<void>()
      const prev = yield* Ref.getAndSet(ref, next)
      yield* Deferred.succeed(prev, undefined)
    }),
    wait: (since, max) =>
      Deferred.await(since).pipe(
        Effect.timeoutTo({ duration: max, onTimeout: () => undefined, onSuccess: () => undefined }),
      ),
  }
})

/** Waits until `cond` holds, re-checking on every notify (and every `poll` at least). */
export const waitUntil = (signal: Signal, cond: () => boolean, poll: Duration.DurationInput = "250 millis") =>
  Effect.gen(function* () {
    const since = yield* signal.current
    if (cond()) return true
    yield* signal.wait(since, poll)
    return false
  }).pipe(Effect.repeat({ until: (done) => done }), Effect.asVoid)
