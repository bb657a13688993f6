/**
 * Metrics for all three programs, through prom-client (the Prometheus text format is its job, not ours).
 * One registry per process; `/metrics` on the operations port renders it (Ops.ts).
 *
 * One vocabulary: every name starts with `spillway_<program>_` (`spillway_ingester_`, `spillway_router_`,
 * `spillway_agent_`), units are in the name (`_seconds`, `_bytes`), counters end in `_total`. Label values
 * come from closed lists or the tenants file, never from a received value, a file name or a secret.
 * Each metric is listed in the README.
 */
import { Effect } from "effect"
import { Counter, Gauge, Histogram, Registry } from "prom-client"

export const registry = new Registry()

const NAME = /^spillway_(ingester|router|agent)_[a-z0-9_]+$/
const checkName = (name: string, kind: "counter" | "gauge" | "histogram"): string => {
  if (!NAME.test(name)) throw new Error(`metric ${name}: must match ${NAME}`)
  if ((kind === "counter") !== name.endsWith("_total")) throw new Error(`metric ${name}: only counters end in _total`)
  return name
}

export const counter = <L extends string = never>(name: string, help: string, labelNames: ReadonlyArray<L> = []) =>
  new Counter<L>({ name: checkName(name, "counter"), help, labelNames, registers: [registry] })

export const gauge = <L extends string = never>(name: string, help: string, labelNames: ReadonlyArray<L> = []) =>
  new Gauge<L>({ name: checkName(name, "gauge"), help, labelNames, registers: [registry] })

export const histogram = <L extends string = never>(
  name: string,
  help: string,
  buckets: ReadonlyArray<number>,
  labelNames: ReadonlyArray<L> = [],
) =>
  new Histogram<L>({
    name: checkName(name, "histogram"),
    help,
    buckets: [...buckets],
    labelNames,
    registers: [registry],
  })

/** Exponential histogram buckets: start, start·factor, … (count of them). */
export const exponentialBuckets = (start: number, factor: number, count: number): ReadonlyArray<number> =>
  Array.from({ length: count }, (_, i) => start * factor ** i)

type Labels<L extends string> = Partial<Record<L, string | number>>

/** Effects around the prom-client calls, for code inside Effect pipelines. */
export const inc = <L extends string>(c: Counter<L>, by = 1, labels?: Labels<L>): Effect.Effect<void> =>
  Effect.sync(() => (labels ? c.inc(labels, by) : c.inc(by)))
export const set = <L extends string>(g: Gauge<L>, value: number, labels?: Labels<L>): Effect.Effect<void> =>
  Effect.sync(() => (labels ? g.set(labels, value) : g.set(value)))
export const observe = <L extends string>(h: Histogram<L>, value: number, labels?: Labels<L>): Effect.Effect<void> =>
  Effect.sync(() => (labels ? h.observe(labels, value) : h.observe(value)))

/** The Prometheus text of every metric registered in this process. */
export const renderMetrics: Effect.Effect<string> = Effect.promise(() => registry.metrics())
export const metricsContentType = registry.contentType
