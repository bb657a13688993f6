/**
 * Imported first by the ingester and the router (src/programs): hands the heap settings in the environment to V8
 * before the rest of the bundle is evaluated (what and why: HeapFlags.ts). Imports nothing but node:v8.
 */
import { setFlagsFromString } from "node:v8"
import { heapFlags, heapSettingsOf } from "./HeapFlags.js"

const read = heapSettingsOf(process.env)
if ("settings" in read) for (const flag of heapFlags(read.settings)) setFlagsFromString(flag)
