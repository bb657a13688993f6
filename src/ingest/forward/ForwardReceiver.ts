/**
 * The Fluent Forward receiver (protocol v1) as a layer: TCP, TLS optional, default port 24224. Fluent Bit's
 * `forward` output, Fluentd's `out_forward` and Docker's `fluentd` log driver ship to it unchanged.
 *
 * - Auth on (a shared key is set): the server opens with HELO; nothing but a PING is accepted until the PING proves
 *   the shared key and the password of the tenant its username names (the access key; the password is the tenant's
 *   Forward password, see ForwardPassword); PONG answers it, and a failed handshake closes the connection.
 *   Auth off: every message is the `anonymousTenant`'s (for Docker's driver, which cannot authenticate).
 * - Each message's records go to Kafka through KafkaSink; a `chunk` option is answered `{ack: chunk}` only after
 *   Kafka acknowledged every record. When Kafka cannot take them, no ack is sent and the connection is closed, so
 *   the client sends the chunk again.
 * - Messages are handled one at a time per connection; while one waits for Kafka the socket is not read (TCP flow
 *   control holds the client back). A malformed message closes its connection only.
 * - Heartbeats: TCP heartbeats (a connect without data, Fluentd's default) are plain connections.
 */
import * as net from "node:net"
import { hostname } from "node:os"
import * as tls from "node:tls"
import { Context, Duration, Effect, Either, FiberSet, Layer, Redacted, Schema } from "effect"
import { AccessKey } from "../../domain/Event.js"
import { ConfigStore } from "../../shared/ConfigStore.js"
import { Auth } from "../Auth.js"
import { KafkaSink } from "../KafkaSink.js"
import { ReceiverStartError, type ReceiverTls, readTlsFiles } from "../otlp/OtlpReceiver.js"
import { receiverConnections } from "../receivers/TenantRecords.js"
import { type ConnectionContext, handleConnection } from "./ForwardConnection.js"

export const FORWARD_DEFAULT_PORT = 24224

export interface ForwardReceiverOptions {
  /** Default 0.0.0.0. */
  readonly host?: string
  /** 24224 is the standard port; 0 picks a free one. */
  readonly port: number
  /** undefined: plaintext TCP. */
  readonly tls?: ReceiverTls | undefined
  /** The shared key of the handshake; undefined: auth off (then `anonymousTenant` is required). */
  readonly sharedKey?: Redacted.Redacted<string> | undefined
  /** The access key every message is written as when auth is off. */
  readonly anonymousTenant?: string | undefined
  /** The server hostname sent in PONG. Default os.hostname(). */
  readonly serverHostname?: string
  /** A larger msgpack message closes the connection. Default 16 MiB. */
  readonly maxMessageBytes?: number
  /** Records per message. Default 100,000. */
  readonly maxRecordsPerMessage?: number
  /** CompressedPackedForward entries after gunzip. Default 64 MiB. */
  readonly maxDecompressedBytes?: number
  /** A record whose event is larger can never be accepted: it is dropped, counted and logged. Default 1,000,000. */
  readonly maxEventBytes?: number
  /** Open connections; more are closed at accept. Default 1024. */
  readonly maxConnections?: number
  /** A connection without traffic this long is closed. Default 2 minutes. */
  readonly idleTimeout?: Duration.DurationInput
  /** With auth on, the handshake must succeed within this. Default 10 s. */
  readonly handshakeTimeout?: Duration.DurationInput
  /** On shutdown, messages in flight get this long before connections are cut. Default 20 s. */
  readonly shutdownTimeout?: Duration.DurationInput
}

export class ForwardReceiver extends Context.Tag("spillway/ForwardReceiver")<
  ForwardReceiver,
  { readonly port: number }
>() {
  static readonly layer = (
    options: ForwardReceiverOptions,
  ): Layer.Layer<ForwardReceiver, ReceiverStartError, Auth | ConfigStore | KafkaSink> =>
    Layer.scoped(ForwardReceiver, make(options))
}

const createServer = (
  tlsFiles: { readonly cert: Buffer; readonly key: Buffer; readonly ca: Buffer | undefined } | undefined,
  handshakeTimeoutMs: number,
  onSocket: (socket: net.Socket) => void,
): net.Server =>
  tlsFiles === undefined
    ? net.createServer({ pauseOnConnect: false }, onSocket)
    : tls.createServer(
        {
          cert: tlsFiles.cert,
          key: tlsFiles.key,
          ...(tlsFiles.ca ? { ca: tlsFiles.ca, requestCert: true, rejectUnauthorized: true } : {}),
          handshakeTimeout: handshakeTimeoutMs,
        },
        onSocket,
      )

const listen = (server: net.Server, port: number, host: string) =>
  Effect.async<number, ReceiverStartError>((resume) => {
    const onError = () =>
      resume(Effect.fail(new ReceiverStartError({ detail: `the Forward receiver cannot listen on ${host}` })))
    server.once("error", onError)
    server.listen(port, host, () => {
      server.off("error", onError)
      const addr = server.address()
      resume(Effect.succeed(typeof addr === "object" && addr !== null ? addr.port : port))
    })
  })

const make = (options: ForwardReceiverOptions) =>
  Effect.gen(function* () {
    const host = options.host ?? "0.0.0.0"
    const sharedKey = options.sharedKey === undefined ? undefined : Redacted.value(options.sharedKey)
    if (sharedKey !== undefined && sharedKey.length === 0)
      return yield* new ReceiverStartError({ detail: "the Forward shared key is empty" })
    let anonymous: AccessKey | undefined
    if (sharedKey === undefined) {
      const decoded = Schema.decodeUnknownEither(AccessKey)(options.anonymousTenant)
      if (Either.isLeft(decoded))
        return yield* new ReceiverStartError({
          detail:
            "the Forward receiver without a shared key needs the access key its messages are written as (anonymousTenant)",
        })
      anonymous = decoded.right
    }
    let draining = false
    const ctx: ConnectionContext = {
      auth: yield* Auth,
      store: yield* ConfigStore,
      sink: yield* KafkaSink,
      sharedKey,
      anonymous,
      serverHostname: options.serverHostname ?? hostname(),
      maxMessageBytes: options.maxMessageBytes ?? 16 * 1024 * 1024,
      limits: {
        maxRecords: options.maxRecordsPerMessage ?? 100_000,
        maxDecompressedBytes: options.maxDecompressedBytes ?? 64 * 1024 * 1024,
      },
      maxEventBytes: options.maxEventBytes ?? 1_000_000,
      handshakeTimeout: Duration.decode(options.handshakeTimeout ?? "10 seconds"),
      busy: new Set(),
      draining: () => draining,
    }
    const idleMs = Duration.toMillis(options.idleTimeout ?? "2 minutes")
    const shutdownMs = Duration.toMillis(options.shutdownTimeout ?? "20 seconds")
    const tlsFiles = options.tls === undefined ? undefined : yield* readTlsFiles(options.tls)

    const run = yield* FiberSet.makeRuntime<never>()
    const sockets = new Set<net.Socket>()
    const onSocket = (socket: net.Socket) => {
      sockets.add(socket)
      receiverConnections.inc({ receiver: "forward" })
      socket.setNoDelay(true)
      socket.setTimeout(idleMs, () => socket.destroy())
      socket.on("error", () => socket.destroy())
      socket.on("close", () => {
        sockets.delete(socket)
        receiverConnections.dec({ receiver: "forward" })
      })
      const fiber = run(handleConnection(ctx, socket).pipe(Effect.ensuring(Effect.sync(() => socket.destroy()))))
      socket.on("close", () => fiber.unsafeInterruptAsFork(fiber.id()))
    }
    const server = createServer(tlsFiles, Duration.toMillis(ctx.handshakeTimeout), onSocket)
    server.maxConnections = options.maxConnections ?? 1024
    // A failed TLS handshake is the client's problem: logged by nobody, it only closes that connection.
    server.on("tlsClientError", (_e, socket) => socket.destroy())

    const port = yield* Effect.acquireRelease(listen(server, options.port, host), () =>
      Effect.async<void>((resume) => {
        draining = true
        server.close(() => resume(Effect.void))
        // Connections between messages go now; one waiting for Kafka finishes its message (bounded below).
        for (const s of sockets) if (!ctx.busy.has(s)) s.destroy()
      }).pipe(
        Effect.timeoutTo({
          duration: shutdownMs,
          onTimeout: () => {
            for (const s of sockets) s.destroy()
          },
          onSuccess: () => undefined,
        }),
      ),
    )
    yield* Effect.logInfo("Fluent Forward receiver listening").pipe(
      Effect.annotateLogs({ host, port, tls: tlsFiles ? "on" : "off", auth: sharedKey === undefined ? "off" : "on" }),
    )
    return { port }
  })
