/**
 * OTLP/gRPC: `opentelemetry.proto.collector.logs.v1.LogsService/Export` on its own grpc-js server. The request is
 * decoded in the deserializer after grpc-js checked its size (`grpc.max_receive_message_length`); the answer is sent
 * once Kafka acknowledged every record. Statuses follow the OTLP spec's retry rules: UNAVAILABLE (retryable) when
 * Kafka or the in-flight budget cannot take the records now, INVALID_ARGUMENT / UNAUTHENTICATED / PERMISSION_DENIED
 * (not retryable) otherwise.
 */
import type * as net from "node:net"
import * as grpc from "@grpc/grpc-js"
import { Cause, Effect, Exit, FiberSet, Match, Option } from "effect"
import { interruptOnCancel } from "../GrpcStatus.js"
import { decodeProtobuf, EXPORT_PATH, type ExportResult, encodeResponse } from "./OtlpCodec.js"
import type { ExportError, Exporter } from "./OtlpExport.js"

type Incoming = { readonly bytes: Buffer }

const definition = {
  Export: {
    path: EXPORT_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: () => {
      throw new Error("server-side definition")
    },
    requestDeserialize: (bytes: Buffer): Incoming => ({ bytes }),
    responseSerialize: (r: ExportResult) => Buffer.from(encodeResponse(r)),
    responseDeserialize: () => {
      throw new Error("server-side definition")
    },
  } satisfies grpc.MethodDefinition<Incoming, ExportResult>,
} satisfies grpc.ServiceDefinition

const statusOf = (e: ExportError): { code: grpc.status; details: string } =>
  Match.value(e).pipe(
    Match.tagsExhaustive({
      AuthError: (e) => ({ code: grpc.status.UNAUTHENTICATED, details: `unauthenticated: ${e.reason}` }),
      TenantNotFound: () => ({
        code: grpc.status.PERMISSION_DENIED,
        details: "the token's access key is not a known tenant",
      }),
      InvalidEvent: (e) => ({ code: grpc.status.INVALID_ARGUMENT, details: e.detail }),
      Overloaded: (e) => ({ code: grpc.status.UNAVAILABLE, details: e.detail }),
      SinkUnavailable: () => ({ code: grpc.status.UNAVAILABLE, details: "log records not stored, retry later" }),
    }),
  )

export const toGrpcStatus = (cause: Cause.Cause<ExportError>): { code: grpc.status; details: string } => {
  const failure = Cause.failureOption(cause)
  if (Option.isNone(failure))
    return Cause.isInterruptedOnly(cause)
      ? { code: grpc.status.UNAVAILABLE, details: "the receiver is shutting down or the call was cancelled" }
      : { code: grpc.status.INTERNAL, details: "internal error" }
  return statusOf(failure.value)
}

export interface GrpcOptions {
  readonly host: string
  readonly port: number
  readonly credentials: grpc.ServerCredentials
  readonly maxRequestBytes: number
  readonly maxConnections: number
  readonly idleTimeoutMs: number
  readonly maxConcurrentStreams: number
  readonly shutdownTimeoutMs: number
}

/**
 * grpc-js has no connection limit of its own; its HTTP/2 servers are `net.Server`s, whose `maxConnections` closes
 * connections over the limit at accept. They are reached through grpc-js' `http2Servers` map (checked at start: the
 * caller logs when it is not there).
 */
const limitConnections = (server: grpc.Server, max: number): boolean => {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers
  if (!(servers instanceof Map)) return false
  for (const s of servers.keys()) (s as net.Server).maxConnections = max
  return true
}

/** Serves Export until the scope closes; returns the bound port. */
export const serveGrpc = (exporter: Exporter, options: GrpcOptions) =>
  Effect.gen(function* () {
    const run = yield* FiberSet.makeRuntime<never>()
    const server = new grpc.Server({
      "grpc.max_receive_message_length": options.maxRequestBytes,
      "grpc.max_send_message_length": 64 * 1024,
      "grpc.max_concurrent_streams": options.maxConcurrentStreams,
      "grpc.max_connection_idle_ms": options.idleTimeoutMs,
      "grpc-node.max_session_memory": 64,
    })
    const handler: grpc.handleUnaryCall<Incoming, ExportResult> = (call, callback) => {
      const values = call.metadata.get("authorization")
      const header =
        values.length === 1 && typeof values[0] === "string" ? values[0] : values.length > 1 ? "" : undefined
      const req = call.request
      const fiber = run(exporter("otlp_grpc", header, () => decodeProtobuf(req.bytes), req.bytes.length))
      interruptOnCancel(call, fiber)
      fiber.addObserver(
        Exit.match({
          onSuccess: (r) => callback(null, r),
          onFailure: (cause) => callback(toGrpcStatus(cause)),
        }),
      )
    }
    server.addService(definition, { Export: handler })
    const port = yield* Effect.acquireRelease(
      Effect.async<number, Error>((resume) => {
        server.bindAsync(`${options.host}:${options.port}`, options.credentials, (err, port) =>
          resume(err === null ? Effect.succeed(port) : Effect.fail(err)),
        )
      }),
      () =>
        Effect.async<void>((resume) => {
          server.tryShutdown(() => resume(Effect.void))
        }).pipe(
          Effect.timeoutTo({
            duration: options.shutdownTimeoutMs,
            onTimeout: () => server.forceShutdown(),
            onSuccess: () => undefined,
          }),
        ),
    )
    if (!limitConnections(server, options.maxConnections))
      yield* Effect.logWarning("OTLP/gRPC: cannot limit connections with this grpc-js version")
    return port
  })
