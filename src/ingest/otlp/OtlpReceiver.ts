/**
 * The OTLP logs receiver as a layer: OTLP/gRPC (default port 4317) and OTLP/HTTP (default 4318), each on when its
 * port is given, with the ingester's TLS files. Each export is authenticated with the bearer JWT (Auth: the token's
 * `sub` is the tenant's access key, looked up in ConfigStore), converted to `api.Event` records (OtlpLogs) and
 * acknowledged once Kafka has every record (KafkaSink). See docs/receivers.md.
 */
import { readFile } from "node:fs/promises"
import * as grpc from "@grpc/grpc-js"
import { Context, Data, Duration, Effect, Layer } from "effect"
import { ConfigStore } from "../../shared/ConfigStore.js"
import { Auth } from "../Auth.js"
import { KafkaSink } from "../KafkaSink.js"
import { makeExporter, type OtlpLimits, resolveLimits } from "./OtlpExport.js"
import { serveGrpc } from "./OtlpGrpc.js"
import { serveHttp } from "./OtlpHttp.js"

export interface ReceiverTls {
  readonly certFile: string
  readonly keyFile: string
  /** With a client CA, clients must present a certificate it signed (mutual TLS). */
  readonly clientCaFile?: string | undefined
}

export interface OtlpReceiverOptions extends OtlpLimits {
  /** Address both servers listen on. Default 0.0.0.0. */
  readonly host?: string
  /** OTLP/gRPC port (4317 is the standard one; 0 picks a free port); undefined: off. */
  readonly grpcPort?: number | undefined
  /** OTLP/HTTP port (4318 is the standard one; 0 picks a free port); undefined: off. */
  readonly httpPort?: number | undefined
  /** undefined: plaintext (the ingester allows it only with --insecure). */
  readonly tls: ReceiverTls | undefined
  /** Open connections per server; more are closed at accept. Default 1024. */
  readonly maxConnections?: number
  /** Connections idle this long are closed. Default 2 minutes. */
  readonly idleTimeout?: Duration.DurationInput
  /** HTTP: the whole request must arrive within this. Default 60 s. */
  readonly requestTimeout?: Duration.DurationInput
  /** gRPC: concurrent calls per connection. Default 100. */
  readonly maxConcurrentStreams?: number
  /** HTTP 503 answers carry `Retry-After` with this many seconds. Default 5. */
  readonly retryAfterSeconds?: number
  /** On shutdown, requests in flight get this long before connections are cut. Default 20 s. */
  readonly shutdownTimeout?: Duration.DurationInput
}

export const OTLP_GRPC_DEFAULT_PORT = 4317
export const OTLP_HTTP_DEFAULT_PORT = 4318

export class ReceiverStartError extends Data.TaggedError("ReceiverStartError")<{ readonly detail: string }> {
  override get message() {
    return this.detail
  }
}

export class OtlpReceiver extends Context.Tag("spillway/OtlpReceiver")<
  OtlpReceiver,
  {
    /** The bound ports (useful with port 0); undefined for a transport that is off. */
    readonly grpcPort: number | undefined
    readonly httpPort: number | undefined
  }
>() {
  static readonly layer = (
    options: OtlpReceiverOptions,
  ): Layer.Layer<OtlpReceiver, ReceiverStartError, Auth | ConfigStore | KafkaSink> =>
    Layer.scoped(OtlpReceiver, make(options))
}

export const readTlsFiles = (tls: ReceiverTls) =>
  Effect.tryPromise({
    try: async () => ({
      cert: await readFile(tls.certFile),
      key: await readFile(tls.keyFile),
      ca: tls.clientCaFile === undefined ? undefined : await readFile(tls.clientCaFile),
    }),
    // The file names are the operator's; the OS error text is not echoed.
    catch: () =>
      new ReceiverStartError({
        detail: `cannot read the TLS files (${[tls.certFile, tls.keyFile, tls.clientCaFile].filter((f) => f !== undefined).join(", ")})`,
      }),
  })

const make = (options: OtlpReceiverOptions) =>
  Effect.gen(function* () {
    const auth = yield* Auth
    const store = yield* ConfigStore
    const sink = yield* KafkaSink
    const limits = resolveLimits(options)
    const host = options.host ?? "0.0.0.0"
    const maxConnections = options.maxConnections ?? 1024
    const idleTimeoutMs = Duration.toMillis(options.idleTimeout ?? "2 minutes")
    const shutdownTimeoutMs = Duration.toMillis(options.shutdownTimeout ?? "20 seconds")
    const tls = options.tls === undefined ? undefined : yield* readTlsFiles(options.tls)
    const exporter = yield* makeExporter(auth, store, sink, limits)
    const listenError = (what: string) => () =>
      new ReceiverStartError({ detail: `the OTLP/${what} receiver cannot listen on ${host}` })

    const grpcPort =
      options.grpcPort === undefined
        ? undefined
        : yield* serveGrpc(exporter, {
            host,
            port: options.grpcPort,
            credentials:
              tls === undefined
                ? grpc.ServerCredentials.createInsecure()
                : grpc.ServerCredentials.createSsl(
                    tls.ca ?? null,
                    [{ cert_chain: tls.cert, private_key: tls.key }],
                    tls.ca !== undefined,
                  ),
            maxRequestBytes: limits.maxRequestBytes,
            maxConnections,
            idleTimeoutMs,
            maxConcurrentStreams: options.maxConcurrentStreams ?? 100,
            shutdownTimeoutMs,
          }).pipe(Effect.mapError(listenError("gRPC")))

    const httpPort =
      options.httpPort === undefined
        ? undefined
        : yield* serveHttp(exporter, {
            host,
            port: options.httpPort,
            tls,
            maxRequestBytes: limits.maxRequestBytes,
            maxConnections,
            idleTimeoutMs,
            requestTimeoutMs: Duration.toMillis(options.requestTimeout ?? "60 seconds"),
            retryAfterSeconds: options.retryAfterSeconds ?? 5,
            shutdownTimeoutMs,
          }).pipe(Effect.mapError(listenError("HTTP")))

    yield* Effect.logInfo("OTLP logs receiver listening").pipe(
      Effect.annotateLogs({ host, grpcPort: grpcPort ?? "off", httpPort: httpPort ?? "off", tls: tls ? "on" : "off" }),
    )
    return { grpcPort, httpPort }
  })
