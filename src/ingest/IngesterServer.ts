/**
 * The ingester's gRPC server (grpc-js): `api.EventService` over TLS (optionally mutual TLS), every RPC
 * authenticated with the Bearer JWT of its `authorization` metadata. This module wires the handlers into grpc-js
 * and owns the server's life; the handlers are named module-level functions:
 *
 * - ExchangeConfig (RpcContext.ts): the Config of the token's own access key only (PERMISSION_DENIED for another,
 *   NOT_FOUND when the token's key is not a tenant).
 * - SendEvent (SendEvent.ts) and SendEventBatches (SendEventBatches.ts): acknowledged only after Kafka
 *   acknowledged the events.
 *
 * The access key's way: the handler's metadata -> `authenticate` (Callers.ts: Auth.authorize, then the tenant of
 * the token's `sub`) -> `toRecords` (Records.ts: every event's AccessKey must be the token's; the record key is it)
 * -> KafkaSink.publishRecords (the Kafka record key). Domain errors become gRPC statuses in GrpcStatus.ts only.
 *
 * Memory is bounded by Budget: a message is read only once its bytes fit the stream's budget, so a slow Kafka
 * stops the reading (HTTP/2 flow control) rather than filling a queue. Messages over `maxMessageBytes` are refused
 * by grpc-js with RESOURCE_EXHAUSTED before they are decoded; open event streams are capped in the process and per
 * tenant, so what the process holds is at most the process budget plus open streams × one message being read.
 */
import * as grpc from "@grpc/grpc-js"
import {
  Cause,
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  type Fiber,
  FiberSet,
  Layer,
  Option,
} from "effect"
import { Limits } from "../domain/Event.js"
import { ConfigStore } from "../shared/ConfigStore.js"
import { onSighup } from "../shared/Sighup.js"
import type { WireBatchAck, WireConfig, WireEResponse } from "../wire/Wire.js"
import { Auth } from "./Auth.js"
import { Budget } from "./Budget.js"
import { makeStreamSlots } from "./Callers.js"
import { interruptOnCancel, type RpcError, rejectReason, toStatus } from "./GrpcStatus.js"
import { KafkaSink } from "./KafkaSink.js"
import { type Incoming, type Raw, ServerDefinition } from "./Messages.js"
import { ack, exchangeConfig, type RpcDeps, reject } from "./RpcContext.js"
import { sendEvent } from "./SendEvent.js"
import { sendEventBatches } from "./SendEventBatches.js"
import { makeStreamGuards } from "./StreamGuards.js"
import { ReloadingCertificates, type TlsFiles } from "./TlsReload.js"

export { toStatus } from "./GrpcStatus.js"

/** With a client CA, clients must present a certificate it signed (mutual TLS). */
export type { TlsFiles } from "./TlsReload.js"

export interface IngesterServerOptions {
  readonly host: string
  /** 0 picks a free port (see IngesterServer.port). */
  readonly port: number
  /** undefined: plaintext (only with --insecure). */
  readonly tls: TlsFiles | undefined
  /** Larger gRPC messages are refused with RESOURCE_EXHAUSTED (default 8 MiB). */
  readonly maxMessageBytes?: number
  /** Larger events are dead-lettered to `<topic>-dlq` (default 1,000,000 bytes, Kafka's default record size). */
  readonly maxEventBytes?: number
  /** SendEvent: events gathered into one Kafka send (defaults 500 events or 256 KiB). */
  readonly sendEventBatchEvents?: number
  readonly sendEventBatchBytes?: number
  /** Print each accepted event (never keys or tokens) on stdout. */
  readonly printEvents?: boolean
  /** On shutdown, calls in flight get this long to finish before they are cut. Default 20 s. */
  readonly shutdownTimeout?: Duration.DurationInput
  /** Event streams open at once, in the process and per access key (defaults 1024 and 64); more get RESOURCE_EXHAUSTED. */
  readonly maxStreams?: number
  readonly maxStreamsPerTenant?: number
  /** A connection without an open call for this long is closed (grpc.max_connection_idle_ms; default 120 s). */
  readonly idleTimeout?: Duration.DurationInput
}

export class IngesterStartError extends Data.TaggedError("IngesterStartError")<{ readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

export class IngesterServer extends Context.Tag("spillway/IngesterServer")<
  IngesterServer,
  { readonly port: number; readonly host: string }
>() {
  static readonly layer = (
    options: IngesterServerOptions,
  ): Layer.Layer<IngesterServer, IngesterStartError, Auth | ConfigStore | KafkaSink | Budget> =>
    Layer.scoped(IngesterServer, make(options))
}

/** The TLS material, reloaded on SIGHUP (an invalid new version is refused and logged; the one in force stays). */
const reloadingTls = (tls: TlsFiles) =>
  Effect.gen(function* () {
    const certs = yield* Either.match(ReloadingCertificates.load(tls), {
      onLeft: (detail) => Effect.fail(new IngesterStartError({ detail: `cannot use the TLS files: ${detail}` })),
      onRight: Effect.succeed,
    })
    yield* onSighup(
      "TLS certificate",
      // Read the files at each signal, not once here.
      Effect.suspend(() =>
        Either.match(certs.reload(), {
          onLeft: (detail) => Effect.logError(`TLS files refused, keeping the certificate in force: ${detail}`),
          onRight: (validTo) =>
            Effect.logInfo("TLS certificate reloaded; new connections get it").pipe(
              Effect.annotateLogs({ validTo: validTo.toISOString() }),
            ),
        }),
      ),
    )
    return certs.credentials()
  })

const logFailure = (rpc: string, cause: Cause.Cause<RpcError>) => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) return reject(rejectReason(failure.value))
  if (Cause.isInterruptedOnly(cause)) return Effect.void
  return Effect.logError(`${rpc} failed`, cause)
}

/** The grpc-js handlers: each call runs as a fiber of `run`, interrupted when the client cancels. */
/** Runs an effect as a fiber of the server's FiberSet (FiberSet.makeRuntime). */
type Run = <A, E>(effect: Effect.Effect<A, E>) => Fiber.RuntimeFiber<A, E>

const makeHandlers = (deps: RpcDeps, run: Run): grpc.UntypedServiceImplementation => ({
  ExchangeConfig: ((call, callback) => {
    const fiber = run(
      exchangeConfig(deps, call.metadata, call.request).pipe(
        Effect.tapErrorCause((c) => logFailure("ExchangeConfig", c)),
      ),
    )
    interruptOnCancel(call, fiber)
    fiber.addObserver(
      Exit.match({
        onSuccess: (config) => callback(null, config),
        onFailure: (cause) => callback(toStatus(cause)),
      }),
    )
  }) satisfies grpc.handleUnaryCall<Incoming, WireConfig>,

  SendEvent: ((call, callback) => {
    const fiber = run(
      sendEvent(deps, call).pipe(
        Effect.tap(() => ack("SendEvent", "SUCCESS")),
        Effect.tapErrorCause((c) => Effect.zipRight(ack("SendEvent", "FAILURE"), logFailure("SendEvent", c))),
      ),
    )
    interruptOnCancel(call, fiber)
    fiber.addObserver(
      Exit.match({
        onSuccess: () => callback(null, { status: "SUCCESS" }),
        onFailure: (cause) => callback(toStatus(cause)),
      }),
    )
  }) satisfies grpc.handleClientStreamingCall<Raw, WireEResponse>,

  SendEventBatches: ((call) => {
    const fiber = run(sendEventBatches(deps, call).pipe(Effect.tapErrorCause((c) => logFailure("SendEventBatches", c))))
    interruptOnCancel(call, fiber)
    fiber.addObserver(
      Exit.match({
        onSuccess: () => {
          if (!call.writableEnded) call.end()
        },
        onFailure: (cause) => {
          if (!call.cancelled && !call.writableEnded) call.emit("error", toStatus(cause))
        },
      }),
    )
  }) satisfies grpc.handleBidiStreamingCall<Raw, WireBatchAck>,
})

/**
 * Binds `server` to `address` (scoped): when the scope closes, `draining` completes (streams end), calls in flight
 * finish within `shutdownTimeout`, and past it the server is shut down by force.
 */
const serve = (
  server: grpc.Server,
  address: string,
  credentials: grpc.ServerCredentials,
  draining: Deferred.Deferred<void>,
  shutdownTimeout: Duration.Duration,
) =>
  Effect.acquireRelease(
    Effect.async<number, IngesterStartError>((resume) => {
      server.bindAsync(address, credentials, (err, port) => {
        if (err) resume(Effect.fail(new IngesterStartError({ detail: `cannot listen on ${address}: ${err.message}` })))
        else resume(Effect.succeed(port))
      })
    }),
    () =>
      Effect.gen(function* () {
        yield* Effect.logInfo("ingester stops accepting calls and finishes those in flight")
        yield* Deferred.succeed(draining, undefined)
        yield* Effect.async<void>((resume) => {
          server.tryShutdown(() => resume(Effect.void))
        }).pipe(
          Effect.timeoutTo({
            duration: shutdownTimeout,
            onTimeout: () => {
              server.forceShutdown()
              return "forced"
            },
            onSuccess: () => "drained",
          }),
          Effect.flatMap((how) => Effect.logInfo(`gRPC server stopped (${how})`)),
        )
      }),
  )

const make = (options: IngesterServerOptions) =>
  Effect.gen(function* () {
    const maxMessageBytes = options.maxMessageBytes ?? 8 * 1024 * 1024
    const budget = yield* Budget
    if (budget.options.streamBytes < maxMessageBytes)
      return yield* new IngesterStartError({
        detail: `the per-stream budget (${budget.options.streamBytes} bytes) must be at least the message size limit (${maxMessageBytes} bytes)`,
      })
    const auth = yield* Auth
    const configStore = yield* ConfigStore
    const deps: RpcDeps = {
      auth,
      configStore,
      sink: yield* KafkaSink,
      budget,
      slots: makeStreamSlots({
        maxStreams: options.maxStreams ?? 1024,
        maxStreamsPerTenant: options.maxStreamsPerTenant ?? 64,
      }),
      guards: yield* makeStreamGuards(configStore, auth.clockSkewSeconds),
      draining: yield* Deferred.make<void>(),
      limits: {
        maxEventBytes: options.maxEventBytes ?? 1_000_000,
        batchEvents: options.sendEventBatchEvents ?? 500,
        batchBytes: options.sendEventBatchBytes ?? 256 * 1024,
        maxEventsPerBatch: Limits.eventsPerBatch,
        printEvents: options.printEvents ?? false,
      },
    }
    const handlers = makeHandlers(deps, yield* FiberSet.makeRuntime<never>())
    const draining = deps.draining

    // --- the server ----------------------------------------------------------------------------
    const credentials =
      options.tls === undefined ? grpc.ServerCredentials.createInsecure() : yield* reloadingTls(options.tls)
    if (options.tls === undefined)
      yield* Effect.logWarning("--insecure: serving gRPC WITHOUT TLS; tokens and events travel in plaintext")

    const server = new grpc.Server({
      "grpc.max_receive_message_length": maxMessageBytes,
      "grpc.max_concurrent_streams": 256,
      "grpc.keepalive_time_ms": 60_000,
      "grpc.keepalive_timeout_ms": 20_000,
      "grpc.max_connection_idle_ms": Duration.toMillis(Duration.decode(options.idleTimeout ?? "120 seconds")),
    })
    server.addService(ServerDefinition, handlers)
    const host = options.host.includes(":") && !options.host.startsWith("[") ? `[${options.host}]` : options.host
    const shutdownTimeout = Duration.decode(options.shutdownTimeout ?? "20 seconds")

    const port = yield* serve(server, `${host}:${options.port}`, credentials, draining, shutdownTimeout)
    yield* Effect.logInfo("ingester listening").pipe(
      Effect.annotateLogs({
        host: options.host,
        port,
        tls: options.tls === undefined ? "off" : options.tls.clientCaFile === undefined ? "server" : "mutual",
      }),
    )
    return { port, host: options.host }
  })
