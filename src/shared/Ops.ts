/**
 * The operations port: `/healthz` (alive), `/readyz` (every registered check passes) and
 * `/metrics` (every metric of src/shared/Metrics.ts, in the Prometheus text format, rendered by prom-client).
 *
 * Served by node:http directly: three GET routes do not need an HTTP framework, and leaving @effect/platform's
 * server out keeps its client stack (undici, ws) out of every program's bundle (start-up time and memory).
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import { Effect, Layer, Runtime } from "effect"
import { Health } from "./Health.js"
import { metricsContentType, renderMetrics } from "./Metrics.js"

export interface OpsOptions {
  readonly host: string
  /** 0 disables the operations port. */
  readonly port: number
}

const send = (res: ServerResponse, status: number, contentType: string, body: string) => {
  res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(body) })
  res.end(body)
}

/** The answer to one request (the paths are fixed; nothing of the request is echoed). */
const route = (health: Health, path: string): Effect.Effect<readonly [number, string, string]> => {
  switch (path) {
    case "/healthz":
      return Effect.succeed([200, "text/plain; charset=utf-8", "ok\n"] as const)
    case "/readyz":
      return Effect.map(health.check, (checks) => {
        // Nothing registered yet means still starting (the router binds this port before Kafka is reached).
        const ready = checks.length > 0 && checks.every((r) => r.ok)
        return [ready ? 200 : 503, "application/json", JSON.stringify({ ready, checks })] as const
      })
    case "/metrics":
      return Effect.map(renderMetrics, (text) => [200, metricsContentType, text] as const)
    default:
      return Effect.succeed([404, "text/plain; charset=utf-8", "not found\n"] as const)
  }
}

/** The operations HTTP server; needs Health. With port 0 it serves nothing. */
export const OpsServerLive = (options: OpsOptions): Layer.Layer<never, never, Health> => {
  if (options.port === 0) return Layer.empty
  return Layer.scopedDiscard(
    Effect.gen(function* () {
      const health = yield* Health
      const runPromise = Runtime.runPromise(yield* Effect.runtime<never>())
      const handle = (req: IncomingMessage, res: ServerResponse) => {
        const path = (req.url ?? "/").split("?")[0] ?? "/"
        if (req.method !== "GET" && req.method !== "HEAD")
          return send(res, 405, "text/plain; charset=utf-8", "GET only\n")
        runPromise(route(health, path)).then(
          ([status, type, body]) => send(res, status, type, body),
          () => send(res, 500, "text/plain; charset=utf-8", "error\n"),
        )
      }
      const server = createServer(handle)
      server.requestTimeout = 10_000
      server.headersTimeout = 5_000
      yield* Effect.acquireRelease(
        Effect.async<void, Error>((resume) => {
          server.once("error", (e) => resume(Effect.fail(e)))
          server.listen(options.port, options.host, () => resume(Effect.void))
        }),
        () =>
          Effect.async<void>((resume) => {
            server.close(() => resume(Effect.void))
            server.closeAllConnections()
          }),
      ).pipe(
        Effect.mapError(
          (e) => new Error(`the operations port cannot listen on ${options.host}:${options.port}: ${e.message}`),
        ),
      )
      yield* Effect.logInfo("operations port listening").pipe(
        Effect.annotateLogs({ host: options.host, port: options.port }),
      )
    }),
  ).pipe(Layer.orDie)
}
