/**
 * The programs' heap settings (src/shared/HeapFlags.ts, HeapAtLoad.ts): the defaults, the range,
 * 0 leaving V8's own behaviour; in a child Node process, that the flags set after start do act on this Node's V8
 * (the young generation stays at its first size, the old generation is collected sooner), and so does the young
 * limit; and that the built ingester, router and agent apply them before their bundle is evaluated.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "@effect/vitest"
import {
  type HeapSettings,
  heapDefaultsFor,
  heapFlags,
  heapPlan,
  heapSettingsOf,
  youngGrowthAt,
} from "../../src/shared/HeapFlags.js"

/** Runs an allocation loop in a child Node that sets `flags` once it runs; its largest new and old space, MiB. */
const spacesUnder = (flags: ReadonlyArray<string>) => {
  const script = `
    const v8 = require("node:v8")
    for (const f of ${JSON.stringify(flags)}) v8.setFlagsFromString(f)
    const held = []
    let maxNew = 0, maxOld = 0
    for (let round = 0; round < 600; round++) {
      const batch = []
      for (let i = 0; i < 4000; i++) batch.push({ text: "event " + i + " of " + round, n: [i, round] })
      held.push(batch)
      if (held.length > 6) held.shift()
      for (const s of v8.getHeapSpaceStatistics()) {
        if (s.space_name === "new_space") maxNew = Math.max(maxNew, s.space_size)
        if (s.space_name === "old_space") maxOld = Math.max(maxOld, s.space_size)
      }
    }
    process.stdout.write(JSON.stringify({ newMiB: maxNew / 2 ** 20, oldMiB: maxOld / 2 ** 20 }))`
  const run = spawnSync(process.execPath, ["-e", script], { encoding: "utf8", timeout: 60_000 })
  expect(run.status).toBe(0)
  return JSON.parse(run.stdout) as { newMiB: number; oldMiB: number }
}

const settingsOf = (env: Record<string, string>, defaults?: HeapSettings): HeapSettings => {
  const read = heapSettingsOf(env, defaults)
  if (!("settings" in read)) throw new Error(read.error)
  return read.settings
}

describe("HeapFlags", () => {
  it("defaults: the young generation as Node was started, old growth 100 %, no young limit, as V8 flags", () => {
    expect(settingsOf({})).toEqual({ youngGrowth: 0, oldGrowthPercent: 100, youngLimitMiB: 0 })
    expect(heapFlags(settingsOf({}))).toEqual(["--heap-growing-percent=100"])
    expect(heapFlags(settingsOf({ SPILLWAY_V8_YOUNG_GROWTH: "1" }))).toEqual([
      "--semi-space-growth-factor=1",
      "--heap-growing-percent=100",
    ])
  })

  it("per program: old growth 100 %; the ingester's and the agent's young generation limited to 4 MiB semi-spaces, the router's to 8", () => {
    expect(heapDefaultsFor("ingester")).toEqual({ youngGrowth: 0, oldGrowthPercent: 100, youngLimitMiB: 4 })
    expect(heapFlags(settingsOf({}, heapDefaultsFor("ingester")))).toEqual(["--heap-growing-percent=100"])
    expect(heapFlags(settingsOf({ SPILLWAY_V8_OLD_GROWTH_PERCENT: "0" }, heapDefaultsFor("ingester")))).toEqual([])
    expect(heapDefaultsFor("router")).toEqual({ youngGrowth: 0, oldGrowthPercent: 100, youngLimitMiB: 8 })
    expect(heapFlags(settingsOf({}, heapDefaultsFor("router")))).toEqual(["--heap-growing-percent=100"])
    expect(heapDefaultsFor("agent")).toEqual({ youngGrowth: 0, oldGrowthPercent: 100, youngLimitMiB: 4 })
    expect(heapFlags(settingsOf({}, heapDefaultsFor("agent")))).toEqual(["--heap-growing-percent=100"])
    // 1 keeps the agent's young generation at its first size (its default before), for an operator who prefers the
    // memory.
    expect(heapFlags(settingsOf({ SPILLWAY_V8_YOUNG_GROWTH: "1" }, heapDefaultsFor("agent")))).toEqual([
      "--semi-space-growth-factor=1",
      "--heap-growing-percent=100",
    ])
  })

  it("0 leaves each flag as Node was started; other values are passed on", () => {
    expect(heapFlags(settingsOf({ SPILLWAY_V8_YOUNG_GROWTH: "0", SPILLWAY_V8_OLD_GROWTH_PERCENT: " 0 " }))).toEqual([])
    expect(heapFlags(settingsOf({ SPILLWAY_V8_YOUNG_GROWTH: "2", SPILLWAY_V8_OLD_GROWTH_PERCENT: "250" }))).toEqual([
      "--semi-space-growth-factor=2",
      "--heap-growing-percent=250",
    ])
  })

  it("a value out of range or not an integer is refused with the variable named (and nothing is set)", () => {
    expect(heapSettingsOf({ SPILLWAY_V8_YOUNG_GROWTH: "9" })).toEqual({
      error: "SPILLWAY_V8_YOUNG_GROWTH must be an integer 0 to 4",
    })
    expect(heapSettingsOf({ SPILLWAY_V8_YOUNG_GROWTH: "1.5" })).toEqual({
      error: "SPILLWAY_V8_YOUNG_GROWTH must be an integer 0 to 4",
    })
    expect(heapSettingsOf({ SPILLWAY_V8_OLD_GROWTH_PERCENT: "-1" })).toEqual({
      error: "SPILLWAY_V8_OLD_GROWTH_PERCENT must be an integer 0 to 400",
    })
    expect(heapSettingsOf({ SPILLWAY_V8_OLD_GROWTH_PERCENT: "lots" })).toEqual({
      error: "SPILLWAY_V8_OLD_GROWTH_PERCENT must be an integer 0 to 400",
    })
    expect(heapSettingsOf({ SPILLWAY_V8_YOUNG_LIMIT_MIB: "65" })).toEqual({
      error: "SPILLWAY_V8_YOUNG_LIMIT_MIB must be an integer 0 to 64",
    })
  })

  it("the young limit: no growth while the bundle loads, then a factor of 2 below the limit and 1 at it", () => {
    const limited = settingsOf({}, heapDefaultsFor("ingester"))
    expect(heapPlan(limited)).toEqual({
      atLoad: ["--semi-space-growth-factor=1"],
      afterLoad: ["--heap-growing-percent=100"],
      limitYoung: true,
    })
    const MiB = 1_048_576
    // a semi-space's used and available bytes are about 98 % of its size
    expect(youngGrowthAt(0.983 * 2 * MiB, limited)).toBe(2)
    expect(youngGrowthAt(0.983 * 4 * MiB, limited)).toBe(1)
    expect(youngGrowthAt(16 * MiB, limited)).toBe(1)
    // under a limit the factor is V8's 2 whatever SPILLWAY_V8_YOUNG_GROWTH (other than 1) says: 3 or 4 would jump
    // past it (1, 3, 9 MiB)
    expect(youngGrowthAt(MiB, settingsOf({ SPILLWAY_V8_YOUNG_GROWTH: "3" }, limited))).toBe(2)
    // growth 1 (no growth) or no limit: nothing to watch, the flags as without the limit
    expect(heapPlan(settingsOf({ SPILLWAY_V8_YOUNG_GROWTH: "1" }, limited))).toEqual({
      atLoad: ["--semi-space-growth-factor=1"],
      afterLoad: ["--heap-growing-percent=100"],
      limitYoung: false,
    })
    expect(heapPlan(settingsOf({ SPILLWAY_V8_YOUNG_LIMIT_MIB: "0", SPILLWAY_V8_YOUNG_GROWTH: "2" }, limited))).toEqual({
      atLoad: ["--semi-space-growth-factor=2"],
      afterLoad: ["--heap-growing-percent=100"],
      limitYoung: false,
    })
    expect(heapPlan(settingsOf({}))).toEqual({
      atLoad: [],
      afterLoad: ["--heap-growing-percent=100"],
      limitYoung: false,
    })
    // the router's: 8 MiB semi-spaces
    const router = settingsOf({}, heapDefaultsFor("router"))
    expect(heapPlan(router)).toEqual({
      atLoad: ["--semi-space-growth-factor=1"],
      afterLoad: ["--heap-growing-percent=100"],
      limitYoung: true,
    })
    expect(youngGrowthAt(0.983 * 4 * MiB, router)).toBe(2)
    expect(youngGrowthAt(0.983 * 8 * MiB, router)).toBe(1)
  })

  it("set after start, the flags keep this Node's young generation at its first size and the old one smaller", () => {
    const own = spacesUnder([])
    const youngOnly = spacesUnder(heapFlags({ youngGrowth: 1, oldGrowthPercent: 0, youngLimitMiB: 0 }))
    const tuned = spacesUnder(heapFlags({ youngGrowth: 1, oldGrowthPercent: 100, youngLimitMiB: 0 }))
    // Node starts with 1 MiB semi-spaces (2 MiB of new space) and grows them to 16 MiB under this load.
    expect(own.newMiB).toBeGreaterThan(8)
    expect(tuned.newMiB).toBeLessThanOrEqual(2)
    // The batches held now outlive the small young generation; V8's own factor lets their garbage pile up.
    expect(tuned.oldMiB, JSON.stringify({ tuned, youngOnly })).toBeLessThan(youngOnly.oldMiB * 0.9)
  })

  /** One turn of the event loop at a time (as the programs work), batches held a few turns; the largest semi-space. */
  const allocationTurns = `
    const semi = () => { const s = require("node:v8").getHeapSpaceStatistics().find((x) => x.space_name === "new_space"); return s.space_used_size + s.space_available_size }
    let maxSemi = 0, round = 0
    const held = []
    const turn = () => {
      const batch = []
      for (let i = 0; i < 4000; i++) batch.push({ text: "event " + i + " of " + round, n: [i, round] })
      held.push(batch)
      if (held.length > 6) held.shift()
      maxSemi = Math.max(maxSemi, semi())
      if (++round < 600) setImmediate(turn)
      else require("node:fs").writeSync(2, "SEMI " + maxSemi / 2 ** 20 + "\\n")
    }`
  const semiOf = (run: { status: number | null; stderr: string }) => {
    expect(run.status, run.stderr).toBe(0)
    const m = /SEMI ([\d.]+)/.exec(run.stderr)
    expect(m, run.stderr).not.toBeNull()
    return Number(m![1])
  }

  const youngLimit = join(__dirname, "..", "..", "dist", "shared", "YoungLimit.js")
  it.skipIf(!existsSync(youngLimit))(
    "the young limit keeps this Node's semi-spaces at it under a load that grows them to 16 MiB without it",
    { timeout: 60_000 },
    () => {
      const semiUnder = (limitMiB: number) => {
        const script = `
          ${allocationTurns}
          const settings = { youngGrowth: 0, oldGrowthPercent: 0, youngLimitMiB: ${limitMiB} }
          if (settings.youngLimitMiB > 0) {
            require("node:v8").setFlagsFromString("--semi-space-growth-factor=1")
            require(${JSON.stringify(youngLimit)}).limitYoungGeneration(settings)
          }
          turn()`
        return semiOf(spawnSync(process.execPath, ["-e", script], { encoding: "utf8", timeout: 30_000 }))
      }
      // Node's semi-spaces start at 1 MiB; V8 reports about 98 % of a semi-space's size as used and available.
      expect(semiUnder(0)).toBeGreaterThan(8)
      expect(semiUnder(2)).toBeLessThanOrEqual(2)
      const four = semiUnder(4)
      expect(four).toBeLessThanOrEqual(4)
      expect(four).toBeGreaterThan(2)
    },
  )

  const built = (name: string) => join(__dirname, "..", "..", "dist", "programs", `${name}.js`)
  const probeDirs: Array<string> = []
  afterAll(() => {
    for (const dir of probeDirs) rmSync(dir, { recursive: true, force: true })
  })
  /** `<name> --version` of the built program with `preload` (a file written here) required first. */
  const versionWith = (preload: string) => {
    const dir = mkdtempSync(join(tmpdir(), "spillway-heap-"))
    probeDirs.push(dir)
    const probe = join(dir, "probe.cjs")
    writeFileSync(probe, preload)
    return (name: string, env: Record<string, string>) =>
      spawnSync(process.execPath, ["--require", probe, built(name), "--version"], {
        encoding: "utf8",
        env: { PATH: process.env.PATH ?? "", ...env },
        timeout: 30_000,
      })
  }
  it.skipIf(!existsSync(built("router")))(
    "the built ingester, router and agent apply them before their code runs (SPILLWAY_V8_YOUNG_GROWTH=1 against 0 and the default)",
    { timeout: 60_000 },
    () => {
      // The new space once `--version` ran: loading the bundle grows it to 16 MiB unless the flag was set first
      // (the ingester's is 4 MiB: Node reads and compiles the whole module graph before the first module runs).
      const run = versionWith(
        `process.on("exit", () => { const s = require("node:v8").getHeapSpaceStatistics().find((x) => x.space_name === "new_space"); require("node:fs").writeSync(2, "NEW " + s.space_size + "\\n") })`,
      )
      const newSpaceAfter = (name: string, env: Record<string, string>) => {
        const m = /NEW (\d+)/.exec(run(name, env).stderr)
        expect(m).not.toBeNull()
        return Number(m![1]) / 2 ** 20
      }
      for (const name of ["ingester", "router", "agent"]) {
        expect(newSpaceAfter(name, { SPILLWAY_V8_YOUNG_GROWTH: "1" })).toBeLessThanOrEqual(4)
        const own = { SPILLWAY_V8_YOUNG_GROWTH: "0", SPILLWAY_V8_YOUNG_LIMIT_MIB: "0" }
        expect(newSpaceAfter(name, own)).toBeGreaterThan(4)
        // under a young limit nothing grows while the bundle loads
        expect(
          newSpaceAfter(name, { SPILLWAY_V8_YOUNG_GROWTH: "0", SPILLWAY_V8_YOUNG_LIMIT_MIB: "4" }),
        ).toBeLessThanOrEqual(4)
      }
      // The defaults (each program's young generation limited): nothing grows while they load.
      expect(newSpaceAfter("agent", {})).toBeLessThanOrEqual(4)
      expect(newSpaceAfter("ingester", {})).toBeLessThanOrEqual(4)
      expect(newSpaceAfter("router", {})).toBeLessThanOrEqual(4)
    },
  )
  it.skipIf(!existsSync(built("ingester")))(
    "the built ingester, agent and router keep their young limit once their code runs: 4, 4 and 8 MiB semi-spaces by default, 2 when told, 16 without",
    { timeout: 60_000 },
    () => {
      // The same load, started in the built program once its bundle ran (the code cache's outcome is set then).
      const run = versionWith(
        `${allocationTurns}
        const wait = () => (globalThis[Symbol.for("spillway.codeCache")] === undefined ? setImmediate(wait) : setImmediate(turn))
        wait()`,
      )
      const semiIn = (name: string, env: Record<string, string>) => semiOf(run(name, env))
      const ingester = semiIn("ingester", {})
      expect(ingester).toBeLessThanOrEqual(4)
      expect(ingester).toBeGreaterThan(2)
      const agent = semiIn("agent", {})
      expect(agent).toBeLessThanOrEqual(4)
      expect(agent).toBeGreaterThan(2)
      expect(semiIn("agent", { SPILLWAY_V8_YOUNG_GROWTH: "1" })).toBeLessThanOrEqual(2)
      const router = semiIn("router", {})
      expect(router).toBeLessThanOrEqual(8)
      expect(router).toBeGreaterThan(4)
      expect(semiIn("ingester", { SPILLWAY_V8_YOUNG_LIMIT_MIB: "2" })).toBeLessThanOrEqual(2)
      expect(semiIn("ingester", { SPILLWAY_V8_YOUNG_LIMIT_MIB: "0" })).toBeGreaterThan(8)
      expect(semiIn("router", { SPILLWAY_V8_YOUNG_LIMIT_MIB: "0" })).toBeGreaterThan(8)
    },
  )
})
