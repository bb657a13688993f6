/**
 * The receivers for stock collectors from the ingester's flags, in one layer (see docs/receivers.md): OTLP/gRPC,
 * OTLP/HTTP and Fluent Forward, each on only when its port is given. The limits come from Config (environment or
 * the ingester's config file), each with its documented default.
 */
import { readFile, stat } from "node:fs/promises"
import { Config, Effect, Layer, Redacted } from "effect"
import type { ConfigStore } from "../../shared/ConfigStore.js"
import type { Auth } from "../Auth.js"
import { ForwardReceiver } from "../forward/ForwardReceiver.js"
import type { KafkaSink } from "../KafkaSink.js"
import { otlpDefaults } from "../otlp/OtlpExport.js"
import { OtlpReceiver, ReceiverStartError, type ReceiverTls } from "../otlp/OtlpReceiver.js"

export interface ReceiversOptions {
  readonly host: string
  /** The ingester's TLS files (undefined only with --insecure); OTLP always uses them, Forward with `forwardTls`. */
  readonly tls: ReceiverTls | undefined
  readonly otlpGrpcPort?: number | undefined
  readonly otlpHttpPort?: number | undefined
  readonly forwardPort?: number | undefined
  /** A file holding the Forward shared key (turns the handshake on). */
  readonly forwardSharedKeyFile?: string | undefined
  /** Without a shared key: the access key Forward messages are written as. */
  readonly forwardAnonymousTenant?: string | undefined
  readonly forwardTls?: boolean | undefined
}

const int = (name: string, fallback: number) => Config.integer(name).pipe(Config.withDefault(fallback))

/** The limits, from `SPILLWAY_*` settings (docs/receivers.md "Limits"). */
export const receiverLimitsConfig = Config.all({
  otlpMaxRequestBytes: int("SPILLWAY_OTLP_MAX_REQUEST_BYTES", otlpDefaults.maxRequestBytes),
  otlpMaxRecords: int("SPILLWAY_OTLP_MAX_RECORDS", otlpDefaults.maxRecordsPerRequest),
  otlpMaxInFlightBytes: int("SPILLWAY_OTLP_MAX_INFLIGHT_BYTES", otlpDefaults.maxInFlightBytes),
  otlpHttpRequestTimeoutMs: int("SPILLWAY_OTLP_HTTP_REQUEST_TIMEOUT_MS", 60_000),
  maxEventBytes: int("SPILLWAY_INGESTER_MAX_EVENT_BYTES", otlpDefaults.maxEventBytes),
  forwardMaxMessageBytes: int("SPILLWAY_FORWARD_MAX_MESSAGE_BYTES", 16 * 1024 * 1024),
  forwardMaxRecords: int("SPILLWAY_FORWARD_MAX_RECORDS", 100_000),
  forwardMaxDecompressedBytes: int("SPILLWAY_FORWARD_MAX_DECOMPRESSED_BYTES", 64 * 1024 * 1024),
  forwardHandshakeTimeoutMs: int("SPILLWAY_FORWARD_HANDSHAKE_TIMEOUT_MS", 10_000),
  maxConnections: int("SPILLWAY_RECEIVER_MAX_CONNECTIONS", 1024),
  idleTimeoutMs: int("SPILLWAY_RECEIVER_IDLE_TIMEOUT_MS", 120_000),
  shutdownTimeoutMs: int("SPILLWAY_INGESTER_SHUTDOWN_TIMEOUT_MS", 20_000),
}).pipe(
  Config.validate({
    message: "receiver limits must be positive integers",
    validation: (l) => Object.values(l).every((v) => Number.isSafeInteger(v) && v > 0),
  }),
)

const MAX_KEY_FILE_BYTES = 4096

/** The shared key in a file (trimmed); the error names the file, never its content. */
export const readSharedKeyFile = (path: string) =>
  Effect.tryPromise({
    try: async () => {
      const info = await stat(path)
      if (!info.isFile() || info.size > MAX_KEY_FILE_BYTES) throw new Error("size")
      return (await readFile(path, "utf8")).trim()
    },
    catch: () =>
      new ReceiverStartError({
        detail: `cannot read the Forward shared key file ${path} (a regular file of at most ${MAX_KEY_FILE_BYTES} bytes)`,
      }),
  }).pipe(
    Effect.filterOrFail(
      (key) => key.length > 0,
      () => new ReceiverStartError({ detail: `the Forward shared key file ${path} is empty` }),
    ),
    Effect.map(Redacted.make),
  )

/** The receivers asked for (none: an empty layer). */
export const receiversLayer = (
  options: ReceiversOptions,
): Layer.Layer<never, ReceiverStartError, Auth | ConfigStore | KafkaSink> =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const l = yield* receiverLimitsConfig.pipe(
        Effect.mapError((e) => new ReceiverStartError({ detail: `receiver settings: ${String(e)}` })),
      )
      const layers: Array<Layer.Layer<never, ReceiverStartError, Auth | ConfigStore | KafkaSink>> = []
      if (options.otlpGrpcPort !== undefined || options.otlpHttpPort !== undefined)
        layers.push(
          Layer.discard(
            OtlpReceiver.layer({
              host: options.host,
              grpcPort: options.otlpGrpcPort,
              httpPort: options.otlpHttpPort,
              tls: options.tls,
              maxRequestBytes: l.otlpMaxRequestBytes,
              maxRecordsPerRequest: l.otlpMaxRecords,
              maxInFlightBytes: l.otlpMaxInFlightBytes,
              maxEventBytes: l.maxEventBytes,
              maxConnections: l.maxConnections,
              idleTimeout: `${l.idleTimeoutMs} millis`,
              requestTimeout: `${l.otlpHttpRequestTimeoutMs} millis`,
              shutdownTimeout: `${l.shutdownTimeoutMs} millis`,
            }),
          ),
        )
      if (options.forwardPort !== undefined) {
        const sharedKey =
          options.forwardSharedKeyFile === undefined
            ? undefined
            : yield* readSharedKeyFile(options.forwardSharedKeyFile)
        if (options.forwardTls === true && options.tls === undefined)
          return yield* new ReceiverStartError({
            detail: "Forward over TLS needs the ingester's --tls-cert and --tls-key",
          })
        layers.push(
          Layer.discard(
            ForwardReceiver.layer({
              host: options.host,
              port: options.forwardPort,
              tls: options.forwardTls === true ? options.tls : undefined,
              sharedKey,
              anonymousTenant: options.forwardAnonymousTenant,
              maxMessageBytes: l.forwardMaxMessageBytes,
              maxRecordsPerMessage: l.forwardMaxRecords,
              maxDecompressedBytes: l.forwardMaxDecompressedBytes,
              maxEventBytes: l.maxEventBytes,
              maxConnections: l.maxConnections,
              idleTimeout: `${l.idleTimeoutMs} millis`,
              handshakeTimeout: `${l.forwardHandshakeTimeoutMs} millis`,
              shutdownTimeout: `${l.shutdownTimeoutMs} millis`,
            }),
          ),
        )
      }
      return layers.length === 0 ? Layer.empty : Layer.mergeAll(...(layers as [(typeof layers)[0]]))
    }),
  )
