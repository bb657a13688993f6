/**
 * The operations port: `/healthz` (alive), `/readyz` (every registered check passes) and
 * `/metrics` (every metric of src/shared/Metrics.ts, in the Prometheus text format, rendered by prom-client).
 */
import { createServer } from "node:http"
import { HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { Health } from "./Health.js"
import { metricsContentType, renderMetrics } from "./Metrics.js"

export interface OpsOptions {
  readonly host: string
  /** 0 disables the operations port. */
  readonly port: number
}

/** The operations HTTP server; needs Health. With port 0 it serves nothing. */
export const OpsServerLive = (options: OpsOptions): Layer.Layer<never, never, Health> => {
  if (options.port === 0) return Layer.empty
  const app = HttpRouter.empty.pipe(
    HttpRouter.get("/healthz", HttpServerResponse.text("ok\n")),
    HttpRouter.get(
      "/readyz",
      Effect.gen(function* () {
        const results = yield* (yield* Health).check
        // Nothing registered yet means still starting (the router binds this port before Kafka is reached).
        const ready = results.length > 0 && results.every((r) => r.ok)
        return yield* HttpServerResponse.json({ ready, checks: results }, { status: ready ? 200 : 503 })
      }),
    ),
    HttpRouter.get(
      "/metrics",
      Effect.map(renderMetrics, (text) => HttpServerResponse.text(text, { contentType: metricsContentType })),
    ),
  )
  return HttpServer.serve(app).pipe(
    Layer.provide(NodeHttpServer.layer(createServer, { host: options.host, port: options.port })),
    Layer.tap(() =>
      Effect.logInfo("operations port listening").pipe(Effect.annotateLogs({ host: options.host, port: options.port })),
    ),
    Layer.orDie,
  )
}
