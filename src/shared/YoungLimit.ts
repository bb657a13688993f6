/**
 * Keeps the young generation within `SPILLWAY_V8_YOUNG_LIMIT_MIB` (HeapFlags.ts): after each collection V8 reports
 * (a `gc` PerformanceObserver), the size of a semi-space decides the growth factor V8 uses at its next resize
 * (`youngGrowthAt`), set only when it changes. The size is the new space's used and available bytes, not its
 * committed size, which counts one semi-space while V8 has the other uncommitted (at start, and after collections
 * that reduce memory). V8 grows a semi-space at a collection once more than its size survived since the last
 * growth, so a check per collection sees each step. Node hands the observer its entries at the check phase of the
 * event loop: steps taken before then are seen then. The bundle's load is one synchronous run, so the factor is 1
 * during it (HeapAtLoad.ts). The observer holds one callback and no entries; it does not keep the process alive.
 */
import { PerformanceObserver } from "node:perf_hooks"
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8"
import { type HeapSettings, youngGrowthAt } from "./HeapFlags.js"

const semiSpaceBytes = (): number => {
  for (const s of getHeapSpaceStatistics())
    if (s.space_name === "new_space") return s.space_used_size + s.space_available_size
  return 0
}

/** Starts keeping the limit; the growth factor in force now is 1 (HeapAtLoad.ts sets it so before the load). */
export const limitYoungGeneration = (settings: HeapSettings): PerformanceObserver => {
  let factor = 1
  const check = () => {
    const want = youngGrowthAt(semiSpaceBytes(), settings)
    if (want === factor) return
    setFlagsFromString(`--semi-space-growth-factor=${want}`)
    factor = want
  }
  const observer = new PerformanceObserver(check)
  observer.observe({ type: "gc" })
  check()
  return observer
}
