/**
 * The operations port: `/healthz` (alive), `/readyz` (every registered check passes) and
 * `/metrics` (every Effect metric, in the Prometheus text format).
 */
import { createServer } from "node:http"
import { HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer, Metric, MetricState } from "effect"
import type { MetricPair } from "effect/MetricPair"
import { Health } from "./Health.js"
import { metricsContentType, renderMetrics } from "./Metrics.js"

const escapeLabel = (v: string) => v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"')
const sanitizeName = (n: string) => n.replace(/[^a-zA-Z0-9_:]/g, "_")
const labels = (tags: ReadonlyArray<{ key: string; value: string }>, extra?: readonly [string, string]) => {
  const all = tags.map((t) => [t.key, t.value] as const).concat(extra ? [extra] : [])
  return all.length === 0 ? "" : `{${all.map(([k, v]) => `${sanitizeName(k)}="${escapeLabel(v)}"`).join(",")}}`
}
const num = (n: number) => (n === Number.POSITIVE_INFINITY ? "+Inf" : Number.isNaN(n) ? "NaN" : String(n))

/** Pure: the Prometheus text exposition of a metrics snapshot. */
export const renderPrometheus = (pairs: ReadonlyArray<MetricPair.Untyped>): string => {
  const byName = new Map<string, Array<string>>()
  const types = new Map<string, string>()
  const helps = new Map<string, string>()
  const add = (name: string, type: string, help: string | undefined, line: string) => {
    if (!byName.has(name)) byName.set(name, [])
    byName.get(name)!.push(line)
    types.set(name, type)
    if (help) helps.set(name, help)
  }
  for (const { metricKey, metricState } of pairs) {
    const name = sanitizeName(metricKey.name)
    const help = metricKey.description._tag === "Some" ? metricKey.description.value : undefined
    const tags = metricKey.tags
    if (MetricState.isCounterState(metricState)) {
      add(name, "counter", help, `${name}${labels(tags)} ${num(Number(metricState.count))}`)
    } else if (MetricState.isGaugeState(metricState)) {
      add(name, "gauge", help, `${name}${labels(tags)} ${num(Number(metricState.value))}`)
    } else if (MetricState.isHistogramState(metricState)) {
      let sawInf = false
      for (const [le, count] of metricState.buckets) {
        if (le === Number.POSITIVE_INFINITY) sawInf = true
        add(name, "histogram", help, `${name}_bucket${labels(tags, ["le", num(le)])} ${count}`)
      }
      if (!sawInf) add(name, "histogram", help, `${name}_bucket${labels(tags, ["le", "+Inf"])} ${metricState.count}`)
      add(name, "histogram", help, `${name}_sum${labels(tags)} ${num(metricState.sum)}`)
      add(name, "histogram", help, `${name}_count${labels(tags)} ${metricState.count}`)
    } else if (MetricState.isFrequencyState(metricState)) {
      for (const [key, count] of metricState.occurrences) {
        add(name, "counter", help, `${name}${labels(tags, ["key", key])} ${count}`)
      }
    } else if (MetricState.isSummaryState(metricState)) {
      for (const [q, value] of metricState.quantiles) {
        if (value._tag === "Some")
          add(name, "summary", help, `${name}${labels(tags, ["quantile", String(q)])} ${num(value.value)}`)
      }
      add(name, "summary", help, `${name}_sum${labels(tags)} ${num(metricState.sum)}`)
      add(name, "summary", help, `${name}_count${labels(tags)} ${metricState.count}`)
    }
  }
  const out: Array<string> = []
  for (const [name, lines] of [...byName.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    const help = helps.get(name)
    if (help) out.push(`# HELP ${name} ${help.replaceAll("\n", " ")}`)
    out.push(`# TYPE ${name} ${types.get(name)}`)
    out.push(...lines)
  }
  return `${out.join("\n")}\n`
}

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
        const ready = results.every((r) => r.ok)
        return yield* HttpServerResponse.json({ ready, checks: results }, { status: ready ? 200 : 503 })
      }),
    ),
    HttpRouter.get(
      "/metrics",
      Effect.zipWith(renderMetrics, Metric.snapshot, (text, pairs) =>
        // Effect metrics not yet moved to prom-client (Metrics.ts) are rendered after it.
        HttpServerResponse.text(pairs.length === 0 ? text : `${text}${renderPrometheus(pairs)}`, {
          contentType: metricsContentType,
        }),
      ),
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
