/**
 * The retry and backoff policies, defined once. Every retry, reconnect and pause in the three programs is one of
 * these Schedules: exponential from `base`, capped at `cap`, jittered (Effect's Random service, so tests drive it
 * with TestClock and a seeded Random instead of sleeping), optionally bounded by a total time budget.
 */
import { type Duration, Schedule } from "effect"

export interface BackoffOptions {
  /** First delay. */
  readonly base: Duration.DurationInput
  /** Largest delay between two tries. */
  readonly cap: Duration.DurationInput
  /** Stop retrying once this much time has passed since the first try (retries forever when absent). */
  readonly budget?: Duration.DurationInput
}

/** Exponential, capped and jittered (each delay ×0.8–1.2); forever, or until `budget` has passed. */
export const backoff = (options: BackoffOptions): Schedule.Schedule<unknown> => {
  const capped = Schedule.exponential(options.base).pipe(
    Schedule.union(Schedule.spaced(options.cap)),
    Schedule.jittered,
  )
  return options.budget === undefined ? capped : capped.pipe(Schedule.upTo(options.budget))
}

/** `backoff` that starts again from `base` once it has not fired for `reset` (a reconnect that held a while). */
export const backoffWithReset = (
  options: BackoffOptions & { readonly reset: Duration.DurationInput },
): Schedule.Schedule<unknown> => backoff(options).pipe(Schedule.resetAfter(options.reset))
