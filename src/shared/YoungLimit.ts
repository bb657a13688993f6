/**
 * Keeps the young generation within `SPILLWAY_V8_YOUNG_LIMIT_MIB` (HeapFlags.ts): after each collection V8 reports
 * (a `gc` PerformanceObserver), the new space's size decides the growth factor V8 uses at its next resize
 * (`youngGrowthAt`), set only when it changes. V8 grows a semi-space at a collection once more than its size
 * survived since the last growth, so one check per collection sees every step. Steps taken while one run of code
 * spans several collections are seen at its end: the bundle's load (the factor is 1 then, HeapAtLoad.ts) is one.
 * The observer holds one callback and no entries; it does not keep the process alive.
 */
import { PerformanceObserver } from "node:perf_hooks"
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8"
import { type HeapSettings, youngGrowthAt } from "./HeapFlags.js"

const newSpaceBytes = (): number => {
  for (const s of getHeapSpaceStatistics()) if (s.space_name === "new_space") return s.space_size
  return 0
}

/** Starts keeping the limit, from a factor of `current` (the one in force now). */
export const limitYoungGeneration = (settings: HeapSettings, current: number): PerformanceObserver => {
  let factor = current
  const check = () => {
    const want = youngGrowthAt(newSpaceBytes(), settings)
    if (want === factor) return
    setFlagsFromString(`--semi-space-growth-factor=${want}`)
    factor = want
  }
  const observer = new PerformanceObserver(check)
  observer.observe({ type: "gc" })
  check()
  return observer
}
