/**
 * The ingester's command-line flags for the OTLP and Fluent Forward receivers (each off unless its port is given),
 * and the options of `receiversLayer` they make. Limits come from SPILLWAY_* settings (ReceiversLive.ts).
 */
import { Option } from "effect"
import { boolFlag, optionalIntFlag, optionalTextFlag, PORT } from "../../shared/ProgramOptions.js"
import type { ReceiverTls } from "../otlp/OtlpReceiver.js"
import type { ReceiversOptions } from "./ReceiversLive.js"

const port = (name: string, env: string, description: string) =>
  optionalIntFlag(name, env, `${description}; off unless given`, undefined, PORT)

export const receiverFlags = {
  otlpGrpcPort: port(
    "otlp-grpc-port",
    "SPILLWAY_OTLP_GRPC_PORT",
    "OTLP logs over gRPC (LogsService/Export); usually 4317",
  ),
  otlpHttpPort: port("otlp-http-port", "SPILLWAY_OTLP_HTTP_PORT", "OTLP logs over HTTP (POST /v1/logs); usually 4318"),
  forwardPort: port("forward-port", "SPILLWAY_FORWARD_PORT", "Fluent Forward protocol over TCP; usually 24224"),
  forwardSharedKeyFile: optionalTextFlag(
    "forward-shared-key-file",
    "SPILLWAY_FORWARD_SHARED_KEY_FILE",
    "File holding the Forward shared key: turns the handshake on (username = access key, password from `forward-password`)",
  ),
  forwardAnonymousTenant: optionalTextFlag(
    "forward-anonymous-tenant",
    "SPILLWAY_FORWARD_ANONYMOUS_TENANT",
    "Without a shared key: the access key every Forward message is written as (trusted networks only)",
  ),
  forwardTls: boolFlag("forward-tls", "SPILLWAY_FORWARD_TLS", "Serve Forward over TLS with the ingester's certificate"),
}

type Flags = {
  readonly otlpGrpcPort: Option.Option<number>
  readonly otlpHttpPort: Option.Option<number>
  readonly forwardPort: Option.Option<number>
  readonly forwardSharedKeyFile: Option.Option<string>
  readonly forwardAnonymousTenant: Option.Option<string>
  readonly forwardTls: boolean
}

/** Whether any receiver was asked for. */
export const anyReceiver = (f: Flags): boolean =>
  Option.isSome(f.otlpGrpcPort) || Option.isSome(f.otlpHttpPort) || Option.isSome(f.forwardPort)

export const receiversOptionsOf = (f: Flags, host: string, tls: ReceiverTls | undefined): ReceiversOptions => ({
  host,
  tls,
  otlpGrpcPort: Option.getOrUndefined(f.otlpGrpcPort),
  otlpHttpPort: Option.getOrUndefined(f.otlpHttpPort),
  forwardPort: Option.getOrUndefined(f.forwardPort),
  forwardSharedKeyFile: Option.getOrUndefined(f.forwardSharedKeyFile),
  forwardAnonymousTenant: Option.getOrUndefined(f.forwardAnonymousTenant),
  forwardTls: f.forwardTls,
})
