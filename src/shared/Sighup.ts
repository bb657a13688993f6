/**
 * SIGHUP: "read your files again". Each component that loads a file (the tenants file, the token file, TLS
 * certificates) registers its reload with `onSighup`; one signal runs every registered reload. A reload that fails
 * keeps the version in force (each reload logs why). Without a listener Node would end the process on SIGHUP.
 */
import { Effect, Runtime, type Scope } from "effect"

/** Runs `reload` on every SIGHUP while the scope is open. */
export const onSighup = (name: string, reload: Effect.Effect<void>): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const listener = () => {
      runFork(
        Effect.logInfo("SIGHUP: reloading").pipe(
          Effect.zipRight(reload),
          Effect.catchAllCause((cause) => Effect.logError("SIGHUP reload failed; the version in force stays", cause)),
          Effect.annotateLogs({ reload: name }),
        ),
      )
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => process.on("SIGHUP", listener)),
      () => Effect.sync(() => process.off("SIGHUP", listener)),
    )
  })
