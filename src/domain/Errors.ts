/**
 * Tagged errors of the domain. They carry no gRPC or HTTP codes: the edges
 * (GrpcServer's status mapper, the router's dead-letter writer) map them.
 */
import { Data, Schema } from "effect"

/** Why a token was refused. Distinct for the operator; never echoes the token itself. */
export const AuthFailure = Schema.Literal(
  "missing_token",
  "malformed_token",
  "expired",
  "not_yet_valid",
  "bad_signature",
  "alg_not_allowed",
  "unknown_kid",
  "invalid_claims",
  /** `exp - iat` is longer than the ingester's maximum token lifetime. */
  "lifetime_too_long",
)
export type AuthFailure = typeof AuthFailure.Type

export class AuthError extends Schema.TaggedError<AuthError>()("AuthError", {
  reason: AuthFailure,
}) {}

/** The caller is authenticated but asks for another tenant's data. */
export class PermissionDenied extends Schema.TaggedError<PermissionDenied>()("PermissionDenied", {
  detail: Schema.String,
}) {}

export class TenantNotFound extends Schema.TaggedError<TenantNotFound>()("TenantNotFound", {
  accessKey: Schema.String,
}) {}

/** An event (or batch) that can never be accepted as it is. */
export class InvalidEvent extends Schema.TaggedError<InvalidEvent>()("InvalidEvent", {
  detail: Schema.String,
}) {}

/** Over a memory or size budget: the caller should slow down and retry. */
export class Overloaded extends Schema.TaggedError<Overloaded>()("Overloaded", {
  detail: Schema.String,
}) {}

/** Kafka (or another sink) could not take the events now; retrying later may work. */
export class SinkUnavailable extends Data.TaggedError("SinkUnavailable")<{
  readonly detail: string
  readonly cause?: unknown
}> {}

export const CryptoFailure = Schema.Literal("bad_key", "not_hex", "too_short", "auth_failed", "not_json")
export type CryptoFailure = typeof CryptoFailure.Type

export class CryptoError extends Schema.TaggedError<CryptoError>()("CryptoError", {
  reason: CryptoFailure,
}) {}

/** A configuration or tenants file that cannot be used; names the file and what is wrong. */
export class ConfigFileError extends Data.TaggedError("ConfigFileError")<{
  readonly path: string
  readonly detail: string
}> {
  override get message() {
    return `${this.path}: ${this.detail}`
  }
}

/** A destination (file, http) failed to take a batch. `retryable` false means it never will. */
export class DestinationError extends Data.TaggedError("DestinationError")<{
  readonly target: string
  readonly retryable: boolean
  readonly detail: string
  readonly cause?: unknown
}> {}
