/**
 * What ends an open event stream (`guard`): the token's `exp` plus the clock skew (AuthError expired), the tenant
 * leaving the tenants file (TenantNotFound) or its entry changing (SinkUnavailable: reconnect, fetch the new config).
 *
 * One subscription to the tenants file serves every open stream of the process (`makeStreamGuards`, scoped): each
 * guard is one callback in a set (at most one per open stream, so bounded by the stream slots) and one timer. A
 * subscription, a Stream and two raced fibers per stream cost about 0.4 CPU-s per 100k SendEvent events of
 * 500-event streams (docs/benchmarks.md, "SendEvent's per-stream and per-message work").
 */
import { Effect, Redacted, type Scope, Stream } from "effect"
import { AuthError, SinkUnavailable, TenantNotFound } from "../domain/Errors.js"
import type { Tenant, TenantsFile } from "../domain/Tenant.js"
import type { ConfigStore } from "../shared/ConfigStore.js"
import type { Caller } from "./Records.js"

export type GuardError = AuthError | TenantNotFound | SinkUnavailable

export interface StreamGuards {
  /** Fails when the caller may no longer send; never succeeds. */
  readonly guard: (caller: Caller) => Effect.Effect<never, GuardError>
  /**
   * `guard` as a callback: `end` is called once (at once if the caller may not send now) unless the returned stop
   * is called first. No fiber: SendEvent's call per batch waits for its sends and this in one Deferred.
   */
  readonly watch: (caller: Caller, end: (e: GuardError) => void) => () => void
}

const sameTenant = (a: Tenant | undefined, b: Tenant) =>
  a !== undefined &&
  a.AccessKey === b.AccessKey &&
  a.UserID === b.UserID &&
  Redacted.value(a.EncryptionKey) === Redacted.value(b.EncryptionKey)

/** Why `caller` may no longer send under `file`, or undefined while it may. */
const refusal = (file: TenantsFile, caller: Caller): GuardError | undefined => {
  const key = caller.claims.sub
  const t = Object.hasOwn(file, key) ? file[key] : undefined
  if (sameTenant(t, caller.tenant)) return undefined
  return t === undefined
    ? new TenantNotFound({ accessKey: key })
    : new SinkUnavailable({ detail: "the tenant's configuration changed; reconnect" })
}

/** setTimeout's longest delay; a token may live longer (30 days by default), so the timer is set again. */
const MAX_TIMER_MS = 2 ** 31 - 1

interface Watcher {
  readonly caller: Caller
  readonly end: (e: GuardError) => void
}

/** The guards of one server: its one subscription to the tenants file runs until the scope closes. */
export const makeStreamGuards = (
  configStore: ConfigStore["Type"],
  clockSkewSeconds: number,
): Effect.Effect<StreamGuards, never, Scope.Scope> =>
  Effect.gen(function* () {
    let latest: TenantsFile = yield* configStore.current
    const watchers = new Set<Watcher>()
    yield* Effect.forkScoped(
      Stream.runForEach(configStore.changes, (file) =>
        Effect.sync(() => {
          latest = file
          for (const w of watchers) {
            const e = refusal(file, w.caller)
            if (e !== undefined) w.end(e)
          }
        }),
      ),
    )
    const watch = (caller: Caller, end: (e: GuardError) => void): (() => void) => {
      const now = refusal(latest, caller)
      if (now !== undefined) {
        end(now)
        return () => {}
      }
      let timer: ReturnType<typeof setTimeout> | undefined
      const stop = () => {
        watchers.delete(w)
        if (timer !== undefined) clearTimeout(timer)
        timer = undefined
      }
      const w: Watcher = {
        caller,
        end: (e) => {
          stop()
          end(e)
        },
      }
      const until = (caller.claims.exp + clockSkewSeconds) * 1000
      const arm = () => {
        const left = until - Date.now()
        if (left <= 0) return w.end(new AuthError({ reason: "expired" }))
        timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS))
      }
      watchers.add(w)
      arm()
      return stop
    }
    const guard = (caller: Caller): Effect.Effect<never, GuardError> =>
      Effect.async<never, GuardError>((resume) => {
        const stop = watch(caller, (e) => resume(Effect.fail(e)))
        return Effect.sync(stop)
      })
    return { guard, watch }
  })
