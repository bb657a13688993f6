/**
 * What every RPC handler of the ingester shares: its dependencies (`RpcDeps`), opening an event stream (auth, a
 * stream slot, a budget, the guard that ends it), counting and printing accepted events, and ExchangeConfig.
 */
import type * as grpc from "@grpc/grpc-js"
import { type Deferred, Effect, Either, Redacted, Schema, type Scope } from "effect"
import { InvalidEvent, PermissionDenied } from "../domain/Errors.js"
import { type CheckedEvent, formatRfc3339Nano } from "../domain/Event.js"
import type { ConfigStore } from "../shared/ConfigStore.js"
import { inc } from "../shared/Metrics.js"
import type { WireConfig } from "../wire/Wire.js"
import type { Auth } from "./Auth.js"
import type { Budget, StreamBudget } from "./Budget.js"
import { authenticate, type StreamSlots } from "./Callers.js"
import type { RpcError } from "./GrpcStatus.js"
import * as M from "./IngesterMetrics.js"
import type { KafkaSink } from "./KafkaSink.js"
import { type Incoming, malformed } from "./Messages.js"
import type { Accepted, Caller } from "./Records.js"
import type { StreamGuards } from "./StreamGuards.js"

export interface RpcLimits {
  /** Larger events are dead-lettered. */
  readonly maxEventBytes: number
  /** SendEvent: events gathered into one Kafka send (events, bytes). */
  readonly batchEvents: number
  readonly batchBytes: number
  /** SendEventBatches: a batch with more events is refused (FAILURE ack). */
  readonly maxEventsPerBatch: number
  readonly printEvents: boolean
}

export interface RpcDeps {
  readonly auth: Auth
  readonly configStore: ConfigStore["Type"]
  readonly sink: KafkaSink["Type"]
  readonly budget: Budget["Type"]
  readonly slots: StreamSlots
  /** What ends open streams (one subscription to the tenants file for all of them). */
  readonly guards: StreamGuards
  /** Completed when the server starts shutting down. */
  readonly draining: Deferred.Deferred<void>
  readonly limits: RpcLimits
}

export interface OpenStream {
  readonly caller: Caller
  readonly budget: StreamBudget
  /** Fails when the stream must end (token expired, tenant removed or changed); never succeeds. */
  readonly guard: Effect.Effect<never, RpcError>
}

/** Authenticates an event stream and takes its slot and budget (given back when the scope closes). */
export const openStream = (deps: RpcDeps, metadata: grpc.Metadata): Effect.Effect<OpenStream, RpcError, Scope.Scope> =>
  Effect.gen(function* () {
    const caller = yield* authenticate(deps.auth, deps.configStore, metadata)
    yield* deps.slots.take(caller.claims.sub)
    const budget = yield* deps.budget.stream
    return { caller, budget, guard: deps.guards.guard(caller) }
  })

export const crossTenant = (e: PermissionDenied) =>
  Effect.zipRight(inc(M.authFailures, 1, { reason: "cross_tenant" }), Effect.fail(e))

export const ack = (rpc: string, status: string) => inc(M.acks, 1, { rpc, status })
export const reject = (reason: string) => inc(M.rejected, 1, { reason })

const printEvents = (checked: ReadonlyArray<CheckedEvent>) =>
  Effect.sync(() => {
    for (const e of checked)
      process.stdout.write(
        `${JSON.stringify({
          timestamp: formatRfc3339Nano(e.timestamp),
          agent_id: e.agentId,
          tag: e.tag,
          UserID: e.userId,
          event_id: e.eventId,
          message: e.message,
        })}\n`,
      )
  })

/** Counts accepted events and dead letters of one Kafka send; prints the events with --print-events. */
export const counted = (caller: Caller, accepted: ReadonlyArray<Accepted>, bytes: number) =>
  Effect.sync(() => {
    let events = 0
    for (const a of accepted) {
      events += a.records.length - a.deadLetters.length
      for (const reason of a.deadLetters) M.deadLetters.inc({ reason })
    }
    M.eventsIn.inc({ user_id: caller.tenant.UserID }, events)
    M.bytesIn.inc({ user_id: caller.tenant.UserID }, bytes)
  }).pipe(
    Effect.zipRight(
      Effect.forEach(accepted, (a) => (a.checked === undefined ? Effect.void : printEvents(a.checked)), {
        discard: true,
      }),
    ),
  )

const decodeAccessKeyRequest = Schema.decodeUnknownEither(
  Schema.Struct({ AccessKey: Schema.String.pipe(Schema.maxLength(1024)) }),
)

/** ExchangeConfig: the Config of the token's own access key only. */
export const exchangeConfig = (deps: RpcDeps, metadata: grpc.Metadata, request: Incoming) =>
  Effect.gen(function* () {
    const { claims, tenant } = yield* authenticate(deps.auth, deps.configStore, metadata)
    if (request.malformed !== undefined) return yield* malformed()
    const req = decodeAccessKeyRequest(request.value)
    if (Either.isLeft(req))
      return yield* new InvalidEvent({ detail: "the request must hold an AccessKey of at most 1024 characters" })
    if (req.right.AccessKey !== "" && req.right.AccessKey !== claims.sub)
      return yield* crossTenant(
        new PermissionDenied({ detail: "a token may only fetch the config of its own access key" }),
      )
    return {
      AccessKey: tenant.AccessKey,
      AccessToken: "",
      EncryptionKey: Redacted.value(tenant.EncryptionKey),
      UserID: tenant.UserID,
    } satisfies WireConfig
  })
