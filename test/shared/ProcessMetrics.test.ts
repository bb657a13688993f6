/**
 * The process's own metrics (src/shared/Metrics.ts `registerProcessMetrics`): read when `/metrics` is rendered, under
 * the program's prefix, and true: the peak is the kernel's VmHWM, RSS is at most the peak, CPU seconds only grow.
 */
import { readFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { registerProcessMetrics, renderMetrics } from "../../src/shared/Metrics.js"

registerProcessMetrics("router")

const sampleOf = (text: string, name: string): number => {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `))
  if (line === undefined) throw new Error(`${name} is not in /metrics`)
  return Number(line.slice(name.length + 1))
}

/** VmHWM from /proc/self/status, in bytes. */
const vmHwm = (): number => Number(/^VmHWM:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"))![1]) * 1024

describe("process metrics", () => {
  it.effect("are rendered under the program's prefix with the process's own figures", () =>
    Effect.gen(function* () {
      const text = yield* renderMetrics
      for (const [name, type] of [
        ["spillway_router_resident_memory_bytes", "gauge"],
        ["spillway_router_resident_memory_peak_bytes", "gauge"],
        ["spillway_router_heap_used_bytes", "gauge"],
        ["spillway_router_heap_total_bytes", "gauge"],
        ["spillway_router_external_memory_bytes", "gauge"],
        ["spillway_router_cpu_seconds_total", "counter"],
      ])
        expect(text).toContain(`# TYPE ${name} ${type}\n`)
      const rss = sampleOf(text, "spillway_router_resident_memory_bytes")
      const peak = sampleOf(text, "spillway_router_resident_memory_peak_bytes")
      expect(rss).toBeGreaterThan(10 * 1024 * 1024)
      expect(peak).toBeGreaterThanOrEqual(rss)
      // The peak is the kernel's high-water mark (read just after; it can only have grown, by little).
      const hwm = vmHwm()
      expect(peak).toBeLessThanOrEqual(hwm)
      expect(peak).toBeGreaterThan(hwm * 0.9)
      const used = sampleOf(text, "spillway_router_heap_used_bytes")
      expect(used).toBeGreaterThan(0)
      expect(sampleOf(text, "spillway_router_heap_total_bytes")).toBeGreaterThanOrEqual(used)
      expect(sampleOf(text, "spillway_router_external_memory_bytes")).toBeGreaterThan(0)
    }),
  )

  it.effect("counts CPU seconds as the process spends them", () =>
    Effect.gen(function* () {
      const before = sampleOf(yield* renderMetrics, "spillway_router_cpu_seconds_total")
      const own = process.cpuUsage()
      // Spend about 50 ms of CPU.
      const until = Date.now() + 50
      let x = 0
      while (Date.now() < until) x += Math.sqrt(x + 1)
      expect(x).toBeGreaterThan(0)
      const after = sampleOf(yield* renderMetrics, "spillway_router_cpu_seconds_total")
      const spent = process.cpuUsage(own)
      expect(after).toBeGreaterThan(before)
      expect(after - before).toBeGreaterThanOrEqual((spent.user + spent.system) / 1e6 - 0.005)
    }),
  )
})
