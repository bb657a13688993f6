/**
 * One OTLP logs export, whichever transport carried it (gRPC or HTTP): authenticate the bearer token, check the
 * request with effect/Schema and its record count, wait for room in the in-flight budget, make the Kafka records and
 * publish them through KafkaSink. It succeeds only once Kafka acknowledged every record; records that can never be
 * accepted are reported (`rejected`) and not written.
 */
import { Duration, Effect, Either, Option } from "effect"
import {
  type AuthError,
  InvalidEvent,
  Overloaded,
  type SinkUnavailable,
  type TenantNotFound,
} from "../../domain/Errors.js"
import type { ConfigStore } from "../../shared/ConfigStore.js"
import type { Auth } from "../Auth.js"
import type { KafkaSink } from "../KafkaSink.js"
import {
  countRecords,
  countRequest,
  type ReceiverName,
  type RequestResult,
  type TenantKey,
  tenantOfBearer,
} from "../receivers/TenantRecords.js"
import type { DecodedBody, ExportResult } from "./OtlpCodec.js"
import { countLogRecords, decodeExportRequest, toRecords } from "./OtlpLogs.js"

export interface OtlpLimits {
  /** Larger request bodies are refused before they are decoded (gRPC RESOURCE_EXHAUSTED, HTTP 413). Default 8 MiB. */
  readonly maxRequestBytes?: number
  /** Requests with more log records are refused (INVALID_ARGUMENT / 400). Default 50,000. */
  readonly maxRecordsPerRequest?: number
  /** A record whose event is larger can never be accepted: it is reported in partial_success. Default 1,000,000. */
  readonly maxEventBytes?: number
  /** Request bytes being converted or waiting for Kafka, over both transports. Default 64 MiB. */
  readonly maxInFlightBytes?: number
  /** How long a request waits for room in that budget before it is refused as retryable. Default 5 s. */
  readonly inFlightWait?: Duration.DurationInput
}

export const otlpDefaults = {
  maxRequestBytes: 8 * 1024 * 1024,
  maxRecordsPerRequest: 50_000,
  maxEventBytes: 1_000_000,
  maxInFlightBytes: 64 * 1024 * 1024,
  inFlightWait: Duration.seconds(5),
} as const

export type ResolvedLimits = {
  readonly [K in keyof typeof otlpDefaults]: K extends "inFlightWait" ? Duration.Duration : number
}

export const resolveLimits = (l: OtlpLimits | undefined): ResolvedLimits => {
  const maxRequestBytes = l?.maxRequestBytes ?? otlpDefaults.maxRequestBytes
  return {
    maxRequestBytes,
    maxRecordsPerRequest: l?.maxRecordsPerRequest ?? otlpDefaults.maxRecordsPerRequest,
    maxEventBytes: l?.maxEventBytes ?? otlpDefaults.maxEventBytes,
    maxInFlightBytes: Math.max(maxRequestBytes, l?.maxInFlightBytes ?? otlpDefaults.maxInFlightBytes),
    inFlightWait: Duration.decode(l?.inFlightWait ?? otlpDefaults.inFlightWait),
  }
}

export type ExportError = AuthError | TenantNotFound | InvalidEvent | Overloaded | SinkUnavailable

const resultOf = (e: ExportError): RequestResult => {
  switch (e._tag) {
    case "AuthError":
    case "TenantNotFound":
      return "unauthenticated"
    case "InvalidEvent":
      return "invalid"
    case "Overloaded":
      return "overloaded"
    case "SinkUnavailable":
      return "unavailable"
  }
}

export type Exporter = (
  receiver: ReceiverName,
  authorization: string | undefined,
  /** Decodes the body (called after authentication, holding the budget); Left: why it cannot be decoded. */
  decode: () => Either.Either<DecodedBody, string>,
  size: number,
) => Effect.Effect<ExportResult, ExportError>

export const makeExporter = (
  auth: Auth,
  store: ConfigStore["Type"],
  sink: KafkaSink["Type"],
  limits: ResolvedLimits,
): Effect.Effect<Exporter> =>
  Effect.gen(function* () {
    const budget = yield* Effect.makeSemaphore(limits.maxInFlightBytes)

    /** Runs `use` holding `bytes` of the budget; Overloaded when no room came within the wait. */
    const withBudget = <A, E>(bytes: number, use: Effect.Effect<A, E>) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function* () {
          const n = Math.min(Math.max(1, bytes), limits.maxInFlightBytes)
          const got = yield* restore(budget.take(n)).pipe(Effect.timeoutOption(limits.inFlightWait))
          if (Option.isNone(got))
            return yield* new Overloaded({ detail: "the receiver's in-flight budget is full; retry later" })
          return yield* restore(use).pipe(Effect.ensuring(budget.release(n)))
        }),
      )

    /** Decodes and checks the body, then converts and publishes it (run holding the budget). */
    const store_ = (receiver: ReceiverName, tk: TenantKey, decode: () => Either.Either<DecodedBody, string>) =>
      Effect.gen(function* () {
        const body = decode()
        if (Either.isLeft(body)) return yield* new InvalidEvent({ detail: body.left })
        const decoded = decodeExportRequest(body.right.value)
        if (Either.isLeft(decoded)) return yield* new InvalidEvent({ detail: decoded.left })
        const request = decoded.right
        if (countLogRecords(request) > limits.maxRecordsPerRequest)
          return yield* new InvalidEvent({
            detail: `a request may hold at most ${limits.maxRecordsPerRequest} log records`,
          })
        const now = BigInt(Date.now()) * 1_000_000n
        const { records, rejected } = toRecords(request, body.right.ids, tk, now, limits.maxEventBytes)
        yield* sink.publishRecords(records)
        yield* countRecords(receiver, records.length, rejected)
        if (rejected > 0)
          yield* Effect.logWarning("OTLP log records rejected").pipe(
            Effect.annotateLogs({ receiver, rejected, tenant: tk.tenant.UserID }),
          )
        return {
          rejected,
          errorMessage:
            rejected === 0
              ? ""
              : `${rejected} log record(s) exceed the event size limit of ${limits.maxEventBytes} bytes`,
        } satisfies ExportResult
      })

    // Authenticate first; decode only once the request holds its share of the budget (decoded objects are several
    // times the size of their bytes, so at most the budget's worth of requests is decoded at a time).
    const exportLogs: Exporter = (receiver, authorization, decode, size) =>
      Effect.gen(function* () {
        const tk = yield* tenantOfBearer(auth, store, authorization)
        return yield* withBudget(size, store_(receiver, tk, decode))
      }).pipe(
        Effect.tap((r) => countRequest(receiver, r.rejected === 0 ? "ok" : "partial")),
        Effect.tapError((e) => countRequest(receiver, resultOf(e))),
        Effect.tapErrorTag("AuthError", (e) =>
          Effect.logWarning("OTLP export refused a token").pipe(Effect.annotateLogs({ receiver, reason: e.reason })),
        ),
      )
    return exportLogs
  })
