/**
 * The one mapping from the ingester's domain errors to gRPC statuses. Domain errors carry no gRPC codes; the RPC
 * handlers call `toStatus` (a call's outcome) or `statusOf` (one batch's failure ack). No status detail ever holds
 * a received value: the details are fixed words, reasons from closed lists and sizes. `interruptOnCancel`: a
 * call's fiber ends when its client cancels (every gRPC handler of the ingester and its OTLP receiver).
 */
import * as grpc from "@grpc/grpc-js"
import { Cause, type Fiber, Match, Option } from "effect"
import type {
  AuthError,
  InvalidEvent,
  Overloaded,
  PermissionDenied,
  SinkUnavailable,
  TenantNotFound,
} from "../domain/Errors.js"

export type RpcError = AuthError | PermissionDenied | TenantNotFound | InvalidEvent | Overloaded | SinkUnavailable

export interface Status {
  readonly code: grpc.status
  readonly details: string
}

/** The status of one expected failure. */
export const statusOf = (e: RpcError): Status =>
  Match.value(e).pipe(
    Match.tagsExhaustive({
      AuthError: (e) => ({ code: grpc.status.UNAUTHENTICATED, details: `unauthenticated: ${e.reason}` }),
      PermissionDenied: (e) => ({ code: grpc.status.PERMISSION_DENIED, details: e.detail }),
      TenantNotFound: () => ({
        code: grpc.status.NOT_FOUND,
        details: "the token's access key is not a known tenant",
      }),
      InvalidEvent: (e) => ({ code: grpc.status.INVALID_ARGUMENT, details: e.detail }),
      Overloaded: (e) => ({ code: grpc.status.RESOURCE_EXHAUSTED, details: e.detail }),
      SinkUnavailable: (e) => ({
        code: grpc.status.UNAVAILABLE,
        details: `events not stored, retry later: ${e.detail}`,
      }),
    }),
  )

/** The status of a call's outcome. Defects reveal nothing. */
export const toStatus = (cause: Cause.Cause<RpcError>): Status => {
  const failure = Cause.failureOption(cause)
  if (Option.isNone(failure))
    return Cause.isInterruptedOnly(cause)
      ? { code: grpc.status.UNAVAILABLE, details: "the ingester is shutting down or the call was cancelled" }
      : { code: grpc.status.INTERNAL, details: "internal error" }
  return statusOf(failure.value)
}

/** The `reason` label of `spillway_ingester_rejected_total` for a failure. */
export const rejectReason = (e: RpcError): string =>
  Match.value(e).pipe(
    Match.tagsExhaustive({
      AuthError: () => "unauthenticated",
      PermissionDenied: () => "permission_denied",
      TenantNotFound: () => "unknown_tenant",
      InvalidEvent: () => "invalid",
      Overloaded: () => "overloaded",
      SinkUnavailable: () => "unavailable",
    }),
  )

/**
 * Interrupts the call's fiber when the client cancels. grpc-js also emits "cancelled" after every call it answered
 * (its sendStatus marks the call cancelled), when the fiber is done: an interruption sent then cost a done fiber's
 * interrupt handling on every call (docs/benchmarks.md, "SendEvent's per-call work").
 */
export const interruptOnCancel = (
  call: { on: (event: "cancelled", f: () => void) => unknown },
  fiber: Fiber.RuntimeFiber<unknown, unknown>,
) =>
  call.on("cancelled", () => {
    if (fiber.unsafePoll() === null) fiber.unsafeInterruptAsFork(fiber.id())
  })
