/**
 * Imported first by every file of the built programs (scripts/bundle.mjs): hands the heap settings in the
 * environment to V8 (what and why: HeapFlags.ts). The young generation's growth is set at once, before the rest of
 * the bundle is evaluated; the old generation's bound once the bundle has been evaluated (`setImmediate`): set at
 * once, it made V8 collect the old generation again and again while the code loads, 0.08 CPU-seconds and 100–200 ms
 * more to ready (docs/benchmarks.md, "Round 2 session 5"). The last test of test/shared/HeapFlags.test.ts checks on
 * the built programs that the settings act.
 */
import { basename } from "node:path"
import { setFlagsFromString } from "node:v8"
import { heapDefaultsFor, heapFlags, heapSettingsOf } from "./HeapFlags.js"

const read = heapSettingsOf(process.env, heapDefaultsFor(basename(process.argv[1] ?? "", ".js")))
if ("settings" in read) {
  const { youngGrowth, oldGrowthPercent } = read.settings
  for (const flag of heapFlags({ youngGrowth, oldGrowthPercent: 0 })) setFlagsFromString(flag)
  const later = heapFlags({ youngGrowth: 0, oldGrowthPercent })
  if (later.length > 0)
    setImmediate(() => {
      for (const flag of later) setFlagsFromString(flag)
    })
}
