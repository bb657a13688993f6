/**
 * Pauses: how long a partition waits before it is read again, per partition, growing while it keeps failing. The
 * delays are those of the one backoff Schedule (src/shared/Retry.ts: exponential from `base`, capped at `cap`,
 * jittered through Effect's Random and Clock services), stepped by hand because the wait itself happens in the
 * consumer (a paused partition), not in the fiber that decided it.
 */
import { Clock, Duration, Effect } from "effect"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as Intervals from "effect/ScheduleIntervals"
import { backoff } from "../shared/Retry.js"

export interface Pauses {
  /** The next pause of `key` (a partition), one step further on its backoff. */
  readonly next: (key: string) => Effect.Effect<Duration.Duration>
  /** `key` delivered again: its next pause starts from `base`. */
  readonly reset: (key: string) => Effect.Effect<void>
}

/** Per partition state (at most one entry per partition this router was ever assigned). */
export const makePauses = (options: {
  readonly base: Duration.DurationInput
  readonly cap: Duration.DurationInput
}): Pauses => {
  const schedule = backoff(options)
  const cap = Duration.decode(options.cap)
  const states = new Map<string, unknown>()
  return {
    next: (key) =>
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        const state: unknown = states.has(key) ? states.get(key) : schedule.initial
        const [after, , decision] = yield* schedule.step(now, undefined, state)
        states.set(key, after)
        if (ScheduleDecision.isDone(decision)) return cap
        return Duration.millis(Math.max(0, Intervals.start(decision.intervals) - now))
      }),
    reset: (key) =>
      Effect.sync(() => {
        states.delete(key)
      }),
  }
}
