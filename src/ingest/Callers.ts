/**
 * Who calls, and for how long they may: the access key's way from the `authorization` metadata through Auth to the
 * tenant (`authenticate`) and the caps on open streams (`StreamSlots`); what ends an open stream is
 * `StreamGuards.ts`.
 */
import type * as grpc from "@grpc/grpc-js"
import { Effect, type Scope } from "effect"
import { type AuthError, Overloaded, type TenantNotFound } from "../domain/Errors.js"
import type { ConfigStore } from "../shared/ConfigStore.js"
import { inc, set } from "../shared/Metrics.js"
import type { Auth } from "./Auth.js"
import * as M from "./IngesterMetrics.js"
import type { Caller } from "./Records.js"

/** The one `authorization` value of a call (two or more count as none). */
export const bearerOf = (metadata: grpc.Metadata): string | undefined => {
  const values = metadata.get("authorization")
  if (values.length > 1) return ""
  return values.length === 1 && typeof values[0] === "string" ? values[0] : undefined
}

/** The token's claims (Auth) and the tenant of its access key (`sub`), counted by reason when refused. */
export const authenticate = (
  auth: Auth,
  configStore: ConfigStore["Type"],
  metadata: grpc.Metadata,
): Effect.Effect<Caller, AuthError | TenantNotFound> =>
  Effect.gen(function* () {
    const claims = yield* auth.authorize(bearerOf(metadata))
    const tenant = yield* configStore.get(claims.sub)
    return { claims, tenant }
  }).pipe(
    Effect.tapErrorTag("AuthError", (e) =>
      Effect.zipRight(
        inc(M.authFailures, 1, { reason: e.reason }),
        Effect.logWarning("refused a token").pipe(Effect.annotateLogs({ reason: e.reason })),
      ),
    ),
    Effect.tapErrorTag("TenantNotFound", () => inc(M.authFailures, 1, { reason: "unknown_tenant" })),
  )

export interface StreamLimits {
  /** Event streams open at once in the process. */
  readonly maxStreams: number
  /** Event streams open at once per access key. */
  readonly maxStreamsPerTenant: number
}

/** Counts open event streams; `take` refuses one past either cap with Overloaded (RESOURCE_EXHAUSTED). */
export const makeStreamSlots = (limits: StreamLimits) => {
  let open = 0
  const perTenant = new Map<string, number>()
  const take = (accessKey: string): Effect.Effect<void, Overloaded, Scope.Scope> =>
    Effect.acquireRelease(
      Effect.suspend(() => {
        const mine = perTenant.get(accessKey) ?? 0
        if (open >= limits.maxStreams || mine >= limits.maxStreamsPerTenant)
          return Effect.zipRight(
            inc(M.rejected, 1, { reason: "too_many_streams" }),
            Effect.fail(
              new Overloaded({
                detail:
                  open >= limits.maxStreams
                    ? `the ingester has ${limits.maxStreams} streams open; retry later`
                    : `this tenant has ${limits.maxStreamsPerTenant} streams open; retry later`,
              }),
            ),
          )
        open++
        perTenant.set(accessKey, mine + 1)
        return set(M.openStreams, open)
      }),
      () =>
        Effect.suspend(() => {
          open--
          const mine = (perTenant.get(accessKey) ?? 1) - 1
          if (mine <= 0) perTenant.delete(accessKey)
          else perTenant.set(accessKey, mine)
          return set(M.openStreams, open)
        }),
    )
  return { take }
}
export type StreamSlots = ReturnType<typeof makeStreamSlots>
