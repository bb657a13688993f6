/**
 * Imported first by the ingester, the router and the agent (src/programs): hands the heap settings in the environment to V8
 * before the rest of the bundle is evaluated (what and why: HeapFlags.ts). It imports only node:v8 and HeapFlags.ts,
 * which imports nothing, so the bundle gives the two a chunk of their own that runs first; the last test of
 * test/shared/HeapFlags.test.ts checks that on the built programs.
 */
import { basename } from "node:path"
import { setFlagsFromString } from "node:v8"
import { heapDefaultsFor, heapFlags, heapSettingsOf } from "./HeapFlags.js"

const read = heapSettingsOf(process.env, heapDefaultsFor(basename(process.argv[1] ?? "", ".js")))
if ("settings" in read) for (const flag of heapFlags(read.settings)) setFlagsFromString(flag)
