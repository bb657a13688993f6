/**
 * A wake-up signal: waiters take the current mark, check their condition, then wait for a notify after that mark;
 * `notify` bumps the mark and resumes the waiters, so a change between check and wait is not missed.
 *
 * Plain callbacks and one timer per wait, not a Deferred raced against a sleep (`timeoutTo` forks a fiber per wait):
 * the buffer notifies on every append and remove, tens of times a second, and each notify woke such a race.
 * The waiters are the fibers waiting (each removes itself when resumed or interrupted): bounded by the fibers.
 */
import { Duration, Effect } from "effect"

/** The signal's state at one moment (from `current`). */
export type SignalMark = number

export interface Signal {
  readonly notify: Effect.Effect<void>
  /** The same as `notify`, for synchronous code. */
  readonly notifySync: () => void
  /** Waits for a `notify` after `since` was taken, or `max` at most. */
  readonly wait: (since: SignalMark, max: Duration.DurationInput) => Effect.Effect<void>
  readonly current: Effect.Effect<SignalMark>
}

export const makeSignal: Effect.Effect<Signal> = Effect.sync(() => {
  let mark = 0
  const waiters = new Set<() => void>()
  const notifySync = () => {
    mark++
    if (waiters.size === 0) return
    const now = [...waiters]
    waiters.clear()
    for (const w of now) w()
  }
  return {
    current: Effect.sync(() => mark),
    notify: Effect.sync(notifySync),
    notifySync,
    wait: (since, max) =>
      Effect.async<void>((resume) => {
        if (mark !== since) return resume(Effect.void)
        const done = () => {
          clearTimeout(timer)
          waiters.delete(done)
          resume(Effect.void)
        }
        const timer = setTimeout(done, Math.max(0, Duration.toMillis(Duration.decode(max))))
        waiters.add(done)
        return Effect.sync(() => {
          clearTimeout(timer)
          waiters.delete(done)
        })
      }),
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
