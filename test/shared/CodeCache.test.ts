/**
 * The programs' code cache (src/shared/CodeCache.ts, made by scripts/bundle.mjs): the cache file's header, the
 * setting, a bundle run from its cache, from a stale or refused one, and the built programs, each of which must
 * load from the cache the build made (under its own heap flags).
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { pathToFileURL } from "node:url"
import { describe, expect, it } from "@effect/vitest"
import { cachedDataFor, cacheHeader, cacheModeOf } from "../../src/shared/CodeCache.js"

describe("CodeCache", () => {
  it("reads the setting, and names the variable (not the value) when it is wrong", () => {
    expect(cacheModeOf(undefined)).toBe("use")
    expect(cacheModeOf("")).toBe("use")
    expect(cacheModeOf("off")).toBe("off")
    expect(cacheModeOf("write")).toBe("write")
    const bad = cacheModeOf("secret-ish")
    expect(bad).toBeInstanceOf(Error)
    expect((bad as Error).message).toContain("SPILLWAY_CODE_CACHE")
    expect((bad as Error).message).not.toContain("secret-ish")
  })

  it("takes a cache's data only for the source it was made from", () => {
    const source = "module.exports = 1 // ü"
    const data = Buffer.from([1, 2, 3])
    const file = Buffer.concat([cacheHeader(source), data])
    expect(cachedDataFor(file, source)).toEqual(data)
    // The same length, one character changed: V8 would not notice (it checks the length), the CRC does.
    expect(cachedDataFor(file, "module.exports = 2 // ü")).toBeUndefined()
    expect(cachedDataFor(file, `${source} `)).toBeUndefined()
    expect(cachedDataFor(file.subarray(0, 12), source)).toBeUndefined()
    expect(cachedDataFor(undefined, source)).toBeUndefined()
  })

  const built = (name: string) => join(__dirname, "..", "..", "dist", "programs", `${name}.js`)
  const codeCacheJs = join(__dirname, "..", "..", "dist", "shared", "CodeCache.js")

  // In child processes: V8 keeps each source it compiled in a cache of its own, which would hide the file's.
  it.skipIf(!existsSync(codeCacheJs))(
    "runs a bundle without a cache, writes one, runs from it, and runs a stale or refused one from source",
    () => {
      const dir = mkdtempSync(join(tmpdir(), "spillway-codecache-"))
      const bundle = join(dir, "t.bundle.cjs")
      const cache = join(dir, "t.bundle.cache")
      const runner = join(dir, "run.mjs")
      writeFileSync(
        runner,
        `import { runBundle } from ${JSON.stringify(pathToFileURL(codeCacheJs).href)}\n` +
          `runBundle(new URL(${JSON.stringify(pathToFileURL(bundle).href)}))\n` +
          'console.log(JSON.stringify([globalThis[Symbol.for("spillway.codeCache")], globalThis.ran]))\n',
      )
      const write = (n: number) =>
        writeFileSync(
          bundle,
          "(function (exports, require, module, __filename, __dirname) {\n" +
            `globalThis.ran = [${n}, typeof require, __filename === ${JSON.stringify(bundle)}]\n` +
            "const f = (x) => x * 2\nmodule.exports = f(21)\n})",
        )
      const spawn = (env: Record<string, string> = {}, flags: ReadonlyArray<string> = []) =>
        spawnSync(process.execPath, [...flags, runner], { encoding: "utf8", env: { PATH: "", ...env } })
      const run = (env: Record<string, string> = {}, flags: ReadonlyArray<string> = []) => {
        const r = spawn(env, flags)
        expect(r.status, r.stderr).toBe(0)
        return JSON.parse(r.stdout)
      }
      write(1)
      expect(run()).toEqual(["missing", [1, "function", true]])
      expect(run({ SPILLWAY_CODE_CACHE: "write" })).toEqual(["written", [1, "function", true]])
      expect(existsSync(cache)).toBe(true)
      expect(run()).toEqual(["used", [1, "function", true]])
      expect(run({ SPILLWAY_CODE_CACHE: "off" })).toEqual(["off", [1, "function", true]])
      // Edited after the build, to the same length: the old code must not run.
      write(2)
      expect(run()).toEqual(["stale", [2, "function", true]])
      // The header right, V8's data not (as from another Node): V8 refuses it, the source runs.
      writeFileSync(cache, Buffer.concat([cacheHeader(readFileSync(bundle, "utf8")), Buffer.alloc(64, 7)]))
      expect(run()).toEqual(["refused", [2, "function", true]])
      // Made under other V8 flags (as README says an operator would, for theirs): used under those, refused without.
      const flags = ["--max-old-space-size=256"]
      expect(run({ SPILLWAY_CODE_CACHE: "write" }, flags)).toEqual(["written", [2, "function", true]])
      expect(run({}, flags)).toEqual(["used", [2, "function", true]])
      expect(run()).toEqual(["refused", [2, "function", true]])
      // Where the cache cannot be written (here its temporary file's name is taken by a folder, which stops root
      // too), `write` names the file and fails.
      mkdirSync(`${cache}.tmp`)
      const r = spawn({ SPILLWAY_CODE_CACHE: "write" })
      expect(r.status).toBe(1)
      expect(r.stderr).toContain(`SPILLWAY_CODE_CACHE=write: cannot write ${cache}: EISDIR`)
    },
  )

  it.skipIf(!existsSync(built("router")))(
    "each built program loads from the cache the build made; off compiles; a wrong setting is refused by name",
    { timeout: 60_000 },
    () => {
      const probe = join(mkdtempSync(join(tmpdir(), "spillway-codecache-")), "probe.cjs")
      writeFileSync(
        probe,
        `process.on("exit", () => require("node:fs").writeSync(2, "CACHE " + globalThis[Symbol.for("spillway.codeCache")] + "\\n"))`,
      )
      const run = (name: string, env: Record<string, string>) =>
        spawnSync(process.execPath, ["--require", probe, built(name), "--version"], {
          encoding: "utf8",
          env: { PATH: process.env.PATH ?? "", ...env },
          timeout: 30_000,
        })
      for (const name of ["ingester", "router", "agent"]) {
        const used = run(name, {})
        expect(used.status, used.stderr).toBe(0)
        expect(used.stdout).toContain("0.1.0")
        expect(used.stderr).toContain("CACHE used")
        expect(run(name, { SPILLWAY_CODE_CACHE: "off" }).stderr).toContain("CACHE off")
      }
      // Other heap flags than at build time: V8 refuses the data, the program still runs.
      const other = run("agent", { SPILLWAY_V8_YOUNG_GROWTH: "0", SPILLWAY_V8_YOUNG_LIMIT_MIB: "0" })
      expect(other.status).toBe(0)
      expect(other.stderr).toContain("CACHE refused")
      // Each program loads under its young limit's factor (1): another limit keeps it, none changes it; so does the
      // agent's growth factor 1 (no limit to keep).
      expect(run("ingester", { SPILLWAY_V8_YOUNG_LIMIT_MIB: "8" }).stderr).toContain("CACHE used")
      expect(run("ingester", { SPILLWAY_V8_YOUNG_LIMIT_MIB: "0" }).stderr).toContain("CACHE refused")
      expect(run("agent", { SPILLWAY_V8_YOUNG_GROWTH: "1" }).stderr).toContain("CACHE used")
      const wrong = run("router", { SPILLWAY_CODE_CACHE: "yes" })
      expect(wrong.status).toBe(2)
      expect(wrong.stderr).toContain("SPILLWAY_CODE_CACHE must be off or write")
    },
  )
})
