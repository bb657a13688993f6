/**
 * Health: named readiness checks that components register while they build; `/readyz` runs them.
 */
import { Effect, Ref } from "effect"

export interface CheckResult {
  readonly name: string
  readonly ok: boolean
}

export class Health extends Effect.Service<Health>()("spillway/Health", {
  effect: Effect.gen(function* () {
    const checks = yield* Ref.make<ReadonlyArray<{ name: string; check: Effect.Effect<boolean> }>>([])
    return {
      /** Adds a check; a check that fails, dies or takes over 2 s counts as not ready. */
      register: (name: string, check: Effect.Effect<boolean>) => Ref.update(checks, (cs) => [...cs, { name, check }]),
      /** Runs every check. */
      check: Effect.gen(function* () {
        const cs = yield* Ref.get(checks)
        return yield* Effect.forEach(
          cs,
          ({ name, check }) =>
            check.pipe(
              Effect.timeoutTo({ duration: "2 seconds", onTimeout: () => false, onSuccess: (ok) => ok }),
              Effect.catchAllCause(() => Effect.succeed(false)),
              Effect.map((ok): CheckResult => ({ name, ok })),
            ),
          { concurrency: 4 },
        )
      }),
    }
  }),
}) {}
