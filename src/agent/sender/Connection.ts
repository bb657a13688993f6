/**
 * What one connection to the ingester needs: the options, the error the sender acts on, the grpc-js client
 * (TLS settings included), the token and the ExchangeConfig call.
 */
import { readFileSync, statSync } from "node:fs"
import { isIP } from "node:net"
import { checkServerIdentity } from "node:tls"
import * as grpc from "@grpc/grpc-js"
import { Data, type Duration, Effect, ParseResult, Redacted, Ref, Schema } from "effect"
import { AgentConfig } from "../../domain/AgentConfig.js"
import type { WireEvent } from "../../domain/Event.js"
import {
  type EncodedEventBatch,
  EventServiceClient,
  type WireBatchAck,
  type WireConfig,
  type WireEResponse,
  type WireEventBatch,
} from "../../wire/Wire.js"
import type { BatchLimits } from "./Batching.js"

/** `unimplemented`: the ingester lacks the RPC (the proof of concept's has no SendEventBatches). */
export type SendFailure = "unavailable" | "unauthenticated" | "denied" | "timeout" | "unimplemented"

export class SendError extends Data.TaggedError("SendError")<{
  readonly kind: SendFailure
  readonly detail: string
}> {}

/** Where the token comes from: a file (re-read before every connection) or a fixed value. */
export type TokenSource =
  | { readonly _tag: "file"; readonly path: string }
  | { readonly _tag: "value"; readonly token: Redacted.Redacted<string> }

export interface SenderOptions {
  /** `host:port`. */
  readonly address: string
  /** PEM of the CA that signed the ingester's certificate; undefined = the system's roots. */
  readonly caCert: Buffer | undefined
  /** Plaintext gRPC (development only). */
  readonly insecure: boolean
  /** TLS server name to expect, if not the host of `address`. */
  readonly serverName: string | undefined
  readonly accessKey: string
  readonly token: TokenSource
  readonly agentId: string
  readonly batch: BatchLimits
  /** Batches in flight per stream. */
  readonly window: number
  readonly configRefresh: Duration.Duration
  /** A batch not acknowledged within this ends the session (reconnect, resend). */
  readonly ackTimeout: Duration.Duration
  readonly retryBase: Duration.Duration
  readonly retryCap: Duration.Duration
  /** Least wait after UNAUTHENTICATED / PERMISSION_DENIED on the stream or ExchangeConfig. */
  readonly authRetry: Duration.Duration
  /** How long SIGTERM waits for the buffer to drain. */
  readonly shutdownGrace: Duration.Duration
  /** The ingester's largest message (its --max-message-bytes); an event that cannot fit is set aside. */
  readonly maxMessageBytes: number
}

export interface ClientMethods {
  ExchangeConfig(
    req: { AccessKey: string },
    md: grpc.Metadata,
    options: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: WireConfig) => void,
  ): grpc.ClientUnaryCall
  SendEventBatches(md: grpc.Metadata): grpc.ClientDuplexStream<WireEventBatch | EncodedEventBatch, WireBatchAck>
  SendEvent(
    md: grpc.Metadata,
    options: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: WireEResponse) => void,
  ): grpc.ClientWritableStream<WireEvent>
}
export type Client = grpc.Client & ClientMethods

/** Maps a gRPC error to what the sender does about it. */
export const classify = (e: unknown, where: string): SendError => {
  const err = e as Partial<grpc.ServiceError>
  const code = typeof err.code === "number" ? err.code : grpc.status.UNAVAILABLE
  const detail = `${where}: ${grpc.status[code] ?? code}${err.details ? ` (${err.details})` : ""}`
  switch (code) {
    case grpc.status.UNAUTHENTICATED:
      return new SendError({ kind: "unauthenticated", detail })
    case grpc.status.PERMISSION_DENIED:
      return new SendError({ kind: "denied", detail })
    case grpc.status.DEADLINE_EXCEEDED:
      return new SendError({ kind: "timeout", detail })
    case grpc.status.UNIMPLEMENTED:
      return new SendError({ kind: "unimplemented", detail })
    default:
      return new SendError({ kind: "unavailable", detail })
  }
}

/** The host part of `host:port` or `[v6]:port`. */
export const hostOf = (address: string): string => {
  if (address.startsWith("[")) return address.slice(1, Math.max(1, address.indexOf("]")))
  const i = address.lastIndexOf(":")
  return i < 0 || address.indexOf(":") !== i ? address : address.slice(0, i)
}

/**
 * The name sent as TLS SNI when `address` is an IP literal and no server name is given. RFC 6066 forbids an IP
 * there (Node warns DEP0123), grpc-js would send the host as it is, and the reserved `.invalid` name matches no
 * server's configuration; the certificate is still checked against the IP itself (an IP SAN).
 */
export const IP_SNI_PLACEHOLDER = "ingester-by-ip.invalid"

/** Credentials and channel options for the ingester, TLS unless `insecure`. */
export const channelSettings = (o: Pick<SenderOptions, "address" | "caCert" | "insecure" | "serverName">) => {
  const base: grpc.ChannelOptions = { "grpc.max_send_message_length": 64 * 1024 * 1024 }
  if (o.insecure) return { credentials: grpc.credentials.createInsecure(), channelOptions: base }
  const expected = o.serverName ?? hostOf(o.address)
  const byIp = isIP(expected) !== 0 // from --ingester, or an IP given as --server-name
  const credentials = grpc.credentials.createSsl(
    o.caCert ?? null,
    null,
    null,
    byIp ? { checkServerIdentity: (_sni, cert) => checkServerIdentity(expected, cert) } : {},
  )
  const name = byIp ? IP_SNI_PLACEHOLDER : o.serverName
  return {
    credentials,
    channelOptions: name === undefined ? base : { ...base, "grpc.ssl_target_name_override": name },
  }
}

/** A client for the session's scope (closed with it). */
export const openClient = (o: SenderOptions) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const { credentials, channelOptions } = channelSettings(o)
      return new EventServiceClient(o.address, credentials, channelOptions) as unknown as Client
    }),
    (c) => Effect.sync(() => c.close()),
  )

export const metadataFor = (token: string) => {
  const md = new grpc.Metadata()
  md.set("authorization", `Bearer ${token}`)
  return md
}

/** Reads the token (a file is re-read each time; a change is logged). `stamp` remembers the file's mtime. */
export const readToken = (source: TokenSource, stamp: Ref.Ref<string>) =>
  Effect.gen(function* () {
    if (source._tag === "value") return Redacted.value(source.token)
    const path = source.path
    const r = yield* Effect.try({
      try: () => ({ text: readFileSync(path, "utf8").trim(), stamp: String(statSync(path).mtimeMs) }),
      catch: (e) => new SendError({ kind: "unauthenticated", detail: `cannot read token file ${path}: ${String(e)}` }),
    })
    const last = yield* Ref.getAndSet(stamp, r.stamp)
    if (last !== "" && r.stamp !== last)
      yield* Effect.logInfo("token file changed; using the new token").pipe(Effect.annotateLogs({ file: path }))
    if (r.text === "") return yield* new SendError({ kind: "unauthenticated", detail: `token file ${path} is empty` })
    return r.text
  })

/** ExchangeConfig for `accessKey`, decoded (the answer is untrusted). */
export const exchangeConfig = (client: Client, accessKey: string, token: string) =>
  Effect.gen(function* () {
    const res = yield* Effect.async<WireConfig, SendError>((resume) => {
      const call = client.ExchangeConfig(
        { AccessKey: accessKey },
        metadataFor(token),
        { deadline: Date.now() + 10_000 },
        (err, res) => resume(err || !res ? Effect.fail(classify(err, "ExchangeConfig")) : Effect.succeed(res)),
      )
      return Effect.sync(() => call.cancel())
    })
    return yield* Schema.decodeUnknown(AgentConfig)(res).pipe(
      Effect.mapError(
        (e) =>
          new SendError({
            kind: "unavailable",
            // the field paths only: the values are the ingester's, not ours to repeat
            detail: `ExchangeConfig returned an unusable config (${ParseResult.ArrayFormatter.formatErrorSync(e)
              .map((i) => i.path.join(".") || "(top level)")
              .join(", ")})`,
          }),
      ),
    )
  })
