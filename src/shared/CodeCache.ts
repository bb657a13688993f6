/**
 * Runs a program's bundle (dist/programs/<name>.bundle.cjs, made by scripts/bundle.mjs) from V8's code cache, so
 * that a start does not parse and compile the 2–4 MB of code again. Node 20 keeps no compile cache for ES modules
 * (`module.enableCompileCache` came in Node 22), so the bundle is one script: a function expression of the
 * parameters Node's CommonJS loader gives a module, compiled here with `vm.Script` and its `cachedData`, and called
 * as that loader would call it.
 *
 * The cache (`<name>.bundle.cache`, beside the bundle) is written by the build (`SPILLWAY_CODE_CACHE=write`, once
 * the bundle's top level has run, so it holds every function the load compiled), never by a program at run time:
 * dist may be read-only. It starts with the CRC-32 and length of the source it was made from; V8 itself refuses
 * data of another Node version or of other V8 flags (HeapAtLoad.ts sets the programs' load-time heap flags before,
 * as at build time; any V8 flag on Node's command line or in NODE_OPTIONS counts too). A cache that is missing,
 * stale or refused costs only the compile it would have saved. `SPILLWAY_CODE_CACHE=off` compiles without it;
 * `write`, under an operator's own flags, makes it again for them (README, Layout).
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname } from "node:path"
import { fileURLToPath } from "node:url"
import vm from "node:vm"
import { crc32 } from "node:zlib"

/** `SPWC`, then the source's CRC-32 and its length in UTF-16 units (both uint32, big-endian). */
const MAGIC = 0x53505743
const HEADER = 12

/** Pure: the header a cache of `source` starts with. */
export const cacheHeader = (source: string): Buffer => {
  const h = Buffer.alloc(HEADER)
  h.writeUInt32BE(MAGIC, 0)
  h.writeUInt32BE(crc32(source) >>> 0, 4)
  h.writeUInt32BE(source.length >>> 0, 8)
  return h
}

/** Pure: V8's data in `file` when it was made from `source`, else undefined. */
export const cachedDataFor = (file: Buffer | undefined, source: string): Buffer | undefined =>
  file !== undefined && file.length > HEADER && file.subarray(0, HEADER).equals(cacheHeader(source))
    ? file.subarray(HEADER)
    : undefined

export type CacheMode = "use" | "off" | "write"

/** Pure: the mode `SPILLWAY_CODE_CACHE` asks for (unset: use the cache); an error naming the variable otherwise. */
export const cacheModeOf = (value: string | undefined): CacheMode | Error =>
  value === undefined || value === ""
    ? "use"
    : value === "off" || value === "write"
      ? value
      : new Error("SPILLWAY_CODE_CACHE must be off or write (unset: the build's code cache is used)")

const readIfThere = (path: string): Buffer | undefined => {
  try {
    return readFileSync(path)
  } catch {
    return undefined
  }
}

/**
 * What the last `runBundle` did with the cache, kept under this global symbol (tests read it at exit):
 * `used`; `refused` by V8 (another Node or other V8 flags); `stale` or `missing` (no data for this source), `off`,
 * `written`.
 */
const outcomeKey = Symbol.for("spillway.codeCache")
export type CacheOutcome = "used" | "refused" | "stale" | "missing" | "off" | "written"

/** What this process's `runBundle` did with the cache; undefined when the program was not run from its bundle. */
export const cacheOutcome = (): CacheOutcome | undefined =>
  (globalThis as Record<symbol, unknown>)[outcomeKey] as CacheOutcome | undefined

const outcomeOf = (
  mode: CacheMode,
  file: Buffer | undefined,
  data: Buffer | undefined,
  refused: boolean | undefined,
): CacheOutcome => {
  if (mode !== "use") return mode === "off" ? "off" : "written"
  if (file === undefined) return "missing"
  if (data === undefined) return "stale"
  return refused === true ? "refused" : "used"
}

/** Compiles and runs the bundle at `url` (a file: URL), from its code cache when it has a valid one. */
export const runBundle = (url: URL): void => {
  const mode = cacheModeOf(process.env.SPILLWAY_CODE_CACHE)
  if (mode instanceof Error) {
    process.stderr.write(`${mode.message}\n`)
    process.exit(2)
  }
  const filename = fileURLToPath(url)
  const cacheFile = filename.replace(/\.cjs$/, ".cache")
  // The bundle is one function expression (scripts/bundle.mjs), compiled as it is: one copy of its source.
  const source = readFileSync(filename, "utf8")
  const file = mode === "use" ? readIfThere(cacheFile) : undefined
  const cachedData = cachedDataFor(file, source)
  const script = new vm.Script(source, {
    filename,
    ...(cachedData === undefined ? {} : { cachedData }),
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  })
  ;(globalThis as Record<symbol, unknown>)[outcomeKey] = outcomeOf(mode, file, cachedData, script.cachedDataRejected)
  const main = script.runInThisContext() as (...args: ReadonlyArray<unknown>) => void
  const module = { exports: {} }
  main(module.exports, createRequire(filename), module, filename, dirname(filename))
  if (mode === "write") {
    // After the top level ran: the data then holds the functions the load compiled, not only the outermost one.
    const data = script.createCachedData()
    try {
      writeFileSync(`${cacheFile}.tmp`, Buffer.concat([cacheHeader(source), data]))
      renameSync(`${cacheFile}.tmp`, cacheFile)
    } catch (e) {
      const code = e instanceof Error && "code" in e ? String(e.code) : "failed"
      process.stderr.write(`SPILLWAY_CODE_CACHE=write: cannot write ${cacheFile}: ${code}\n`)
      process.exit(1)
    }
  }
}
