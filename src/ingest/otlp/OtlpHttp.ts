/**
 * OTLP/HTTP: `POST /v1/logs` with an `application/x-protobuf` or `application/json` body (optionally
 * `Content-Encoding: gzip`), on its own port, over TLS when certificate files are given. The body is read up to
 * `maxRequestBytes` (more: 413, also after gzip), then decoded; the answer (200 with an ExportLogsServiceResponse,
 * in the request's encoding) is sent once Kafka acknowledged every record. 503 with `Retry-After` when Kafka or the
 * in-flight budget cannot take the records now (OTLP exporters retry it); 400, 401, 403, 404, 405, 413, 415
 * otherwise, each with a `google.rpc.Status` body.
 */
import * as http from "node:http"
import * as https from "node:https"
import type * as net from "node:net"
import * as zlib from "node:zlib"
import { Cause, Effect, Either, Exit, FiberSet } from "effect"
import { receiverConnections } from "../receivers/TenantRecords.js"
import {
  decodeJson,
  decodeProtobuf,
  type ExportResult,
  encodeResponse,
  encodeStatus,
  responseJson,
} from "./OtlpCodec.js"
import type { ExportError, Exporter } from "./OtlpExport.js"

export interface HttpOptions {
  readonly host: string
  readonly port: number
  readonly tls: { readonly cert: Buffer; readonly key: Buffer; readonly ca: Buffer | undefined } | undefined
  readonly maxRequestBytes: number
  readonly maxConnections: number
  readonly idleTimeoutMs: number
  /** The whole request must arrive within this (slow senders are cut). */
  readonly requestTimeoutMs: number
  readonly retryAfterSeconds: number
  readonly shutdownTimeoutMs: number
}

type Encoding = "protobuf" | "json"

const encodingOf = (contentType: string | undefined): Encoding | undefined => {
  const base = (contentType ?? "").split(";")[0]!.trim().toLowerCase()
  return base === "application/x-protobuf" || base === "application/protobuf"
    ? "protobuf"
    : base === "application/json"
      ? "json"
      : undefined
}

const statusOf = (e: ExportError): { status: number; message: string } => {
  switch (e._tag) {
    case "AuthError":
      return { status: 401, message: `unauthenticated: ${e.reason}` }
    case "TenantNotFound":
      return { status: 403, message: "the token's access key is not a known tenant" }
    case "InvalidEvent":
      return { status: 400, message: e.detail }
    case "Overloaded":
      return { status: 503, message: e.detail }
    case "SinkUnavailable":
      return { status: 503, message: "log records not stored, retry later" }
  }
}

const GRPC_CODE: Record<number, number> = { 400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 413: 8, 415: 3, 500: 13, 503: 14 }

class TooLarge {
  readonly _tag = "TooLarge"
}

/** Reads the body, at most `max` bytes (TooLarge beyond), gunzipping when asked (bounded the same). */
const readBody = (req: http.IncomingMessage, max: number) =>
  Effect.async<Buffer, TooLarge | Error>((resume) => {
    const declared = Number(req.headers["content-length"] ?? "0")
    if (Number.isFinite(declared) && declared > max) return resume(Effect.fail(new TooLarge()))
    const chunks: Array<Buffer> = []
    let size = 0
    let done = false
    const finish = (e: Effect.Effect<Buffer, TooLarge | Error>) => {
      if (done) return
      done = true
      req.off("data", onData)
      resume(e)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > max) {
        req.pause()
        finish(Effect.fail(new TooLarge()))
      } else chunks.push(chunk)
    }
    req.on("data", onData)
    req.on("end", () => finish(Effect.succeed(Buffer.concat(chunks, size))))
    req.on("error", () => finish(Effect.fail(new Error("request stream failed"))))
    req.on("close", () => finish(Effect.fail(new Error("request closed"))))
  }).pipe(
    Effect.flatMap((raw) => {
      const ce = String(req.headers["content-encoding"] ?? "identity").toLowerCase()
      if (ce === "identity" || ce === "") return Effect.succeed(raw)
      if (ce !== "gzip") return Effect.fail(new Error("unsupported content-encoding"))
      return Effect.try({
        try: () => zlib.gunzipSync(raw, { maxOutputLength: max }),
        catch: (e) => (e instanceof RangeError ? new TooLarge() : new Error("the gzip body is corrupt")),
      })
    }),
  )

type Outcome = Either.Either<ExportResult, { readonly status: number; readonly message: string }>

/** Reads, decodes and exports one request; the outcome is the answer to give. */
const exportRequest = (exporter: Exporter, req: http.IncomingMessage, enc: Encoding, maxBytes: number) =>
  readBody(req, maxBytes).pipe(
    Effect.either,
    Effect.flatMap((read): Effect.Effect<Outcome> => {
      if (Either.isLeft(read))
        return Effect.succeed(
          Either.left(
            read.left instanceof TooLarge
              ? { status: 413, message: `the request body exceeds ${maxBytes} bytes` }
              : { status: 400, message: read.left.message },
          ),
        )
      const bytes = read.right
      const decode = () => (enc === "json" ? decodeJson(bytes) : decodeProtobuf(bytes))
      return exporter("otlp_http", req.headers.authorization, decode, bytes.length).pipe(
        Effect.map((r) => Either.right(r)),
        Effect.catchAll((e) => Effect.succeed(Either.left(statusOf(e)))),
      )
    }),
  )

/** An error answer: a google.rpc.Status in the request's encoding. */
const replyError = (
  res: http.ServerResponse,
  enc: Encoding,
  status: number,
  message: string,
  retryAfterSeconds: number,
  draining: boolean,
) => {
  if (res.headersSent || res.destroyed) return
  const headers: http.OutgoingHttpHeaders = draining || status === 413 ? { connection: "close" } : {}
  if (status === 503) headers["retry-after"] = String(retryAfterSeconds)
  const code = GRPC_CODE[status] ?? 2
  if (enc === "json")
    res.writeHead(status, { ...headers, "content-type": "application/json" }).end(JSON.stringify({ code, message }))
  else
    res
      .writeHead(status, { ...headers, "content-type": "application/x-protobuf" })
      .end(Buffer.from(encodeStatus(code, message)))
}

const replyOk = (res: http.ServerResponse, enc: Encoding, r: ExportResult, draining: boolean) => {
  if (res.destroyed) return
  const headers: http.OutgoingHttpHeaders = draining ? { connection: "close" } : {}
  if (enc === "json") res.writeHead(200, { ...headers, "content-type": "application/json" }).end(responseJson(r))
  else res.writeHead(200, { ...headers, "content-type": "application/x-protobuf" }).end(Buffer.from(encodeResponse(r)))
}

const listen = (server: http.Server, port: number, host: string) =>
  Effect.async<number, Error>((resume) => {
    const onError = (e: Error) => resume(Effect.fail(e))
    server.once("error", onError)
    server.listen(port, host, () => {
      server.off("error", onError)
      const addr = server.address()
      resume(Effect.succeed(typeof addr === "object" && addr !== null ? addr.port : port))
    })
  })

export const serveHttp = (exporter: Exporter, options: HttpOptions) =>
  Effect.gen(function* () {
    const run = yield* FiberSet.makeRuntime<never>()
    let draining = false
    const fail = (res: http.ServerResponse, enc: Encoding, status: number, message: string) =>
      replyError(res, enc, status, message, options.retryAfterSeconds, draining)

    const handle = (req: http.IncomingMessage, res: http.ServerResponse) => {
      const url = (req.url ?? "").split("?")[0]
      const enc = encodingOf(req.headers["content-type"])
      if (url !== "/v1/logs") return fail(res, enc ?? "json", 404, "not found: OTLP logs are POSTed to /v1/logs")
      if (req.method !== "POST") return fail(res, enc ?? "json", 405, "method not allowed: use POST")
      if (enc === undefined)
        return fail(res, "json", 415, "unsupported content-type: use application/x-protobuf or application/json")
      const fiber = run(exportRequest(exporter, req, enc, options.maxRequestBytes))
      res.on("close", () => {
        if (!res.writableFinished) fiber.unsafeInterruptAsFork(fiber.id())
      })
      fiber.addObserver(
        Exit.match({
          onSuccess: Either.match({
            onLeft: (s) => fail(res, enc, s.status, s.message),
            onRight: (r) => replyOk(res, enc, r, draining),
          }),
          onFailure: (cause) =>
            Cause.isInterruptedOnly(cause)
              ? fail(res, enc, 503, "shutting down")
              : fail(res, enc, 500, "internal error"),
        }),
      )
    }

    const server: http.Server = options.tls
      ? https.createServer(
          {
            cert: options.tls.cert,
            key: options.tls.key,
            ...(options.tls.ca ? { ca: options.tls.ca, requestCert: true, rejectUnauthorized: true } : {}),
          },
          handle,
        )
      : http.createServer(handle)
    server.maxConnections = options.maxConnections
    server.keepAliveTimeout = options.idleTimeoutMs
    server.headersTimeout = Math.min(options.requestTimeoutMs, 60_000)
    server.requestTimeout = options.requestTimeoutMs
    server.maxHeadersCount = 100
    server.timeout = options.idleTimeoutMs
    const sockets = new Set<net.Socket>()
    server.on("connection", (socket: net.Socket) => {
      sockets.add(socket)
      receiverConnections.inc({ receiver: "otlp_http" })
      socket.on("close", () => {
        sockets.delete(socket)
        receiverConnections.dec({ receiver: "otlp_http" })
      })
    })

    return yield* Effect.acquireRelease(listen(server, options.port, options.host), () =>
      Effect.async<void>((resume) => {
        draining = true
        server.close(() => resume(Effect.void))
        server.closeIdleConnections()
      }).pipe(
        Effect.timeoutTo({
          duration: options.shutdownTimeoutMs,
          onTimeout: () => {
            for (const s of sockets) s.destroy()
          },
          onSuccess: () => undefined,
        }),
      ),
    )
  })
