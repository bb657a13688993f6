/**
 * Imported first by every file of the built programs (scripts/bundle.mjs): hands the heap settings in the
 * environment to V8 (what and why: HeapFlags.ts). The young generation's growth is set at once, before the rest of
 * the bundle is evaluated; the old generation's bound once the bundle has been evaluated (`setImmediate`): set at
 * once, it made V8 collect the old generation again and again while the code loads, 0.08 CPU-seconds and 100–200 ms
 * more to ready (docs/benchmarks.md, "Round 2 session 5"). Under a young limit the young generation does not grow
 * while the bundle loads (one synchronous run, no collection can be watched during it); the limit is kept from then
 * on (YoungLimit.ts). The last tests of test/shared/HeapFlags.test.ts check on the built programs that the settings
 * act.
 */
import { basename } from "node:path"
import { setFlagsFromString } from "node:v8"
import { heapDefaultsFor, heapPlan, heapSettingsOf } from "./HeapFlags.js"
import { limitYoungGeneration } from "./YoungLimit.js"

const read = heapSettingsOf(process.env, heapDefaultsFor(basename(process.argv[1] ?? "", ".js")))
if ("settings" in read) {
  const settings = read.settings
  const plan = heapPlan(settings)
  for (const flag of plan.atLoad) setFlagsFromString(flag)
  if (plan.afterLoad.length > 0 || plan.limitYoung)
    setImmediate(() => {
      for (const flag of plan.afterLoad) setFlagsFromString(flag)
      if (plan.limitYoung) limitYoungGeneration(settings)
    })
}
