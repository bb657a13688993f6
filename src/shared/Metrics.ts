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

/**
 * The process's own figures, read only when `/metrics` is rendered (nothing samples them in between, so they cost
 * nothing between scrapes), under the program's prefix:
 *
 * - `resident_memory_bytes`: RSS now; `resident_memory_peak_bytes`: the largest RSS since start (getrusage's
 *   `ru_maxrss`, the kernel's VmHWM on Linux: what the README's memory limits and the benchmark's peak RSS measure);
 * - `heap_used_bytes` and `heap_total_bytes`: V8's heap, used and committed; `external_memory_bytes`: memory V8
 *   holds outside its heap for JavaScript objects (Buffers and ArrayBuffers among it);
 * - `cpu_seconds_total`: user and system CPU time since start.
 */
export const registerProcessMetrics = (program: "ingester" | "router" | "agent"): void => {
  const p = `spillway_${program}_`
  const memoryGauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name: checkName(`${p}${name}`, "gauge"),
      help,
      registers: [registry],
      collect() {
        this.set(read())
      },
    })
  memoryGauge("resident_memory_bytes", "Resident set size of the process", () => process.memoryUsage.rss())
  memoryGauge(
    "resident_memory_peak_bytes",
    "Largest resident set size since the process started (getrusage ru_maxrss; VmHWM on Linux)",
    () => process.resourceUsage().maxRSS * 1024,
  )
  memoryGauge("heap_used_bytes", "V8 heap in use", () => process.memoryUsage().heapUsed)
  memoryGauge("heap_total_bytes", "V8 heap committed", () => process.memoryUsage().heapTotal)
  memoryGauge(
    "external_memory_bytes",
    "Memory held outside the V8 heap for JavaScript objects (Buffers, ArrayBuffers)",
    () => process.memoryUsage().external,
  )
  let counted = 0
  new Counter({
    name: checkName(`${p}cpu_seconds_total`, "counter"),
    help: "User and system CPU time of the process since it started",
    registers: [registry],
    collect() {
      const u = process.cpuUsage()
      const seconds = (u.user + u.system) / 1e6
      // cpuUsage never goes back; the guard keeps a counter from being given a negative step all the same.
      if (seconds > counted) {
        this.inc(seconds - counted)
        counted = seconds
      }
    },
  })
}

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
